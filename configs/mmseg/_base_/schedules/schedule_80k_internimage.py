# The official 80k-iteration schedule (Mask2Former fine-tuning): the 160k one
# with 80k iterations and validation every 2k (official `evaluation`).
_base_ = './schedule_160k_internimage.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500,
         end=80000),
]
train_cfg = dict(max_iters=80000, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000))
