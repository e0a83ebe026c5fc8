# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The detection demo: train Mask R-CNN InternImage-T on the tiny shapes set,
evaluate it and draw a prediction, on a CPU in minutes.

    python tools/demo_det.py [--work-dir work_dirs/demo_det]
        [--data-root data/tiny_coco] [--epochs 12] [--cfg-options ...]

1. writes the tiny COCO-format set (tools/make_tiny_coco.py) unless it is
   there already;
2. trains configs/mmdet/mask-rcnn_internimage-t_fpn_tiny-coco.py with
   mmengine's Runner (its usual progress log);
3. evaluates the final checkpoint on the validation images with mmdet's
   CocoMetric (box and mask mAP);
4. draws the predictions for one validation image (DetInferencer);
5. prints where the log, the checkpoint, the metrics and the image are.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from mm_common import ROOT, allow_mmengine_checkpoints  # noqa: E402

CONFIG = osp.join(ROOT, 'configs', 'mmdet',
                  'mask-rcnn_internimage-t_fpn_tiny-coco.py')


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_det')
    parser.add_argument('--data-root', default='data/tiny_coco')
    parser.add_argument('--epochs', type=int,
                        help="training epochs (default: the config's)")
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def set_data_root(cfg, data_root):
    """Point the config's datasets and evaluators at ``data_root``."""
    data_root = data_root.rstrip('/') + '/'
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is not None:
            loader.dataset.data_root = data_root
    for split in ('val', 'test'):
        evaluator = cfg.get(f'{split}_evaluator')
        if evaluator is not None:
            evaluator.ann_file = osp.join(data_root,
                                          'annotations/instances_val.json')


def build_config(args):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    set_data_root(cfg, args.data_root)
    if args.epochs:
        cfg.train_cfg.max_epochs = args.epochs
        cfg.default_hooks.checkpoint.interval = args.epochs
        for scheduler in cfg.param_scheduler:
            if scheduler.type == 'MultiStepLR':
                scheduler.end = args.epochs
                scheduler.milestones = [max(1, round(args.epochs * 0.75))]
    # Evaluate once, after training (runner.test below).
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    ann = osp.join(args.data_root, 'annotations', 'instances_train.json')
    if not osp.isfile(ann):
        from make_tiny_coco import make_tiny_coco
        for path in make_tiny_coco(args.data_root):
            print(f'[demo_det] wrote {path}')
    else:
        print(f'[demo_det] using the data in {args.data_root}')
    allow_mmengine_checkpoints()
    from mmengine.runner import Runner
    cfg = build_config(args)
    runner = Runner.from_cfg(cfg)
    train_start = time.time()
    runner.train()
    train_time = time.time() - train_start
    metrics = runner.test()
    checkpoint = osp.join(cfg.work_dir,
                          f'epoch_{cfg.train_cfg.max_epochs}.pth')
    from image_demo import detect
    img = osp.join(args.data_root, 'val', '00000.png')
    vis, found = detect(args.config, checkpoint, img,
                        out_dir=osp.join(cfg.work_dir, 'demo'))
    summary = dict(
        bbox_mAP=metrics.get('coco/bbox_mAP'),
        segm_mAP=metrics.get('coco/segm_mAP'),
        bbox_mAP_50=metrics.get('coco/bbox_mAP_50'),
        segm_mAP_50=metrics.get('coco/segm_mAP_50'),
        train_seconds=round(train_time, 1),
        total_seconds=round(time.time() - start, 1),
        epochs=cfg.train_cfg.max_epochs,
        checkpoint=checkpoint, visualisation=vis,
        detections_in_visualisation=len(found))
    out = osp.join(cfg.work_dir, 'demo_metrics.json')
    os.makedirs(cfg.work_dir, exist_ok=True)
    with open(out, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    print('[demo_det] ' + '=' * 60)
    print(f'[demo_det] Mask R-CNN InternImage-T on {args.data_root}: '
          f'{summary["epochs"]} epochs in {summary["train_seconds"]} s')
    print(f'[demo_det] box mAP {summary["bbox_mAP"]}, mask mAP '
          f'{summary["segm_mAP"]} (CocoMetric, '
          f'{osp.join(args.data_root, "val")})')
    print(f'[demo_det] log and config: {runner.log_dir}')
    print(f'[demo_det] checkpoint:     {checkpoint}')
    print(f'[demo_det] metrics:        {out}')
    print(f'[demo_det] prediction:     {vis} ({len(found)} detections)')
    return summary


if __name__ == '__main__':
    main()
