# Cascade Mask R-CNN + FPN with InternImage-XL (ImageNet-22K pretrained), 12
# epochs (official cascade_internimage_xl_fpn_1x_coco.py).
_base_ = './cascade-mask-rcnn_internimage-l_fpn_1x_coco.py'
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_xl_22k_192to384.pth')
model = dict(
    backbone=dict(arch='xl', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=39, depths=[5, 5, 24, 5]))
