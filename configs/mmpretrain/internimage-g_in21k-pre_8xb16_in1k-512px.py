# InternImage-G: pre-trained on the joint dataset and ImageNet-22K (official
# internimage_g_jointto22k_384.pth), fine-tuned on ImageNet-1K at 512x512
# (official without_lr_decay/internimage_g_22kto1k_512.yaml); the recipe of
# the H config with drop path 0.4.
_base_ = './internimage-h_in21k-pre_8xb16_in1k-640px.py'

model = dict(
    backbone=dict(arch='g', drop_path_rate=0.4),
    head=dict(in_channels=4096),
    init_cfg=dict(checkpoint='pretrained/internimage-g_in21k-384px.pth'),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=512, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[104, 116, 124],  # the BGR mean
                      interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=512, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=512),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
