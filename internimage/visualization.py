# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""What DCNv3 learned, seen from the image: where each group of a DCNv3
layer samples, and the effective receptive field (ERF) of each stage.

Sampling locations come from the real modules: the model runs once with
forward pre-hooks that keep the input of the chosen DCNv3 layers; each
layer's own ``dw_conv``, ``offset`` and ``mask`` then predict its offsets and
mask logits (softmaxed over the points of each group, as the module does),
and the locations follow ``docs/dcnv3_op.md`` with the module's kernel
size, stride, padding, dilation, offset_scale and remove_center. A level's
pixel coordinates map to image pixels through the stem's and the
downsampling layers' convolutions (:func:`conv_to_image`).

The ERF of a feature map is, as in RepLKNet (Ding et al., CVPR 2022), the
gradient of its central location (the positive part of its channels,
summed) with respect to the input image; here in absolute value summed over
the colour channels and averaged over images
(:func:`effective_receptive_field`).
:func:`share_area` gives the smallest area that holds a given share of it.

Used by ``tools/vis_sampling.py`` and ``tools/vis_erf.py``.
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ops_dcnv3.modules import DCNv3
from ops_dcnv3.reference import kernel_points, output_size
from .backbone import InternImage
from .cbnet import CBInternImage
from .checkpoint import CheckpointError
from .complexity import build_from_config, test_shape
from .convert import load_model_weights
from .runner import library_of

# ------------------------------------------------------------ the backbone


def find_internimage(model: nn.Module) -> nn.Module:
    """The InternImage (or CBInternImage) of a classifier, detector or
    segmentor (its ``backbone``), or ``model`` itself when it is one.

    Raises:
        ValueError: naming the backbone the model has instead.
    """
    if isinstance(model, (InternImage, CBInternImage)):
        return model
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, (InternImage, CBInternImage)):
        return backbone
    what = (type(backbone).__name__ if backbone is not None else
            f'no backbone (the model is a {type(model).__name__})')
    raise ValueError(
        f'the model has {what}, not an InternImage backbone: sampling '
        'locations need its DCNv3 layers')


def _stem_and_levels(backbone: nn.Module):
    """(stem, levels) of an InternImage; of a CBInternImage, the assisting
    backbone's stem (the lead one has none) and the lead backbone's levels
    (whose features the detector uses)."""
    backbone = find_internimage(backbone)
    if isinstance(backbone, CBInternImage):
        assisting, lead = backbone.cb_modules
        return assisting.patch_embed, lead.levels
    return backbone.patch_embed, backbone.levels


def _pair(value, what: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f'{what} must be an int or a pair of ints, got '
                     f'{value!r}')


def conv_to_image(convs: Iterable[nn.Conv2d]) -> Tuple[np.ndarray,
                                                        np.ndarray]:
    """The map from the output pixel coordinates of a chain of convolutions
    (given image side first) to the input pixel coordinates of the first.

    A convolution's output pixel ``u`` is centred on input coordinate
    ``stride * u - padding + dilation * (kernel - 1) / 2`` (pixel centres at
    integers); the chain composes these. Returns ``(scale, shift)``, each
    ``[x, y]``, with ``image = scale * u + shift``.
    """
    scale, shift = np.ones(2), np.zeros(2)
    for conv in convs:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'expected nn.Conv2d, got {type(conv).__name__}')
        if isinstance(conv.padding, str):
            raise ValueError(f'{conv}: padding={conv.padding!r} is not '
                             'supported; give it in pixels')
        # Conv2d keeps (height, width); this map is (x, y).
        k = np.array(_pair(conv.kernel_size, 'kernel_size')[::-1], float)
        s = np.array(_pair(conv.stride, 'stride')[::-1], float)
        p = np.array(_pair(conv.padding, 'padding')[::-1], float)
        d = np.array(_pair(conv.dilation, 'dilation')[::-1], float)
        shift = shift + scale * (d * (k - 1) / 2 - p)
        scale = scale * s
    return scale, shift


