# InternImage-L pre-trained on ImageNet-22K (at 192, then 384), fine-tuned on
# ImageNet-1K at 384x384 with the paper's recipe: the official
# classification/configs/without_lr_decay/internimage_l_22kto1k_384.yaml
# (the official README: "The paper results were obtained from models trained
# with configs in configs/without_lr_decay"). 20 epochs, lr 2e-5 per 512
# images, 2 warmup epochs from 0, cosine to 0, label smoothing 0.3, no Mixup,
# CutMix or random erasing, gradient checkpointing, EMA 0.9999.
#
# Start from the official 22K classifier, its head mapped to the 1K classes
# as the official fine-tuning does (meta_data/map22kto1k.txt of the official
# code or of Swin Transformer):
#   python tools/convert_checkpoint.py internimage_l_22k_192to384.pth \
#       pretrained/internimage-l_in21k-384px.pth \
#       --map-22k-to-1k meta_data/map22kto1k.txt
_base_ = './internimage-t_8xb128_in1k-224px.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.1, with_cp=True),
    head=dict(in_channels=1280, loss=dict(label_smooth_val=0.3)),
    train_cfg=dict(_delete_=True),  # no Mixup / CutMix
    init_cfg=dict(type='Pretrained',
                  checkpoint='pretrained/internimage-l_in21k-384px.pth'),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=384, backend='pillow',
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
    dict(type='ResizeEdge', scale=384, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# No layer-wise decay in the paper's recipe. The official root config
# (configs/internimage_l_22kto1k_384.yaml) turns it on, with the DCN offsets
# at 0.1x; to train that variant use
#   paramwise_cfg=dict(decay_style='classification', layer_decay_rate=0.9,
#                      offset_lr_scale=0.1)
optim_wrapper = dict(optimizer=dict(lr=2e-5 * 512 / 512))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=True, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=2,
         end=20, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=20)
# 8 GPUs x 64 images.
auto_scale_lr = dict(base_batch_size=512)
