# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Detection demo: train Mask R-CNN + InternImage-T on a tiny COCO-format
set, evaluate it, and save a picture of a prediction.

    python tools/demo_det.py [--data data/tiny_coco]
        [--work-dir work_dirs/demo_det] [--config CONFIG]
        [--cfg-options KEY=VALUE ...]

1. writes the synthetic set with tools/make_tiny_coco.py if ``--data``
   does not hold one;
2. trains configs/mmdet/mask-rcnn_internimage-t_fpn_tiny-coco.py with
   mmengine's Runner (mmdet's CocoDataset, its usual progress log);
3. evaluates the final checkpoint on the validation images with mmdet's
   CocoMetric (box and mask mAP);
4. saves the ground truth | prediction of the first validation image;
5. writes WORK_DIR/metrics.json and WORK_DIR/prediction.png and prints
   where the data, checkpoint, log, metrics and picture are.

``--cfg-options train_cfg.max_epochs=N`` trains N epochs: the checkpoint
interval and the lr milestones follow. tools/demo_seg.py is the same for
segmentation.
"""
import argparse
import os.path as osp
import subprocess
import sys

from mmengine.config import Config, DictAction

from internimage.runner import (fit_schedule, print_summary, train_length,
                                train_test_draw)

TOOLS = osp.dirname(osp.abspath(__file__))
CONFIG = osp.join(osp.dirname(TOOLS), 'configs', 'mmdet',
                  'mask-rcnn_internimage-t_fpn_tiny-coco.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', default='data/tiny_coco',
                        help='tiny COCO-format set (written if missing)')
    parser.add_argument('--work-dir', default='work_dirs/demo_det')
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def configure(args):
    """The config pointed at ``args.data`` and ``args.work_dir``, with the
    command line's options."""
    cfg = Config.fromfile(args.config)
    original = train_length(cfg)
    data = args.data.rstrip('/') + '/'
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = data
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].ann_file = osp.join(
            data, 'annotations/instances_val.json')
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    fit_schedule(cfg, original)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(osp.join(args.data, 'annotations',
                               'instances_val.json')):
        subprocess.run([sys.executable, osp.join(TOOLS, 'make_tiny_coco.py'),
                        '--out', args.data], check=True)
    summary = train_test_draw(configure(args), args.data, pred_score_thr=0.3)
    metrics = summary['metrics']
    print_summary('demo_det', summary,
                  f'box mAP {metrics["coco/bbox_mAP"]:.3f}, mask mAP '
                  f'{metrics["coco/segm_mAP"]:.3f}')
    return summary


if __name__ == '__main__':
    main()