def level_to_image(backbone: nn.Module) -> List[Tuple[np.ndarray,
                                                      np.ndarray]]:
    """``(scale, shift)`` of :func:`conv_to_image` for each level of an
    InternImage: through the stem's two convolutions and the downsampling
    of the levels before it."""
    stem, levels = _stem_and_levels(backbone)
    convs = [stem.conv1, stem.conv2]
    maps = []
    for level in levels:
        maps.append(conv_to_image(convs))
        if level.downsample is not None:
            convs = convs + [level.downsample.conv]
    return maps


@dataclass
class DCNv3Layer:
    """One DCNv3 module of a backbone: ``levels[level].blocks[block].dcn``
    (stage ``level + 1`` in the paper's numbering), at module path ``name``
    inside the backbone."""
    name: str
    level: int
    block: int
    module: DCNv3


def dcnv3_layers(backbone: nn.Module) -> List[DCNv3Layer]:
    """Every DCNv3 layer of an InternImage's levels, in forward order."""
    _, levels = _stem_and_levels(backbone)
    backbone = find_internimage(backbone)
    names = {m: n for n, m in backbone.named_modules()}
    return [DCNv3Layer(names[block.dcn], i, index, block.dcn)
            for i, level in enumerate(levels)
            for index, block in enumerate(level.blocks)]


def select_layers(backbone: nn.Module, stages: Optional[Sequence[int]] = None,
                  block: int = -1) -> List[DCNv3Layer]:
    """Block ``block`` (0-based; negative counts from the end) of each of
    ``stages``, numbered from 1 as in the paper (stage 1 is ``levels[0]``);
    default: every stage."""
    layers = dcnv3_layers(backbone)
    num_stages = max(layer.level for layer in layers) + 1
    stages = range(1, num_stages + 1) if stages is None else stages
    chosen = []
    for stage in stages:
        if not 1 <= stage <= num_stages:
            raise ValueError(f'stage {stage} does not exist: the backbone '
                             f'has stages 1..{num_stages}')
        in_stage = [layer for layer in layers if layer.level == stage - 1]
        if not -len(in_stage) <= block < len(in_stage):
            raise ValueError(f'block {block} does not exist in stage {stage}, '
                             f'which has {len(in_stage)} blocks (0..'
                             f'{len(in_stage) - 1})')
        chosen.append(in_stage[block])
    return chosen


# ------------------------------------------------- sampling of one module
def sampling_grid(offset: torch.Tensor, kernel_h: int, kernel_w: int,
                  stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                  dilation_h: int, dilation_w: int, group: int,
                  offset_scale: float, remove_center=False) -> torch.Tensor:
    """Where each point of each group samples, in input pixel coordinates.

    Args:
        offset (Tensor): (N, H_out, W_out, group * P * 2), the op's offset
            layout (x then y for each point).
        kernel_h ... offset_scale, remove_center: as for the op.

    Returns:
        Tensor: (N, H_out, W_out, group, P, 2), x then y.
    """
    n, h_out, w_out, _ = offset.shape
    dx, dy = kernel_points(kernel_h, kernel_w, dilation_h, dilation_w,
                           bool(remove_center), offset.dtype, offset.device)
    points = dx.numel()
    if offset.shape[-1] != group * points * 2:
        raise ValueError(
            f'offset has {offset.shape[-1]} channels; group {group} with '
            f'{points} points needs {group * points * 2}')
    off = offset.reshape(n, h_out, w_out, group, points, 2)
    cx = (dilation_w * (kernel_w - 1)) // 2
    cy = (dilation_h * (kernel_h - 1)) // 2
    j = torch.arange(w_out, dtype=offset.dtype, device=offset.device)
    i = torch.arange(h_out, dtype=offset.dtype, device=offset.device)
    x = (j * stride_w - pad_w + cx).view(1, 1, w_out, 1, 1) \
        + offset_scale * (dx + off[..., 0])
    y = (i * stride_h - pad_h + cy).view(1, h_out, 1, 1, 1) \
        + offset_scale * (dy + off[..., 1])
    return torch.stack((x, y), dim=-1)


