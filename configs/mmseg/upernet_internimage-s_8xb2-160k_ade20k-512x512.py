# UperNet + InternImage-S on ADE20K (official upernet_internimage_s_512_160k):
# the T recipe with the S backbone (post-norm, layer scale), drop path 0.3.
_base_ = './upernet_internimage-t_8xb2-160k_ade20k-512x512.py'
pretrained = ('https://github.com/OpenGVLab/InternImage/releases/download/'
              'cls_model/internimage_s_1k_224.pth')

model = dict(
    backbone=dict(arch='s', drop_path_rate=0.3,
                  init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[80, 160, 320, 640]),
    auxiliary_head=dict(in_channels=320),
)
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=33, depths=[4, 4, 21, 4]))
