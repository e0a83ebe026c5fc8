# Cascade Mask R-CNN + FPN with InternImage-XL, 36 epochs with multi-scale
# training (official cascade_internimage_xl_fpn_3x_coco.py): batch 64 (4
# nodes), AdamW lr 2e-4, layer-wise lr decay 0.9, DCNv3 offsets at 0.01x lr,
# EMA of the weights (momentum 1e-4).
_base_ = [
    './cascade-mask-rcnn_internimage-xl_fpn_1x_coco.py',
    './_base_/ms-3x_instance.py',
]
train_dataloader = dict(dataset=dict(pipeline={{_base_.ms3x_train_pipeline}}))
train_cfg = dict(max_epochs={{_base_.ms3x_max_epochs}})
param_scheduler = {{_base_.ms3x_param_scheduler}}
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(num_layers=39, layer_decay_rate=0.9,
                       depths=[5, 5, 24, 5], offset_lr_scale=0.01))
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001,
         update_buffers=True, priority=49)
]
auto_scale_lr = dict(base_batch_size=64)