def dcnv3_sampling(module: DCNv3,
                   x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sampling locations and weights of a DCNv3 module on its input.

    The offsets and mask logits are predicted by the module's own layers
    (``dw_conv``, then ``offset`` and ``mask``); the weights are the logits
    softmaxed over the points of each group.

    Args:
        module (DCNv3): the module (or a :class:`DCNv3_pytorch`).
        x (Tensor): its input, (N, H, W, C) channels-last.

    Returns:
        tuple[Tensor, Tensor]: locations (N, H_out, W_out, G, P, 2) in the
        input's pixel coordinates (x then y) and weights (N, H_out, W_out,
        G, P), fp32.
    """
    if x.dim() != 4 or x.shape[-1] != module.channels:
        raise ValueError(
            f'expected the DCNv3 input (N, H, W, {module.channels}), got '
            f'shape {tuple(x.shape)}')
    n, h, w, _ = x.shape
    k, group = module.kernel_size, module.group
    h_out, w_out = output_size(h, w, k, k, module.stride, module.stride,
                               module.pad, module.pad, module.dilation,
                               module.dilation)
    with torch.no_grad():
        features = module.dw_conv(x.permute(0, 3, 1, 2))
        offset = module.offset(features).float()
        logits = module.mask(features).float()
    if offset.shape[1:3] != (h_out, w_out):
        raise ValueError(
            f'the module predicts offsets at {tuple(offset.shape[1:3])} but '
            f'samples an output of {(h_out, w_out)} (stride '
            f'{module.stride}, pad {module.pad}); it cannot run either')
    locations = sampling_grid(offset, k, k, module.stride, module.stride,
                              module.pad, module.pad, module.dilation,
                              module.dilation, group, module.offset_scale,
                              module.remove_center)
    weights = F.softmax(logits.reshape(n, h_out, w_out, group, -1), dim=-1)
    return locations, weights


# ------------------------------------------------------------ the image
def load_image(path: str, shape: Tuple[int, int]) -> np.ndarray:
    """The image at ``path`` resized to cover ``shape`` (H, W) with its
    aspect ratio kept, then centre-cropped to it: (H, W, 3) uint8, BGR (as
    mmcv and the libraries' pipelines load images).

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not an image, or ``shape`` is bad.
    """
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    height, width = _pair(tuple(shape), 'shape')
    if height < 1 or width < 1:
        raise ValueError(f'shape must be positive, got {tuple(shape)}')
    try:
        img = mmcv.imread(path, channel_order='bgr')
    except Exception as e:  # mmcv raises bare exceptions for bad files
        raise ValueError(f'{path}: not an image ({e})') from e
    if img is None:
        raise ValueError(f'{path}: not an image')
    h, w = img.shape[:2]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    img = mmcv.imresize(img, size, interpolation='bilinear')
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return np.ascontiguousarray(img[top:top + height, left:left + width])


def to_inputs(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    """``image`` (H, W, 3) uint8 BGR as the model's backbone sees it:
    through the model's ``data_preprocessor`` (colour order, mean and std),
    without the padding it may add. Returns (1, 3, H, W) fp32."""
    height, width = image.shape[:2]
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    with torch.no_grad():
        inputs = model.data_preprocessor(dict(inputs=[tensor]),
                                         False)['inputs']
    return inputs[..., :height, :width].float()


# ------------------------------------------------- sampling from the image
@dataclass
class LayerSampling:
    """Where one DCNv3 layer samples for some query pixels of the image.

    Attributes:
        layer (DCNv3Layer): the layer.
        queries (ndarray): (Q, 2) the query pixels (x, y) of the image.
        centres (ndarray): (Q, 2) the image pixel of the level's output pixel
            that each query falls on (the nearest one).
        locations (ndarray): (Q, G, P, 2) image pixel coordinates (x, y).
        weights (ndarray): (Q, G, P) softmaxed mask; sums to 1 per group.
    """
    layer: DCNv3Layer
    queries: np.ndarray
    centres: np.ndarray
    locations: np.ndarray
    weights: np.ndarray


def check_points(points, height: int, width: int) -> np.ndarray:
    """``points`` as an (Q, 2) array of (x, y) inside a height x width image.

    Raises:
        ValueError: naming a point outside the image.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    if len(points) == 0:
        raise ValueError('no query points given')
    for x, y in points:
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise ValueError(
                f'point ({x:g}, {y:g}) is outside the image, whose pixels '
                f'are x in [0, {width - 1}] and y in [0, {height - 1}] '
                f'({width} x {height})')
    return points


def default_points(height: int, width: int) -> np.ndarray:
    """Five query pixels spread over the image: the centre and the centres
    of its four quarters."""
    xs, ys = (width - 1) * np.array([.5, .25, .75, .25, .75]), \
        (height - 1) * np.array([.5, .25, .25, .75, .75])
    return np.round(np.stack((xs, ys), axis=1))


class capture_inputs:
    """Context manager keeping the input of each of ``modules`` during the
    forward passes run inside it (the last call's, detached):
    ``with capture_inputs(mods) as seen: model(x)``, then ``seen[mod]``."""

    def __init__(self, modules: Iterable[nn.Module]):
        self.modules = list(modules)
        self.inputs = {}
        self._handles = []

    def _hook(self, module, args):
        self.inputs[module] = args[0].detach()

    def __enter__(self):
        self._handles = [m.register_forward_pre_hook(self._hook)
                         for m in self.modules]
        return self.inputs

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False


def sample_points(backbone: nn.Module, inputs: torch.Tensor, points,
                  stages: Optional[Sequence[int]] = None,
                  block: int = -1) -> List[LayerSampling]:
    """Where the chosen DCNv3 layers sample for each query pixel.

    Args:
        backbone (nn.Module): an InternImage or CBInternImage (or a model
            with one as ``backbone``).
        inputs (Tensor): (1, 3, H, W), the normalised image.
        points: query pixels (x, y) of that image.
        stages (Sequence[int], optional): stage numbers, from 1 (stage 1 is
            ``levels[0]``); default: every stage.
        block (int): which block of each level (negative from the end).
            Default: the last.

    Returns:
        list[LayerSampling]: one per chosen layer, in stage order.
    """
    backbone = find_internimage(backbone)
    if inputs.dim() != 4 or inputs.shape[:2] != (1, 3):
        raise ValueError('expected one image (1, 3, H, W), got shape '
                         f'{tuple(inputs.shape)}')
    height, width = inputs.shape[2:]
    points = check_points(points, height, width)
    layers = select_layers(backbone, stages, block)
    maps = level_to_image(backbone)
    was_training = backbone.training
    backbone.eval()
    try:
        with capture_inputs(layer.module for layer in layers) as seen, \
                torch.no_grad():
            backbone(inputs)
    finally:
        backbone.train(was_training)
    result = []
    for layer in layers:
        locations, weights = dcnv3_sampling(layer.module, seen[layer.module])
        scale, shift = maps[layer.level]
        h_out, w_out = locations.shape[1:3]
        u = np.clip(np.round((points - shift) / scale), 0,
                    [w_out - 1, h_out - 1]).astype(int)
        loc = locations[0, u[:, 1], u[:, 0]].cpu().double().numpy()
        result.append(LayerSampling(
            layer, points, u * scale + shift, loc * scale + shift,
            weights[0, u[:, 1], u[:, 0]].cpu().double().numpy()))
    return result


# ------------------------------------------ effective receptive field
def level_outputs(backbone: nn.Module) -> Callable[[torch.Tensor],
                                                   List[torch.Tensor]]:
    """``forward(images)`` -> every level's output feature (NCHW) of an
    InternImage, whatever its ``out_indices`` (read with forward hooks on
    its levels)."""
    _, levels = _stem_and_levels(backbone)
    backbone = find_internimage(backbone)

    def forward(images):
        features = {}
        handles = [
            level.register_forward_hook(
                lambda mod, args, out, i=i: features.__setitem__(i, out[1]))
            for i, level in enumerate(levels)
        ]
        try:
            backbone(images)
        finally:
            for handle in handles:
                handle.remove()
        return [features[i].permute(0, 3, 1, 2) for i in range(len(levels))]

    return forward


def effective_receptive_field(
        forward: Callable[[torch.Tensor], Sequence[torch.Tensor]],
        images: Iterable[torch.Tensor]) -> torch.Tensor:
    """The ERF of each feature map that ``forward`` returns.

    For each image and each feature map (N, C, h, w), the positive parts of
    the channels of the central location ``[h // 2, w // 2]`` are summed and
    differentiated with respect to the image; the gradient's absolute value
    is summed over the colour channels and averaged over the images. (A
    plain sum over channels would not do: after a LayerNorm it is constant.)

    Args:
        forward (callable): images (1, 3, H, W) -> sequence of NCHW maps.
        images (iterable[Tensor]): (1, 3, H, W) each (or (3, H, W)), all of
            one size.

    Returns:
        Tensor: (S, H, W), one map per feature map, fp32.
    """
    total, count = None, 0
    for image in images:
        x = image if image.dim() == 4 else image[None]
        if x.shape[0] != 1:
            raise ValueError('give the images one at a time, (1, 3, H, W); '
                             f'got shape {tuple(x.shape)}')
        if total is not None and x.shape[2:] != total.shape[1:]:
            raise ValueError('the images must have one size: '
                             f'{tuple(total.shape[1:])} and '
                             f'{tuple(x.shape[2:])}')
        x = x.detach().float().clone().requires_grad_(True)
        with torch.enable_grad():
            features = list(forward(x))
            maps = []
            for k, feature in enumerate(features):
                h, w = feature.shape[-2:]
                centre = feature[:, :, h // 2, w // 2].relu().sum()
                grad, = torch.autograd.grad(
                    centre, x, retain_graph=k < len(features) - 1,
                    allow_unused=True)
                maps.append(torch.zeros_like(x[0, 0]) if grad is None else
                            grad[0].abs().sum(0))
        erf = torch.stack(maps).detach()
        total = erf if total is None else total + erf
        count += 1
    if count == 0:
        raise ValueError('no images given')
    return total / count


def share_area(erf: torch.Tensor, share: float) -> Tuple[int, float]:
    """The smallest number of pixels of ``erf`` (H, W) that hold ``share``
    of its sum, and the value of the weakest of them (the contour to
    draw)."""
    if not 0 < share <= 1:
        raise ValueError(f'share must be in (0, 1], got {share}')
    values = torch.sort(erf.flatten().double(), descending=True).values
    total = values.sum()
    if total <= 0:
        raise ValueError('the ERF is zero everywhere (the output does not '
                         'depend on the image)')
    cumulative = torch.cumsum(values, 0) / total
    # A little slack so that share=1 is reached despite rounding.
    pixels = int(torch.searchsorted(cumulative, share - 1e-12)) + 1
    pixels = min(pixels, values.numel())
    return pixels, float(values[pixels - 1])


# ------------------------------ what tools/vis_sampling.py and vis_erf.py share
def sample_image():
    """Path of an image that ships with matplotlib (grace_hopper.jpg), the
    default image of the tools."""
    from matplotlib import cbook
    return cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)


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
    loaded strictly (:func:`internimage.convert.load_model_weights`), else randomly initialised
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
        try:
            load_model_weights(model, checkpoint)
        except RuntimeError as e:  # load_state_dict's key mismatch
            raise CheckpointError(
                f'{checkpoint} does not fit the model of {source}: '
                f'{str(e)[:800]}') from e
    return model.eval()


def read_config(path, cfg_options=None):
    """The config file ``path`` with ``cfg_options`` merged;
    FileNotFoundError naming a missing file."""
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
