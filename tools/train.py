# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Train a model with mmengine's Runner: mmdet, mmseg or mmpretrain configs.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher pytorch]
    bash tools/dist_train.sh CONFIG GPUS [ARGS ...]

The same command line as mmdet's, mmseg's and mmpretrain's tools/train.py;
the library is the config's ``default_scope``. ``--resume`` without a path
resumes from the work dir's latest checkpoint. Checkpoints written by the
Runner load with torch's default ``weights_only=True``: the few mmengine and
numpy classes they hold are allow-listed (internimage.runner). Without a GPU,
``--launcher pytorch`` runs on the gloo backend.
"""
import argparse
import os.path as osp
import sys

from internimage.runner import (add_runner_args, build_runner, load_config,
                                set_local_rank_env)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='train config file path')
    add_runner_args(parser, 'the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr with the total batch size (the '
                        "config's auto_scale_lr.base_batch_size)")
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest '
        'checkpoint in the work dir')
    return parser.parse_args(argv)


def build_config(args):
    """The config with the command line applied."""
    cfg, _ = load_config(args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        elif wrapper != 'OptimWrapper':
            raise ValueError(f'--amp needs optim_wrapper type OptimWrapper, '
                             f'the config has {wrapper}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError('--auto-scale-lr needs auto_scale_lr = dict('
                             'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume: no such checkpoint: '
                                    f'{args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    set_local_rank_env(args.local_rank)
    try:
        cfg = build_config(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    runner = build_runner(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
