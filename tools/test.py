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

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from mm_common import (allow_mmengine_checkpoints, apply_tta,  # noqa: E402
                       default_work_dir, library_of, set_local_rank_env,
                       setup_cpu_distributed)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir for the evaluation logs')
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
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int,
                        default=None)
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
    from mmengine.config import Config
    for path, what in ((args.config, 'config'),):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} file not found: {path}')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    library = library_of(cfg)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)
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
    allow_mmengine_checkpoints()
    setup_cpu_distributed(cfg, args.launcher)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
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
