# DINO (4 scales) with InternImage-H, fine-tuned on COCO from Objects365
# (official dino_4scale_internimage_h_objects365_coco_ss.py): 20000
# iterations, large-scale jitter (short side 600..1800, long side <= 2000),
# test at 1000 x 2000, 1000 denoising queries, layer-wise lr decay 0.94,
# DCNv3 offsets at 1e-3 lr, batch 16 (16 GPUs x 1).
_base_ = './dino-4scale_internimage-t_layer-wise-lr_1x_coco.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternImage',
        arch='h',
        core_op='DCNv3',
        drop_path_rate=0.5,
        with_cp=True,
        out_indices=(1, 2, 3),
        init_cfg=None),
    neck=dict(in_channels=[640, 1280, 2560]),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=1000)),
    test_cfg=dict(max_per_img=300))
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(2000, 600), (2000, 1800)],
         keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(2000, 1000), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=1,
    dataset=dict(filter_cfg=dict(filter_empty_gt=True),
                 pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    paramwise_cfg=dict(num_layers=50, layer_decay_rate=0.94,
                       depths=[6, 6, 32, 6], offset_lr_scale=1e-3))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=20000,
                 val_interval=200)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
]
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=200, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=16)
