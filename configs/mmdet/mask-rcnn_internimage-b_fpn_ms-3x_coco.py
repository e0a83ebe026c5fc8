# Mask R-CNN + FPN with InternImage-B, 36 epochs with multi-scale training
# (official mask_rcnn_internimage_b_fpn_3x_coco.py).
_base_ = [
    './mask-rcnn_internimage-b_fpn_1x_coco.py',
    './_base_/ms-3x_instance.py',
]
train_dataloader = dict(dataset=dict(pipeline={{_base_.ms3x_train_pipeline}}))
train_cfg = dict(max_epochs={{_base_.ms3x_max_epochs}})
param_scheduler = {{_base_.ms3x_param_scheduler}}
