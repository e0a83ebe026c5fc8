# InternImage-T on ImageNet-1K at 224x224, the official recipe
# (classification/configs/internimage_t_1k_224.yaml): 300 epochs, Mixup 0.8 /
# CutMix 1.0, label smoothing 0.1, drop path 0.1, EMA 0.9999.
_base_ = [
    '_base_/datasets/imagenet_bs128_internimage_224.py',
    '_base_/schedules/imagenet_bs1024_adamw_internimage.py',
    '_base_/default_runtime.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='InternImage',
        arch='t',
        core_op='DCNv3',
        drop_path_rate=0.1,
        out_indices=(3, ),
    ),
    head=dict(
        type='InternImageClsHead',
        num_classes=1000,
        in_channels=512,  # channels * 8
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original'),
    ),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

# The official code evaluates the model and its EMA.
custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, evaluate_on_origin=True,
         priority='ABOVE_NORMAL')
]
