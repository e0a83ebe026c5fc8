# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Draw the effective receptive field (ERF) of each stage of a backbone.

    python tools/vis_erf.py CONFIG [CHECKPOINT] [--img IMG_OR_DIR ...]
        [--compare CONFIG_OR_NAME ...] [--share 0.5] [--shape H W]
        [--out outputs/vis_erf.png] [--cfg-options KEY=VALUE ...]

The ERF of a stage is the gradient of its output's central location (the
positive part of its channels, summed, as RepLKNet's) with respect to the
input image, in absolute value summed over colour channels, averaged over
the images (each resized to cover
``--shape``, default the config's test size, and centre-cropped). One heat
map per stage (log scale, normalised to its maximum), with the contour of the
smallest area that holds ``--share`` of the gradient; that area is printed
per stage. Without CHECKPOINT the model is randomly initialised, as its
config says.

``--compare`` adds rows for other models: a config file, or the name of an
mmpretrain model (``convnext-tiny_32xb128_in1k``, ``swin-tiny_16xb64_in1k``,
...). They are randomly initialised (nothing is downloaded); their backbones
are built with ``out_indices=(0, 1, 2, 3)`` to give every stage (and, where
they take them, ``gap_before_final_norm=False`` so that ConvNeXt gives maps
and ``pad_small_map=True`` so that Swin takes maps smaller than a window).
"""
import argparse
import inspect
import os.path as osp
import sys

import numpy as np

from internimage.checkpoint import CheckpointError
from internimage.visualization import (add_model_args,
                                       effective_receptive_field,
                                       find_internimage, image_shape,
                                       level_outputs, load_image, load_model,
                                       read_config, sample_image, save_figure,
                                       share_area, to_inputs)

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_model_args(parser, osp.join('outputs', 'vis_erf.png'))
    parser.add_argument('--img', nargs='+', help='image files or folders '
                        "of images (default: matplotlib's grace_hopper.jpg)")
    parser.add_argument('--compare', nargs='+', default=[],
                        metavar='CONFIG_OR_NAME',
                        help='other models, randomly initialised: config '
                        'files or mmpretrain model names')
    parser.add_argument('--share', type=float, default=0.5,
                        help='print the area holding this share of the '
                        'gradient. Default: 0.5')
    return parser.parse_args(argv)


def collect_images(paths):
    """Image files: those given, and those inside the folders given."""
    from mmdet.utils.misc import IMG_EXTENSIONS
    from mmengine.utils import scandir
    found = []
    for path in paths:
        if osp.isdir(path):
            inside = sorted(osp.join(path, f) for f in scandir(
                path, IMG_EXTENSIONS + tuple(e.upper()
                                             for e in IMG_EXTENSIONS)))
            if not inside:
                raise FileNotFoundError(f'no images in folder {path}')
            found += inside
        elif osp.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f'image not found: {path}')
    return found


def compare_config(name):
    """A config file, or the config of an mmpretrain model name."""
    if osp.isfile(name):
        return read_config(name)
    from mmpretrain.apis import ModelHub
    try:
        return ModelHub.get(name).config
    except ValueError as e:
        raise ValueError(f'--compare {name}: neither a config file nor an '
                         f'mmpretrain model ({e})') from e


def stage_forward(cfg, checkpoint=None, source='config', seed=0):
    """The model and ``forward(images)`` -> every stage's feature map: an
    InternImage's levels (any out_indices), or another backbone built with
    ``out_indices=(0, 1, 2, 3)`` (and no pooling of its outputs)."""
    from mmengine.registry import MODELS
    backbone_cfg = cfg.model.get('backbone')
    if backbone_cfg is None:
        raise ValueError(f'{source}: the model has no backbone')
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    with MODELS.switch_scope_and_registry(cfg.get('default_scope')) as reg:
        cls = reg.get(backbone_cfg['type'])
    if cls is not None and cls.__name__ not in ('InternImage',
                                                'CBInternImage'):
        backbone_cfg['out_indices'] = (0, 1, 2, 3)
        takes = inspect.signature(cls).parameters
        if 'gap_before_final_norm' in takes:  # ConvNeXt: maps, not vectors
            backbone_cfg['gap_before_final_norm'] = False
        if 'pad_small_map' in takes:  # Swin: maps smaller than a window
            backbone_cfg['pad_small_map'] = True
    model = load_model(cfg, checkpoint, source, seed=seed)
    try:
        return model, level_outputs(find_internimage(model))
    except ValueError:
        pass

    def forward(images):
        features = model.backbone(images)
        for f in features:
            if f.dim() != 4:
                raise ValueError(
                    f'{source}: the backbone {type(model.backbone).__name__} '
                    f'returns features of shape {tuple(f.shape)}, not '
                    'feature maps (N, C, H, W)')
        return features

    return model, forward


def draw(rows, shape, share, out):
    """Rows of heat maps (one row per model, one panel per stage)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from scipy.ndimage import uniform_filter
    cols = max(len(erfs) for _, erfs, _ in rows)
    height, width = shape
    fig = plt.figure(layout='constrained', figsize=(
        2.4 * cols, (2.4 * height / width + 0.7) * len(rows)))
    for sub, (label, erfs, areas) in zip(
            fig.subfigures(len(rows), 1, squeeze=False)[:, 0], rows):
        sub.suptitle(label, fontsize=10)
        for c, ax in enumerate(sub.subplots(1, cols, squeeze=False)[0]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(erfs):
                ax.axis('off')
                continue
            erf = erfs[c].numpy()
            ax.imshow(np.log10(erf / erf.max() + 1e-4), cmap='viridis',
                      vmin=-4, vmax=0)
            pixels, threshold = areas[c]
            # The area's outline, smoothed a little (it is ragged).
            region = uniform_filter((erf >= threshold).astype(float),
                                    size=max(3, min(height, width) // 32))
            ax.contour(region, levels=[0.5], colors='white', linewidths=0.8)
            ax.set_title(f'stage {c + 1}: {share:.0%} in '
                         f'{np.sqrt(pixels):.0f}$^2$ px', fontsize=9)
    save_figure(fig, out)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = read_config(args.config, args.cfg_options)
        shape = image_shape(cfg, args.shape)
        paths = collect_images(args.img or [sample_image()])
        images = [load_image(p, shape) for p in paths]
        models = [(osp.splitext(osp.basename(args.config))[0], cfg,
                   args.checkpoint, args.config)]
        models += [(osp.splitext(osp.basename(name))[0], compare_config(name),
                    None, name) for name in args.compare]
        rows = []
        for label, model_cfg, checkpoint, source in models:
            model, forward = stage_forward(model_cfg, checkpoint, source,
                                           args.seed)
            erfs = effective_receptive_field(
                forward, (to_inputs(model, img) for img in images))
            weights = (osp.basename(checkpoint) if checkpoint else
                       'random init')
            rows.append((f'{label} ({weights})', erfs,
                         [share_area(e, args.share) for e in erfs]))
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    draw(rows, shape, args.share, args.out)
    total = shape[0] * shape[1]
    print(f'ERF over {len(images)} image(s) at {shape[1]} x {shape[0]} '
          f'(W x H): the smallest area holding {args.share:.0%} of the '
          'gradient of each stage\'s central output')
    for label, erfs, areas in rows:
        print(f'  {label}')
        for c, (pixels, _) in enumerate(areas):
            print(f'    stage {c + 1}: {pixels} px ({np.sqrt(pixels):.1f} '
                  f'px square, {pixels / total:.2%} of the image)')
    print(f'saved: {args.out}')


if __name__ == '__main__':
    main()
