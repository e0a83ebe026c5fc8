# DINO (4 scales, mmdet 3's own DINO) with InternImage-T, 12 epochs: the
# official dino_4scale_internimage_t_1x_coco_layer_wise_lr.py. The backbone
# gives levels 1-3 to a ChannelMapper (4 outputs). AdamW lr 1e-4, wd 1e-4,
# layer-wise lr decay 0.9, gradient clipping 0.1, warmup 500 iterations, lr
# x0.1 at epoch 11, batch 16.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmdet_plugin'], allow_failed_imports=False)
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_t_1k_224.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternImage',
        arch='t',
        core_op='DCNv3',
        layer_scale=1.0,
        drop_path_rate=0.2,
        with_cp=True,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]),
    test_cfg=dict(max_per_img=100))
optim_wrapper = dict(
    constructor='CustomLayerDecayOptimizerConstructor',
    optimizer=dict(lr=0.0001, weight_decay=0.0001),
    paramwise_cfg=dict(_delete_=True, num_layers=30, layer_decay_rate=0.9,
                       depths=[4, 4, 18, 4]))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[11],
         gamma=0.1),
]
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto'))
