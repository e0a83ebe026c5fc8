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
import os
import os.path as osp
import sys

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from internimage.checkpoint import CheckpointError  # noqa: E402
from internimage.complexity import build_from_config, test_shape  # noqa: E402
from internimage.visualization import (default_points,  # noqa: E402
                                       find_internimage, load_image,
                                       sample_points, to_inputs)
from image_demo import load_weights, sample_image  # noqa: E402
from mm_common import allow_mmengine_checkpoints, library_of  # noqa: E402


def parse_points(text):
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'a point is X,Y (image pixels), got {text!r}')
    return x, y


def add_model_args(parser, out):
    """Arguments vis_sampling.py and vis_erf.py share."""
    from mmengine.config import DictAction
    parser.add_argument('config', help='mmpretrain, mmdet or mmseg config')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint (path or URL); default: random '
                        'initialisation')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N',
                        help='H W (or one value: square) of the image the '
                        "model sees; default: the config's test size")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random initialisation (models '
                        'without a checkpoint). Default: 0')
    parser.add_argument('--out', default=out,
                        help=f'the PNG to write. Default: {out}')


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


def _drop_pretrained(cfg):
    """Remove ``init_cfg=dict(type='Pretrained', ...)`` entries (they would
    download weights) from a model config, recursively."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        elif isinstance(init, list):
            cfg['init_cfg'] = [c for c in init
                               if c.get('type') != 'Pretrained'] or None
        for value in cfg.values():
            _drop_pretrained(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _drop_pretrained(value)


def load_model(cfg, checkpoint=None, source='config',
               needs_internimage=False, seed=0):
    """Build ``cfg.model`` on the CPU in eval mode: with ``checkpoint``
    loaded strictly as tools/image_demo.py does, else randomly initialised
    as the config says (``Pretrained`` entries left out) from ``seed``.
    Raises FileNotFoundError / CheckpointError / ValueError naming the
    problem (with ``needs_internimage``, also for a model without an
    InternImage backbone, before the checkpoint is read)."""
    library_of(cfg)
    if checkpoint is not None and '://' not in checkpoint and \
            not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if checkpoint is None:
        _drop_pretrained(cfg.model)
    torch.manual_seed(seed)
    model = build_from_config(cfg, device='cpu')
    if needs_internimage:
        try:
            find_internimage(model)
        except ValueError as e:
            raise ValueError(f'{source}: {e}') from e
    if checkpoint is None:
        # init_weights logs every parameter's initialisation at INFO.
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel('WARNING')
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    else:
        allow_mmengine_checkpoints()
        try:
            load_weights(model, checkpoint)
        except RuntimeError as e:  # load_state_dict's key mismatch
            raise CheckpointError(
                f'{checkpoint} does not fit the model of {source}: '
                f'{str(e)[:800]}') from e
    return model.eval()


def read_config(path, cfg_options=None):
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def image_shape(cfg, shape):
    """(H, W) from --shape, else the config's test size."""
    if shape:
        if len(shape) not in (1, 2):
            raise ValueError('--shape takes H or H W')
        return shape[0], shape[-1]
    return test_shape(cfg)


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


def save_figure(fig, out):
    """Write ``fig`` to the PNG ``out`` with a 64-colour palette (a fifth
    of the size, for pictures kept in the repository)."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=80)
    plt.close(fig)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with Image.open(buffer) as img:
        img.convert('RGB').quantize(64).save(out, format='PNG',
                                              optimize=True)


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
