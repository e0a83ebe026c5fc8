# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Shared pieces of the mmdet tests: the tiny config and the options that
shrink it to a model that trains in seconds."""
import argparse
import os

from mmengine.config import Config, DictAction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, 'configs', 'mmdet',
                           'mask-rcnn_internimage-t_fpn_tiny-coco.py')
#: The backbone of :data:`SMALL` (T flavour: layer scale 1.0, as the
#: detection configs), for official-format checkpoints of the same model.
SMALL_ARCH = dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8],
                  layer_scale=1.0)
#: A tiny InternImage (T flavour) so that the tests take seconds; the demo
#: trains the real T.
SMALL = [
    'model.backbone.channels=16', 'model.backbone.depths=[1,1,2,1]',
    'model.backbone.groups=[1,2,4,8]',
    'model.neck.in_channels=[16,32,64,128]',
    'optim_wrapper.paramwise_cfg.depths=[1,1,2,1]',
    'optim_wrapper.paramwise_cfg.num_layers=5',
    'optim_wrapper.optimizer.lr=0.001', 'default_hooks.logger.interval=1',
    'model.train_cfg.rcnn.sampler.num=16', 'train_dataloader.batch_size=4',
    # an untrained model scores low: keep every box so that CocoMetric has
    # something to evaluate
    'model.test_cfg.rcnn.score_thr=0.0', 'model.test_cfg.rcnn.max_per_img=10',
    'model.train_cfg.rpn_proposal.max_per_img=50',
    'model.test_cfg.rpn.max_per_img=50',
    'train_dataloader.dataset.pipeline.2.scale=(64,64)',
    'test_dataloader.dataset.pipeline.1.scale=(64,64)',
    'val_dataloader.dataset.pipeline.1.scale=(64,64)', 'randomness.seed=0'
]


def data_options(root):
    """--cfg-options pointing the tiny config at the set in ``root``."""
    root = str(root) + '/'
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={root}annotations/instances_val.json',
        f'test_evaluator.ann_file={root}annotations/instances_val.json',
    ]


def parse_options(options):
    """``KEY=VALUE`` strings -> the dict that ``--cfg-options`` gives."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *options]).cfg_options


def small_config(root=None, *options):
    """The tiny config with :data:`SMALL` (and the data in ``root``, and
    ``options``) applied, as a Config."""
    cfg = Config.fromfile(TINY_CONFIG)
    extra = data_options(root) if root is not None else []
    cfg.merge_from_dict(parse_options([*SMALL, *extra, *options]))
    return cfg
