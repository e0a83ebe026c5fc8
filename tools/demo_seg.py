# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Segmentation demo: train UperNet + InternImage-T on a tiny ADE20K-format
set, evaluate it, and save a coloured prediction.

    python tools/demo_seg.py [--work-dir work_dirs/demo_seg]
                             [--data data/tiny_ade20k] [--iters 120]

1. writes the synthetic set with tools/make_tiny_ade20k.py if ``--data``
   does not hold one;
2. trains configs/mmseg/upernet_internimage-t_tiny-ade20k.py with mmengine's
   Runner (mmseg's ADE20KDataset, IoUMetric), logging the losses;
3. evaluates on the validation images: per-class IoU table and mIoU;
4. predicts one validation image and saves it coloured beside its labels.
"""
import argparse
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))

CONFIG = osp.join(ROOT, 'configs', 'mmseg',
                  'upernet_internimage-t_tiny-ade20k.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_seg')
    parser.add_argument('--data', default='data/tiny_ade20k',
                        help='tiny ADE20K-format set (written if missing)')
    parser.add_argument('--iters', type=int, default=None,
                        help="training iterations (default: the config's)")
    parser.add_argument('--config', default=CONFIG)
    return parser.parse_args(argv)


def configure(config, data, work_dir, iters=None):
    """The tiny config pointed at ``data`` and ``work_dir``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data
    if iters is not None:
        cfg.train_cfg.max_iters = iters
        cfg.train_cfg.val_interval = iters
        cfg.default_hooks.checkpoint.interval = iters
        for scheduler in cfg.param_scheduler:
            scheduler.end = min(scheduler.end, iters)
            scheduler.begin = min(scheduler.begin, iters - 1)
    return cfg


def save_prediction(runner, cfg, out_file):
    """Predict the first validation image with the trained model and save
    image | labels | prediction, coloured with the dataset palette."""
    import numpy as np
    from mmseg.apis import inference_model
    from PIL import Image
    dataset = runner.test_dataloader.dataset
    info = dataset.get_data_info(0)
    palette = np.asarray(dataset.metainfo['palette'], np.uint8)
    model = runner.model
    model.cfg = cfg  # what inference_model reads the test pipeline from
    result = inference_model(model, info['img_path'])
    pred = result.pred_sem_seg.data[0].cpu().numpy()
    labels = np.asarray(Image.open(info['seg_map_path'])).astype(np.int64)
    labels = labels - 1  # reduce_zero_label: 0 (other) -> ignored
    image = np.asarray(Image.open(info['img_path']).convert('RGB'))

    def colour(seg):
        out = np.zeros(seg.shape + (3, ), np.uint8)
        valid = (seg >= 0) & (seg < len(palette))
        out[valid] = palette[seg[valid]]
        return out

    panel = np.concatenate([image, colour(labels), colour(pred)], axis=1)
    Image.fromarray(panel).save(out_file)
    return info['img_path']


def main(argv=None):
    args = parse_args(argv)
    from make_tiny_ade20k import make_tiny_ade20k
    from mmengine.runner import Runner
    if not osp.isdir(osp.join(args.data, 'images', 'validation')):
        make_tiny_ade20k(args.data)
        print(f'[demo_seg] wrote the tiny ADE20K set to {args.data}')
    cfg = configure(args.config, args.data, args.work_dir, args.iters)
    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    trained = time.time() - start
    metrics = runner.test()
    total = time.time() - start
    out_file = osp.join(runner.log_dir, 'prediction.png')
    image = save_prediction(runner, cfg, out_file)
    print('[demo_seg] ' + '=' * 60)
    print(f'[demo_seg] trained {cfg.train_cfg.max_iters} iterations in '
          f'{trained:.0f} s, evaluated in {total - trained:.0f} s')
    print(f'[demo_seg] mIoU on {len(runner.test_dataloader.dataset)} '
          f'validation images: {metrics["mIoU"]:.2f}')
    print(f'[demo_seg] data:        {osp.abspath(args.data)}')
    print(f'[demo_seg] checkpoint:  {osp.abspath(args.work_dir)}/'
          f'iter_{cfg.train_cfg.max_iters}.pth')
    print(f'[demo_seg] log:         {osp.abspath(runner.log_dir)}')
    print(f'[demo_seg] prediction:  {osp.abspath(out_file)} '
          f'({osp.basename(image)}: image | labels | prediction)')
    return metrics


if __name__ == '__main__':
    main()
