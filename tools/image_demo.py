# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Run an InternImage model on one image: classify, detect or segment.

    python tools/image_demo.py CONFIG CHECKPOINT [--img IMAGE] [--topk 5]
        [--out-dir outputs] [--score-thr 0.3] [--device cpu]

The task follows the config's library (its ``default_scope``):

- mmpretrain: prints the ``--topk`` classes. CHECKPOINT is an official
  classification checkpoint (converted on the fly) or one written by
  tools/convert_checkpoint.py; it must load strictly.
- mmdet: saves the image with the detected boxes and masks (mmdet's
  DetInferencer) under ``--out-dir``/vis and prints the detections.
- mmseg: saves the coloured segmentation (mmseg's MMSegInferencer) under
  ``--out-dir``/vis, with the classes and palette of the checkpoint's
  ``meta.dataset_meta`` when it has them.

Detection and segmentation checkpoints are those of tools/train.py or
tools/convert_checkpoint.py. The default image is matplotlib's sample
photograph of Grace Hopper, which ships with matplotlib.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope

from internimage.checkpoint import CheckpointError, read_checkpoint
from internimage.complexity import build_from_config
from internimage.convert import load_model_weights
from internimage.runner import library_of
from internimage.visualization import sample_image


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmpretrain, mmdet or mmseg config')
    parser.add_argument('checkpoint', help='checkpoint (path or URL)')
    parser.add_argument('--img', help="image file (default: matplotlib's "
                        'grace_hopper.jpg)')
    parser.add_argument('--topk', type=int, default=5,
                        help='classification: classes to print')
    parser.add_argument('--out-dir', default='outputs',
                        help='detection/segmentation: where to save the '
                        'visualised prediction (in vis/)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw boxes above this score')
    parser.add_argument('--device', default='cpu', help="e.g. 'cuda:0'")
    return parser.parse_args(argv)


def classify(config, checkpoint, img, topk=5, device='cpu'):
    """[(class index, class name, score)] of the ``topk`` best classes."""
    cfg = Config.fromfile(config)
    cfg.model.pop('init_cfg', None)
    model = build_from_config(cfg, device='cpu')
    load_model_weights(model, checkpoint)
    model = model.to(device).eval()
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    batch = pseudo_collate([pipeline(dict(img_path=img))])
    with torch.no_grad():
        sample = model.test_step(batch)[0]
    scores = sample.pred_score.cpu()
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    names = (IMAGENET_CATEGORIES if len(scores) == len(IMAGENET_CATEGORIES)
             else [str(i) for i in range(len(scores))])
    top = scores.topk(min(topk, len(scores)))
    return [(int(i), names[int(i)], float(s))
            for s, i in zip(top.values, top.indices)]


def _checkpoint_meta(checkpoint):
    """``meta.dataset_meta`` of a Runner checkpoint ({} when absent)."""
    ckpt = read_checkpoint(checkpoint)
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return dict(meta.get('dataset_meta') or {})


def _saved(out_dir, img):
    name = osp.splitext(osp.basename(img))[0]
    for ext in ('.png', '.jpg', osp.splitext(img)[1]):
        path = osp.join(out_dir, 'vis', name + ext)
        if osp.isfile(path):
            return path
    return osp.join(out_dir, 'vis')


def detect(config, checkpoint, img, out_dir='outputs', score_thr=0.3,
           device='cpu'):
    """Detect with mmdet's DetInferencer; returns (path of the visualised
    image, [(class name, score, [x1, y1, x2, y2])] above ``score_thr``)."""
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=config, weights=checkpoint,
                               device=device, scope='mmdet',
                               show_progress=False)
    result = inferencer(img, out_dir=out_dir, pred_score_thr=score_thr,
                        return_datasamples=True)
    pred = result['predictions'][0].pred_instances
    classes = inferencer.model.dataset_meta.get('classes') or []
    found = []
    for label, score, box in zip(pred.labels.tolist(), pred.scores.tolist(),
                                 pred.bboxes.tolist()):
        if score >= score_thr:
            name = classes[label] if label < len(classes) else str(label)
            found.append((name, score, [round(v, 1) for v in box]))
    return _saved(out_dir, img), found


def segment(config, checkpoint, img, out_dir='outputs', device='cpu'):
    """Segment with mmseg's MMSegInferencer; returns the path of the
    coloured prediction."""
    from mmseg.apis import MMSegInferencer
    meta = _checkpoint_meta(checkpoint)
    inferencer = MMSegInferencer(model=config, weights=checkpoint,
                                 classes=meta.get('classes'),
                                 palette=meta.get('palette'), device=device,
                                 scope='mmseg')
    inferencer(img, out_dir=out_dir, show=False)
    return _saved(out_dir, img)


def main(argv=None):
    args = parse_args(argv)
    img = args.img or sample_image()
    try:
        if not osp.isfile(args.config):
            raise FileNotFoundError(f'config file not found: {args.config}')
        if not osp.isfile(img):
            raise FileNotFoundError(f'image not found: {img}')
        library = library_of(Config.fromfile(args.config))
        if library == 'mmdet':
            path, found = detect(args.config, args.checkpoint, img,
                                 args.out_dir, args.score_thr, args.device)
            print(f'{img}: {len(found)} detections with score >= '
                  f'{args.score_thr}')
            for name, score, box in found:
                print(f'  {score:7.4f}  {name}  {box}')
            print(f'visualised: {path}')
            return
        if library == 'mmseg':
            path = segment(args.config, args.checkpoint, img, args.out_dir,
                           args.device)
            print(f'{img}: segmentation saved to {path}')
            return
        results = classify(args.config, args.checkpoint, img, args.topk,
                           args.device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(f'{img}:')
    for index, name, score in results:
        print(f'  {score:7.4f}  {index:4d}  {name}')


if __name__ == '__main__':
    main()
