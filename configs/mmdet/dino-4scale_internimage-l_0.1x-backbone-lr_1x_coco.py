# DINO (4 scales) with InternImage-L, 12 epochs, the whole backbone at 0.1x
# lr instead of layer-wise decay, wd 0.05 (official
# dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr.py).
_base_ = './dino-4scale_internimage-l_layer-wise-lr_1x_coco.py'
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
