# InternImage-XL: ImageNet-22K pre-trained, fine-tuned on ImageNet-1K at
# 384x384 (official without_lr_decay/internimage_xl_22kto1k_384.yaml); the
# recipe of the L config. Pre-trained weights: convert the official
# internimage_xl_22k_192to384.pth as described there.
_base_ = './internimage-l_in21k-pre_8xb64_in1k-384px.py'

model = dict(
    backbone=dict(arch='xl', drop_path_rate=0.2),
    head=dict(in_channels=1536),
    init_cfg=dict(checkpoint='pretrained/internimage-xl_in21k-384px.pth'),
)
