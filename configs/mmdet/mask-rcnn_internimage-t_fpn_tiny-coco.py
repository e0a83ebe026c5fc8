# Mask R-CNN + FPN with InternImage-T (the full T architecture, randomly
# initialised) on the tiny shapes set of tools/make_tiny_coco.py: 128 x 128
# images, 4 classes. Small enough to train in minutes on a CPU; used by
# tools/demo_det.py and the tests. Only the data, the number of classes, the
# sampling sizes and the schedule differ from the COCO 1x config.
_base_ = './mask-rcnn_internimage-t_fpn_1x_coco.py'

data_root = 'data/tiny_coco/'
classes = ('square', 'circle', 'triangle', 'star')
metainfo = dict(classes=classes,
                palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0),
                         (255, 160, 0)])
image_size = (128, 128)
max_epochs = 10
batch_size = 2

model = dict(
    backbone=dict(drop_path_rate=0.0, init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                  mask_head=dict(num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=0.0005), clip_grad=dict(max_norm=5.0))
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8], gamma=0.1),
]
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
auto_scale_lr = dict(base_batch_size=batch_size)
