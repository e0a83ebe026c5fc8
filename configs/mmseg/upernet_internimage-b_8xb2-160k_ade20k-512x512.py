# UperNet + InternImage-B on ADE20K (official upernet_internimage_b_512_160k):
# the T recipe with the B backbone, drop path 0.4.
_base_ = './upernet_internimage-t_8xb2-160k_ade20k-512x512.py'
pretrained = ('https://github.com/OpenGVLab/InternImage/releases/download/'
              'cls_model/internimage_b_1k_224.pth')

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.4,
                  init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[112, 224, 448, 896]),
    auxiliary_head=dict(in_channels=448),
)
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=33, depths=[4, 4, 21, 4]))
