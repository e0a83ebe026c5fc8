# UperNet + InternImage-L on ADE20K, 640x640 crops (official upernet_
# internimage_l_640_160k): backbone from the official ImageNet-22K model,
# AdamW lr 2e-5 with layer decay 0.94, gradient clipping at 0.1.
_base_ = [
    '_base_/models/upernet_internimage.py',
    '_base_/datasets/ade20k-640x640.py',
    '_base_/default_runtime.py',
    '_base_/schedules/schedule_160k_internimage.py',
]
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_l_22k_192to384.pth')

model = dict(
    data_preprocessor=dict(size=(640, 640)),
    backbone=dict(
        arch='l',
        layer_scale=1.0,  # official segmentation value (classifier: 1e-5)
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[160, 320, 640, 1280]),
    auxiliary_head=dict(in_channels=640),
)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999),
                   weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=37, layer_decay_rate=0.94,
                       depths=[5, 5, 22, 5], offset_lr_scale=1.0))

# The official table counted L and XL on one 640x2560 image (see README).
complexity_shape = (640, 2560)
