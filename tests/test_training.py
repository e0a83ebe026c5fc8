# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""A few mmpretrain training iterations on a tiny image folder."""
import copy
import os

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from official_format import TINY
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_image_folder(root, per_class=6, size=40):
    """Two classes that differ in colour, as CustomDataset folders."""
    rng = np.random.default_rng(0)
    for label, channel in (('red', 0), ('blue', 2)):
        os.makedirs(os.path.join(root, label))
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            img[..., channel] += 150
            Image.fromarray(img).save(os.path.join(root, label, f'{i}.png'))


def test_training_reduces_the_loss(tmp_path, tool):
    data = tmp_path / 'data'
    write_image_folder(str(data))
    cfg = Config.fromfile(os.path.join(
        ROOT, 'configs/mmpretrain/internimage-t_8xb128_in1k-224px.py'))
    cfg.model.backbone = dict(type='InternImage',
                              arch=copy.deepcopy(TINY['t']), with_cp=True,
                              drop_path_rate=0.1, out_indices=(3, ))
    cfg.model.head.update(num_classes=2, in_channels=64)
    cfg.model.train_cfg = None  # no Mixup/CutMix on 12 images
    cfg.data_preprocessor.num_classes = 2
    cfg.train_dataloader = dict(
        batch_size=4, num_workers=0,
        dataset=dict(type='CustomDataset', data_root=str(data),
                     pipeline=[
                         dict(type='LoadImageFromFile'),
                         dict(type='RandomResizedCrop', scale=32,
                              crop_ratio_range=(0.5, 1.0)),
                         dict(type='RandomFlip', prob=0.5),
                         dict(type='PackInputs'),
                     ]),
        sampler=dict(type='DefaultSampler', shuffle=True))
    for key in ('val_dataloader', 'val_evaluator', 'val_cfg',
                'test_dataloader', 'test_evaluator', 'test_cfg'):
        cfg[key] = None
    cfg.train_cfg = dict(by_epoch=True, max_epochs=8)
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.optim_wrapper.paramwise_cfg = dict(decay_style='classification',
                                           layer_decay_rate=0.9,
                                           offset_lr_scale=0.1)
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, end=3,
                                by_epoch=False)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=8)
    cfg.randomness = dict(seed=0)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.env_cfg.dist_cfg = dict(backend='gloo')

    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = np.array(runner.message_hub.get_scalar('train/loss').data[0])
    assert len(losses) == 8 * 3
    assert losses[-6:].mean() < 0.8 * losses[:6].mean(), losses
    # The checkpoint has the EMA weights and loads back strictly.
    ckpt = torch.load(os.path.join(cfg.work_dir, 'epoch_8.pth'),
                      weights_only=False)
    assert 'ema_state_dict' in ckpt
    runner.model.load_state_dict(ckpt['state_dict'], strict=True)

    # tools/test.py serves mmpretrain configs and reads this checkpoint with
    # torch's weights_only loading (its allow-list of Runner objects).
    cfg.test_dataloader = dict(
        batch_size=4, num_workers=0,
        dataset=dict(type='CustomDataset', data_root=str(data),
                     pipeline=[dict(type='LoadImageFromFile'),
                               dict(type='Resize', scale=32),
                               dict(type='PackInputs')]),
        sampler=dict(type='DefaultSampler', shuffle=False))
    cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.test_cfg = dict()
    cfg.custom_hooks = []  # the trained weights, not the young EMA copy
    config = tmp_path / 'tiny_cls.py'
    cfg.dump(str(config))
    metrics = tool('test').main([
        str(config), os.path.join(cfg.work_dir, 'epoch_8.pth'), '--work-dir',
        str(tmp_path / 'test')])
    assert 0 <= metrics['accuracy/top1'] <= 100  # 8 epochs: not a skill test
