# Mask R-CNN + FPN with InternImage-T, 12 epochs on COCO: the official
# detection/configs/coco/mask_rcnn_internimage_t_fpn_1x_coco.py on mmdet 3.
# AdamW lr 1e-4, wd 0.05, layer-wise lr decay 1.0 (i.e. none), batch 16
# (8 GPUs x 2), linear warmup 500 iterations, lr x0.1 at epochs 8 and 11.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# mmdet_plugin registers InternImage, CBInternImage and the layer-wise lr
# decay constructor into mmdet.
custom_imports = dict(imports=['mmdet_plugin'], allow_failed_imports=False)
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_t_1k_224.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternImage',
        arch='t',
        core_op='DCNv3',
        layer_scale=1.0,  # the detection configs add layer scale to T
        drop_path_rate=0.2,
        with_cp=False,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=30, layer_decay_rate=1.0,
                       depths=[4, 4, 18, 4]))
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto'))
