# InternImage-H: pre-trained on the 427M-image joint dataset and ImageNet-22K
# (official internimage_h_jointto22k_384.pth), fine-tuned on ImageNet-1K at
# 640x640 (official without_lr_decay/internimage_h_22kto1k_640.yaml); the
# recipe of the L config with the attention-pooling head, drop path 0.2 and
# 8 GPUs x 16 images x 4 accumulation steps = 512 images per step.
_base_ = './internimage-l_in21k-pre_8xb64_in1k-384px.py'

model = dict(
    backbone=dict(arch='h', drop_path_rate=0.2, out_indices=(2, 3)),
    head=dict(in_channels=2560, use_clip_projector=True),
    init_cfg=dict(checkpoint='pretrained/internimage-h_in21k-384px.pth'),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=640, backend='pillow',
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
    dict(type='ResizeEdge', scale=640, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=640),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(accumulative_counts=4)
# auto_scale_lr counts GPUs x batch_size, not the accumulation.
auto_scale_lr = dict(base_batch_size=128)
