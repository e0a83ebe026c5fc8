# Mask R-CNN + FPN with InternImage-B, 12 epochs (official
# mask_rcnn_internimage_b_fpn_1x_coco.py).
_base_ = './mask-rcnn_internimage-t_fpn_1x_coco.py'
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_b_1k_224.pth')
model = dict(
    backbone=dict(arch='b', layer_scale=1.0, drop_path_rate=0.4,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[112, 224, 448, 896]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=33, depths=[4, 4, 21, 4]))
