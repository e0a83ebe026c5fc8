# UperNet + InternImage-H on ADE20K, 896x896 crops (official upernet_
# internimage_h_896_160k): backbone from the official joint-pretrained
# model, 16 GPUs x 1 image, AdamW lr 2e-5 with layer decay 0.95, gradient
# clipping at 0.1, drop path 0.5.
_base_ = [
    '_base_/models/upernet_internimage.py',
    '_base_/datasets/ade20k-896x896.py',
    '_base_/default_runtime.py',
    '_base_/schedules/schedule_160k_internimage.py',
]
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_h_jointto22k_384.pth')

model = dict(
    data_preprocessor=dict(size=(896, 896)),
    backbone=dict(
        arch='h',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[320, 640, 1280, 2560]),
    auxiliary_head=dict(in_channels=1280),
)
train_dataloader = dict(batch_size=1)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999),
                   weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=50, layer_decay_rate=0.95,
                       depths=[6, 6, 32, 6], offset_lr_scale=1.0))

# The official table counted H on one 896x896 image (see README).
complexity_shape = (896, 896)
