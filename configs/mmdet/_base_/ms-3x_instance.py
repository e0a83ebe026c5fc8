# The official 3x recipe's data and schedule, as ms3x_* names that a 3x
# config applies to its 1x base (two bases may not set the same key): the
# DETR / Sparse R-CNN multi-scale augmentation (short side 480..800, or
# 400..600 then a random 384..600 crop then 480..800), 36 epochs, lr x0.1
# at epochs 27 and 33.
_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
           (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
           (800, 1333)]
ms3x_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=_scales,
                  keep_ratio=True)],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range',
                     crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=_scales,
                     keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
ms3x_max_epochs = 36
ms3x_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]
