# DINO (4 scales) with InternImage-L (ImageNet-22K pretrained), 12 epochs,
# layer-wise lr decay 0.9 (official
# dino_4scale_internimage_l_1x_coco_layer_wise_lr.py).
_base_ = './dino-4scale_internimage-t_layer-wise-lr_1x_coco.py'
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_l_22k_192to384.pth')
model = dict(
    backbone=dict(arch='l', layer_scale=1.0, offset_scale=2.0,
                  drop_path_rate=0.4, with_cp=False,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[320, 640, 1280]),
    test_cfg=dict(max_per_img=300))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=37, depths=[5, 5, 22, 5]))
