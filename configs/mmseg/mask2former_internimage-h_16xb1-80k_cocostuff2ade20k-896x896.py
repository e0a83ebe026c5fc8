# Mask2Former + InternImage-H on ADE20K, 896x896 crops, 80k iterations,
# fine-tuned from the official COCO-Stuff-164k model (official mask2former_
# internimage_h_896_80k_cocostuff2ade20k_ss/_ms.py): AdamW lr 1e-5 with
# layer decay 0.95, gradient clipping at 0.1, 16 GPUs x 1 image.
#
# The official run starts from the COCO-Stuff model (its config has the
# line commented out). Convert it, then set `load_from` (its 171-class
# classifier is skipped with a warning):
#   python tools/convert_checkpoint.py \
#       mask2former_internimage_h_896_80k_cocostuff164k.pth m2f_h_cocostuff.pth
_base_ = [
    '_base_/models/mask2former_internimage.py',
    '_base_/datasets/ade20k-896x896.py',
    '_base_/default_runtime.py',
    '_base_/schedules/schedule_80k_internimage.py',
]
custom_imports = dict(imports=['mmseg_plugin', 'mmdet.models'],
                      allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=(896, 896)),
    backbone=dict(arch='h', drop_path_rate=0.5),
    decode_head=dict(in_channels=[320, 640, 1280, 2560]),
)
train_dataloader = dict(batch_size=1)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-5, betas=(0.9, 0.999),
                   weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=50, layer_decay_rate=0.95,
                       depths=[6, 6, 32, 6], offset_lr_scale=1.0))

# The official multi-scale test (the _ms config): 5 scales around 896, flip.
img_ratios = [768 / 896, 832 / 896, 1.0, 960 / 896, 1024 / 896]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(int(3584 * r), int(896 * r)),
              keep_ratio=True) for r in img_ratios],
        [dict(type='ResizeToMultiple', size_divisor=32)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=True)],
        [dict(type='CheckSegLabels', num_classes=150)],
        [dict(type='PackSegInputs')],
    ]),
]

# The official table counted it on one 896x896 image (see README).
complexity_shape = (896, 896)
