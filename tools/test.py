# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Test (evaluate) a checkpoint with mmengine's Runner: mmdet, mmseg or
mmpretrain configs.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--show-dir DIR] [--tta] [--cfg-options KEY=VALUE ...]
        [--launcher pytorch]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [ARGS ...]

The same command line as the libraries' tools/test.py; the library is the
config's ``default_scope``. ``--out``: a .pkl of the predictions (mmdet,
mmpretrain), or, for mmseg as its test.py, a directory for the predicted
label maps. ``--show-dir``: the visualised predictions. CHECKPOINT is one
written by tools/train.py or tools/convert_checkpoint.py.
"""
import argparse
import os.path as osp
import sys

from internimage.runner import (add_runner_args, apply_tta, build_runner,
                                load_config, set_local_rank_env)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    add_runner_args(parser, 'the dir for the evaluation logs')
    parser.add_argument('--out', help='dump the predictions: a .pkl file '
                        '(mmdet, mmpretrain) or a directory (mmseg)')
    parser.add_argument('--show', action='store_true',
                        help='show the predictions in a window')
    parser.add_argument('--show-dir', help='save the visualised predictions '
                        'under this directory (in the work dir for mmdet, '
                        'as the libraries do)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds between shown images')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (tta_model, '
                        'tta_pipeline)')
    return parser.parse_args(argv)


def _visualise(cfg, library, args):
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise ValueError('--show/--show-dir need a visualization hook in '
                         'default_hooks')
    hook = hooks.visualization
    if library == 'mmpretrain':
        hook.enable = True
        if args.show_dir:
            hook.out_dir = args.show_dir
    else:
        hook.draw = True
        if args.show_dir and library == 'mmdet':
            hook.test_out_dir = args.show_dir
        elif args.show_dir:
            cfg.visualizer.save_dir = args.show_dir
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time


def build_config(args):
    cfg, library = load_config(args)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    # The checkpoint holds the trained weights: no pretrained backbone.
    backbone = cfg.model.get('backbone', {})
    if isinstance(backbone, dict) and 'init_cfg' in backbone:
        backbone.init_cfg = None
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _visualise(cfg, library, args)
    if args.tta:
        apply_tta(cfg)
    if args.out and library == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    elif args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl file, got {args.out}')
    return cfg, library


def main(argv=None):
    args = parse_args(argv)
    set_local_rank_env(args.local_rank)
    try:
        cfg, library = build_config(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    runner = build_runner(cfg)
    if args.out and library != 'mmseg':
        if library == 'mmdet':
            from mmdet.evaluation import DumpDetResults as Dump
        else:
            from mmengine.evaluator import DumpResults as Dump
        runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
    metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
