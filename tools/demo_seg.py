# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Segmentation demo: train UperNet + InternImage-T on a tiny ADE20K-format
set, evaluate it, and save a picture of a prediction.

    python tools/demo_seg.py [--data data/tiny_ade20k]
        [--work-dir work_dirs/demo_seg] [--config CONFIG]
        [--cfg-options KEY=VALUE ...]

1. writes the synthetic set with tools/make_tiny_ade20k.py if ``--data``
   does not hold one;
2. trains configs/mmseg/upernet_internimage-t_tiny-ade20k.py with mmengine's
   Runner (mmseg's ADE20KDataset, logging the losses);
3. evaluates the final checkpoint on the validation images with mmseg's
   IoUMetric (per-class IoU table and mIoU);
4. saves the ground truth | prediction of the first validation image;
5. writes WORK_DIR/metrics.json and WORK_DIR/prediction.png and prints
   where the data, checkpoint, log, metrics and picture are.

``--cfg-options train_cfg.max_iters=N`` trains N iterations: the checkpoint
interval and the lr schedule follow. tools/demo_det.py is the same for
detection.
"""
import argparse
import os.path as osp
import subprocess
import sys

from mmengine.config import Config, DictAction

from internimage.runner import (fit_schedule, print_summary, train_length,
                                train_test_draw)

TOOLS = osp.dirname(osp.abspath(__file__))
CONFIG = osp.join(osp.dirname(TOOLS), 'configs', 'mmseg',
                  'upernet_internimage-t_tiny-ade20k.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', default='data/tiny_ade20k',
                        help='tiny ADE20K-format set (written if missing)')
    parser.add_argument('--work-dir', default='work_dirs/demo_seg')
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def configure(args):
    """The config pointed at ``args.data`` and ``args.work_dir``, with the
    command line's options."""
    cfg = Config.fromfile(args.config)
    original = train_length(cfg)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = args.data
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    fit_schedule(cfg, original)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if not osp.isdir(osp.join(args.data, 'images', 'validation')):
        subprocess.run([sys.executable,
                        osp.join(TOOLS, 'make_tiny_ade20k.py'),
                        '--out', args.data], check=True)
    summary = train_test_draw(configure(args), args.data)
    metrics = summary['metrics']
    print_summary('demo_seg', summary, f'mIoU {metrics["mIoU"]:.2f} (aAcc '
                  f'{metrics["aAcc"]:.2f})')
    return summary


if __name__ == '__main__':
    main()
