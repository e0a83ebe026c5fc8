# UperNet + InternImage-T on ADE20K, 512x512 crops, 160k iterations: the
# official recipe (segmentation/configs/ade20k/upernet_internimage_t_512_
# 160k_ade20k.py): AdamW lr 6e-5, weight decay 0.05, the official layer-decay
# constructor (rate 1.0 for T/S/B), 1500 warm-up iterations then poly,
# 16 images per iteration (8 GPUs x 2), backbone from the official ImageNet-1K
# classifier.
_base_ = [
    '_base_/models/upernet_internimage.py',
    '_base_/datasets/ade20k-512x512.py',
    '_base_/default_runtime.py',
    '_base_/schedules/schedule_160k_internimage.py',
]
pretrained = ('https://huggingface.co/OpenGVLab/InternImage/resolve/main/'
              'internimage_t_1k_224.pth')

model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(
        arch='t',
        layer_scale=1.0,  # the official segmentation configs add it to T
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.05),
    constructor='CustomLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=30, layer_decay_rate=1.0,
                       depths=[4, 4, 18, 4]))

# Input of the FLOPs count of the official table (tools/get_flops.py,
# tools/paper_tables.py): one 512x2048 image, the official get_flops default.
complexity_shape = (512, 2048)
