# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Draw where each DCNv3 group of an InternImage samples, per stage.

    python tools/vis_sampling.py CONFIG [CHECKPOINT] [--img IMG]
        [--points X,Y ...] [--stages 1 2 3 4] [--block -1] [--shape H W]
        [--out outputs/vis_sampling.png] [--cfg-options KEY=VALUE ...]

For classifier, detector and segmentor configs alike (mmpretrain, mmdet,
mmseg). The image is resized to cover ``--shape`` (default: the config's test
size) and centre-cropped to it; the query pixels ``--points`` are in that
image (default: its centre and the centres of its quarters). For each query
pixel and each chosen stage (one panel per stage) the picture shows where
each group of the stage's DCNv3 layer ``--block`` (default: its last) samples
(one colour per group; a point's area is proportional to its softmaxed mask
weight). Locations are computed from the real modules
(internimage.visualization) and mapped to image pixels through the stem and
the downsampling convolutions. CHECKPOINT is one of tools/train.py (or
tools/convert_checkpoint.py, or an official classifier); without it the
model is randomly initialised as its config says, so that its offsets and
masks are zero: each group samples the plain 3x3 grid with equal weights.
"""
import argparse
import os.path as osp
import sys

import numpy as np

from internimage.checkpoint import CheckpointError
from internimage.visualization import (add_model_args, default_points,
                                       image_shape, load_image, load_model,
                                       read_config, sample_image,
                                       sample_points, save_figure, to_inputs)


def parse_points(text):
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'a point is X,Y (image pixels), got {text!r}')
    return x, y


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_model_args(parser, osp.join('outputs', 'vis_sampling.png'))
    parser.add_argument('--img', help="image file (default: matplotlib's "
                        'grace_hopper.jpg)')
    parser.add_argument('--points', type=parse_points, nargs='+',
                        metavar='X,Y', help='query pixels (default: the '
                        'centre and the centres of the quarters)')
    parser.add_argument('--stages', type=int, nargs='+',
                        help='stages to draw, from 1 as in the paper (stage 1 '
                        'is levels[0]); default: all')
    parser.add_argument('--block', type=int, default=-1,
                        help='which block of each stage, from 0 (negative: '
                        'from the end). Default: -1, the last')
    return parser.parse_args(argv)


def draw(samplings, image_rgb, out, title=None):
    """One panel per stage: the image, the query pixels (white stars) and
    the sampling points, coloured by group, area by weight."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    height, width = image_rgb.shape[:2]
    cols = len(samplings)
    fig, axes = plt.subplots(1, cols, figsize=(4 * cols, 4 * height / width
                                               + 0.6), squeeze=False)
    for ax, s in zip(axes[0], samplings):
        groups, points = s.weights.shape[1:]
        colours = plt.get_cmap('hsv')(np.arange(groups) / groups)
        ax.imshow(image_rgb, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        for q in range(len(s.queries)):
            for g in range(groups):
                loc = s.locations[q, g]
                ax.scatter(loc[:, 0], loc[:, 1],
                           s=120 * points * s.weights[q, g] / 9,
                           color=colours[g], alpha=0.75, linewidths=0)
            ax.scatter(*s.queries[q], marker='*', s=140, color='white',
                       edgecolors='black', linewidths=0.8, zorder=3)
        # The image and a margin: points farther out sample only zeros.
        margin = 0.1 * max(width, height)
        ax.set_xlim(-0.5 - margin, width - 0.5 + margin)
        ax.set_ylim(height - 0.5 + margin, -0.5 - margin)
        ax.set_title(f'stage {s.layer.level + 1}, block {s.layer.block} '
                     f'({groups} groups)', fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, out)


def main(argv=None):
    args = parse_args(argv)
    img = args.img or sample_image()
    try:
        cfg = read_config(args.config, args.cfg_options)
        shape = image_shape(cfg, args.shape)
        image = load_image(img, shape)
        model = load_model(cfg, args.checkpoint, args.config,
                           needs_internimage=True, seed=args.seed)
        samplings = sample_points(model, to_inputs(model, image),
                                  args.points or default_points(*shape),
                                  args.stages, args.block)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    weights = osp.basename(args.checkpoint) if args.checkpoint else \
        'random init'
    draw(samplings, image[..., ::-1], args.out,
         f'{osp.splitext(osp.basename(args.config))[0]} ({weights})')
    print(f'{img} at {shape[1]} x {shape[0]} (W x H), '
          f'{len(samplings[0].queries)} query pixels, weights: '
          f'{args.checkpoint or "random init"}')
    height, width = shape
    for s in samplings:
        dist = np.linalg.norm(s.locations - s.centres[:, None, None], axis=-1)
        x, y = s.locations[..., 0], s.locations[..., 1]
        outside = (x < -0.5) | (x > width - 0.5) | (y < -0.5) | \
            (y > height - 0.5)
        total = s.weights.sum()  # one per query and group
        groups, points = s.weights.shape[1:]
        print(f'  stage {s.layer.level + 1} ({s.layer.name}, {groups} groups'
              f' x {points} points): weighted mean distance from the output '
              f'pixel {(dist * s.weights).sum() / total:.1f} px, farthest '
              f'{dist.max():.1f} px, {(s.weights * outside).sum() / total:.0%}'
              ' of the weight outside the image')
    print(f'saved: {args.out}')


if __name__ == '__main__':
    main()
