# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Write a tiny COCO-format instance-segmentation set, deterministically.

    python tools/make_tiny_coco.py [--out data/tiny_coco] [--train 32]
                                   [--val 8] [--size 128] [--seed 0]

OUT gets ``train/``, ``val/`` (PNG images) and
``annotations/instances_{train,val}.json``: 1 to 4 filled shapes (square,
circle, triangle, star: the categories) per image, each in its class's hue on
a textured background (a colour gradient with noise and stripes), with its
polygon mask, box and area. The same seed gives the same files, bit for
bit. mmdet's CocoDataset and CocoMetric read it (``metainfo=dict(classes=
CLASSES)``).
"""
import argparse
import json
import os
import os.path as osp

import cv2
import numpy as np

CLASSES = ('square', 'circle', 'triangle', 'star')
#: Each class has its own hue (jittered), so that a detector trained from
#: random weights for a few minutes on a CPU tells them apart.
CLASS_COLOURS = np.array([(230, 40, 40), (40, 90, 230), (40, 200, 60),
                          (240, 200, 30)], np.float64)


def _polygon(kind, cx, cy, r, angle):
    """Vertices (K, 2) of a shape of radius ``r`` centred at (cx, cy)."""
    if kind == 'square':
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif kind == 'circle':
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        radii = np.full(24, r)
    elif kind == 'triangle':
        t = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    else:  # star
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], 1)


def _background(rng, size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    w = rng.uniform(0, 1)
    t = (w * x + (1 - w) * y)[..., None]
    img = c0 * (1 - t) + c1 * t
    freq, phase = rng.uniform(4, 16), rng.uniform(0, 2 * np.pi)
    img += 12 * np.sin(2 * np.pi * freq * (x + y) + phase)[..., None]
    img += rng.normal(0, 10, img.shape)
    return img


def _image(rng, size, max_objects):
    img = _background(rng, size)
    objects, occupied = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(size * 0.09, size * 0.2)
            cx, cy = rng.uniform(r + 2, size - r - 2, 2)
            if all(np.hypot(cx - ox, cy - oy) > r + orr + 2
                   for ox, oy, orr in occupied):
                break
        else:
            continue
        occupied.append((cx, cy, r))
        label = int(rng.integers(len(CLASSES)))
        poly = _polygon(CLASSES[label], cx, cy, r, rng.uniform(0, np.pi))
        colour = CLASS_COLOURS[label] + rng.uniform(-25, 25, 3)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(poly * 8).astype(np.int32)], 1,
                     lineType=cv2.LINE_AA, shift=3)
        img[mask > 0] = colour + rng.normal(0, 6, (int(mask.sum()), 3))
        objects.append((label, poly))
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _annotation(ann_id, image_id, label, poly):
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return dict(id=ann_id, image_id=image_id, category_id=label + 1,
                segmentation=[[round(float(v), 2) for v in poly.ravel()]],
                area=round(float(area), 2),
                bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                iscrowd=0)


def make_split(out_dir, split, num_images, size, rng, max_objects=4):
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, objects = _image(rng, size, max_objects)
        name = f'{i:05d}.png'
        cv2.imwrite(osp.join(out_dir, split, name), img)
        image_id = i + 1
        images.append(dict(id=image_id, file_name=name, height=size,
                           width=size))
        for label, poly in objects:
            annotations.append(_annotation(len(annotations) + 1, image_id,
                                           label, poly))
    coco = dict(
        info=dict(description='tiny shapes (tools/make_tiny_coco.py)'),
        images=images, annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='shape')
                    for i, n in enumerate(CLASSES)])
    path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(coco, f)
    return path


def make_tiny_coco(out: str, num_train: int = 32, num_val: int = 8,
                   size: int = 128, seed: int = 0) -> str:
    """Write the set under ``out`` (see the module doc); returns ``out``."""
    if size < 64:
        raise ValueError(f'make_tiny_coco: size must be >= 64, got {size}')
    if num_train < 1 or num_val < 1:
        raise ValueError('make_tiny_coco: need at least one training and '
                         f'one validation image, got {num_train}, {num_val}')
    rng = np.random.default_rng(seed)
    make_split(out, 'train', num_train, size, rng)
    make_split(out, 'val', num_val, size, rng)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/tiny_coco')
    parser.add_argument('--train', type=int, default=32,
                        help='training images')
    parser.add_argument('--val', type=int, default=8,
                        help='validation images')
    parser.add_argument('--size', type=int, default=128,
                        help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = make_tiny_coco(args.out, args.train, args.val, args.size,
                         args.seed)
    print(f'wrote {args.train} training and {args.val} validation images '
          f'with annotations to {out} (classes: {", ".join(CLASSES)})')


if __name__ == '__main__':
    main()
