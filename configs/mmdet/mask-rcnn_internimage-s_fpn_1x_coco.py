# Mask R-CNN + FPN with InternImage-S, 12 epochs (official
# mask_rcnn_internimage_s_fpn_1x_coco.py).
_base_ = './mask-rcnn_internimage-t_fpn_1x_coco.py'
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_s_1k_224.pth')
model = dict(
    backbone=dict(arch='s', layer_scale=1.0, drop_path_rate=0.3,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[80, 160, 320, 640]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=33, depths=[4, 4, 21, 4]))
