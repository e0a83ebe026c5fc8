# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Classify one image with an InternImage config and checkpoint.

    python tools/image_demo.py CONFIG CHECKPOINT [--img IMAGE] [--topk 5]

CHECKPOINT is an official classification checkpoint (converted on the fly)
or one written by tools/convert_checkpoint.py; it must load strictly. The
default image is matplotlib's sample photograph of Grace Hopper (ImageNet
class 'military uniform'), which ships with matplotlib.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from internimage.checkpoint import (CheckpointError,  # noqa: E402
                                    convert_checkpoint, detect_kind,
                                    extract_state_dict, read_checkpoint)
from internimage.complexity import build_from_config  # noqa: E402


def sample_image():
    """Path of an image that ships with matplotlib."""
    from matplotlib import cbook
    return cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='classification config file')
    parser.add_argument('checkpoint', help='checkpoint (path or URL)')
    parser.add_argument('--img', help="image file (default: matplotlib's "
                        'grace_hopper.jpg)')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--device', default='cpu', help="e.g. 'cuda:0'")
    return parser.parse_args(argv)


def load_weights(model, checkpoint):
    """Load an official or converted classifier strictly."""
    state_dict = extract_state_dict(read_checkpoint(checkpoint),
                                    source=checkpoint)
    if not any(k.startswith('backbone.') for k in state_dict):
        if detect_kind(state_dict, checkpoint) != 'classification':
            raise CheckpointError(f'{checkpoint}: not a classifier')
        state_dict = convert_checkpoint({'model': state_dict},
                                        source=checkpoint)['state_dict']
    model.load_state_dict(state_dict, strict=True)


def classify(config, checkpoint, img, topk=5, device='cpu'):
    """[(class index, class name, score)] of the ``topk`` best classes."""
    cfg = Config.fromfile(config)
    cfg.model.pop('init_cfg', None)
    model = build_from_config(cfg, device='cpu')
    load_weights(model, checkpoint)
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


def main(argv=None):
    args = parse_args(argv)
    img = args.img or sample_image()
    try:
        results = classify(args.config, args.checkpoint, img, args.topk,
                           args.device)
    except (CheckpointError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    print(f'{img}:')
    for index, name, score in results:
        print(f'  {score:7.4f}  {index:4d}  {name}')


if __name__ == '__main__':
    main()
