# InternImage-S on ImageNet-1K at 224x224 (official internimage_s_1k_224).
_base_ = './internimage-t_8xb128_in1k-224px.py'

model = dict(
    backbone=dict(arch='s', drop_path_rate=0.4),
    head=dict(in_channels=640),
)
