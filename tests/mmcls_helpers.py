# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Shared pieces of the mmpretrain tests: a tiny image folder and the T
classification config shrunk to it."""
import copy
import os

import numpy as np
from mmengine.config import Config
from official_format import TINY
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'configs/mmpretrain/'
                      'internimage-t_8xb128_in1k-224px.py')


def write_image_folder(root, per_class=6, size=40):
    """Two classes that differ in colour, as CustomDataset folders."""
    rng = np.random.default_rng(0)
    for label, channel in (('red', 0), ('blue', 2)):
        os.makedirs(os.path.join(root, label))
        for i in range(per_class):
            img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            img[..., channel] += 150
            Image.fromarray(img).save(os.path.join(root, label, f'{i}.png'))


def _loader(data, pipeline, shuffle):
    return dict(batch_size=4, num_workers=0,
                dataset=dict(type='CustomDataset', data_root=str(data),
                             pipeline=[dict(type='LoadImageFromFile'),
                                       *pipeline, dict(type='PackInputs')]),
                sampler=dict(type='DefaultSampler', shuffle=shuffle))


def tiny_classifier_cfg(data, work_dir, epochs=1):
    """The T config with the tiny T backbone (official names, no layer
    scale) and 2 classes, training ``epochs`` on the folder ``data`` (no
    validation) and testing on it, 32 px."""
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone = dict(type='InternImage',
                              arch=copy.deepcopy(TINY['t']),
                              drop_path_rate=0.1, out_indices=(3, ))
    cfg.model.head.update(num_classes=2,
                          in_channels=TINY['t']['channels'] * 8)
    cfg.model.train_cfg = None  # no Mixup/CutMix on 12 images
    cfg.data_preprocessor.num_classes = 2
    cfg.train_dataloader = _loader(data, [
        dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0)),
        dict(type='RandomFlip', prob=0.5)], shuffle=True)
    cfg.test_dataloader = _loader(data, [dict(type='Resize', scale=32)],
                                  shuffle=False)
    cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.test_cfg = dict()
    for key in ('val_dataloader', 'val_evaluator', 'val_cfg'):
        cfg[key] = None
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=epochs)
    cfg.randomness = dict(seed=0)
    cfg.work_dir = str(work_dir)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    return cfg
