# InternImage-B on ImageNet-1K at 224x224 (official internimage_b_1k_224).
_base_ = './internimage-t_8xb128_in1k-224px.py'

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.5),
    head=dict(in_channels=896),
)
