# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Write a tiny ADE20K-format data set of synthetic street scenes.

    python tools/make_tiny_ade20k.py [--out data/tiny_ade20k] [--train 32]
                                     [--val 8] [--seed 0]

The layout and conventions are ADE20K's (ADEChallengeData2016), so that
mmseg's own ``ADE20KDataset`` reads it and ``IoUMetric`` scores it:

    OUT/images/{training,validation}/ADE_{train,val}_%08d.jpg
    OUT/annotations/{training,validation}/ADE_{train,val}_%08d.png

Label PNGs hold 0 for "other" (ignored: ``reduce_zero_label``) and 1..5 for
the first five ADE20K classes, :data:`CLASSES` (a config selects them with
``metainfo=dict(classes=CLASSES)``; mmseg then maps ADE20K ids to 0..4).
Each image shows sky, buildings with windows, a wall, trees and a floor,
each with its own colour and texture plus noise, and a few "other" blobs.
The same seed writes the same files.
"""
import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image

#: The first five ADE20K classes (file values 1..5).
CLASSES = ('wall', 'building', 'sky', 'floor', 'tree')
#: Image size (height, width).
SIZE = (96, 128)
_COLOURS = {1: (196, 184, 160), 2: (112, 112, 124), 3: (120, 176, 232),
            4: (124, 88, 60), 5: (44, 124, 48)}


def _scene(rng: np.random.Generator, size=SIZE):
    """One (image, label) pair: uint8 HxWx3 RGB and HxW labels 0..5."""
    h, w = size
    label = np.zeros((h, w), np.uint8)
    horizon = int(rng.integers(h // 4, h // 2))
    ground = int(rng.integers(h * 2 // 3, h * 5 // 6))
    label[:horizon] = 3                                   # sky
    label[horizon:ground] = 1                             # wall
    label[ground:] = 4                                    # floor
    for _ in range(int(rng.integers(1, 4))):              # buildings
        x0 = int(rng.integers(0, w - 16))
        x1 = min(w, x0 + int(rng.integers(16, 48)))
        top = int(rng.integers(4, horizon + 1))
        label[top:ground, x0:x1] = 2
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(1, 3))):              # trees
        cy = int(rng.integers(horizon, ground))
        cx = int(rng.integers(0, w))
        ry, rx = rng.integers(8, 20, size=2)
        label[((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 <= 1] = 5
    for _ in range(int(rng.integers(0, 3))):              # "other"
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        r = int(rng.integers(3, 8))
        label[(yy - cy)**2 + (xx - cx)**2 <= r * r] = 0

    image = np.zeros((h, w, 3), np.float32)
    for value, colour in _COLOURS.items():
        jitter = rng.normal(0, 10, 3)
        image[label == value] = np.asarray(colour) + jitter
    sky = label == 3                                      # gradient
    image[sky] += (yy[sky, None] / h) * 40
    windows = (label == 2) & (yy % 8 < 3) & (xx % 6 < 3)  # windows
    image[windows] -= 60
    floor = (label == 4) & (xx % 10 < 2)                  # floor planks
    image[floor] -= 25
    other = label == 0
    image[other] = rng.integers(0, 256, 3)
    image += rng.normal(0, 8, image.shape)                # sensor noise
    image *= rng.uniform(0.8, 1.2)                        # exposure
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_tiny_ade20k(out: str, num_train: int = 32, num_val: int = 8,
                     seed: int = 0) -> str:
    """Write the data set under ``out`` (see the module doc); returns
    ``out``."""
    if num_train < 1 or num_val < 1:
        raise ValueError('make_tiny_ade20k: need at least one training and '
                         f'one validation image, got {num_train}, {num_val}')
    rng = np.random.default_rng(seed)
    for split, tag, count in (('training', 'train', num_train),
                              ('validation', 'val', num_val)):
        img_dir = osp.join(out, 'images', split)
        ann_dir = osp.join(out, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(1, count + 1):
            image, label = _scene(rng)
            name = f'ADE_{tag}_{i:08d}'
            Image.fromarray(image).save(osp.join(img_dir, name + '.jpg'),
                                        quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, name + '.png'))
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/tiny_ade20k')
    parser.add_argument('--train', type=int, default=32,
                        help='training images')
    parser.add_argument('--val', type=int, default=8,
                        help='validation images')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = make_tiny_ade20k(args.out, args.train, args.val, args.seed)
    print(f'wrote {args.train} training and {args.val} validation images '
          f'with labels to {out} (classes: {", ".join(CLASSES)})')


if __name__ == '__main__':
    main()
