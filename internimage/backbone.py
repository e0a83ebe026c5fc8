# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The InternImage backbone (Wang et al., CVPR 2023), sizes T to G.

One implementation for mmpretrain, mmdet and mmseg: it depends only on torch,
mmengine, mmcv and :mod:`ops_dcnv3`. Module and parameter names are those of
the official code, so that the released checkpoints load unchanged. Class
names differ where the official ones mislead:

- :class:`StemLayer` is ``patch_embed``, as the official ``StemLayer``;
- :class:`InternImageLevel` is a stage, ``levels[i]`` (the official
  ``InternImageBlock``);
- :class:`InternImageLayer` is a block, ``levels[i].blocks[j]`` (the
  official ``InternImageLayer``);
- :class:`DownsampleLayer` is ``levels[i].downsample``.
"""
import copy
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ops_dcnv3.modules import DCNv3, DCNv3_pytorch
from ops_dcnv3.modules.dcnv3 import build_act_layer, build_norm_layer
from ops_dcnv3.modules.linear import linear
from .checkpoint import load_backbone_weights

CORE_OPS = {'DCNv3': DCNv3, 'DCNv3_pytorch': DCNv3_pytorch}


class StemLayer(nn.Module):
    """Two stride-2 3x3 convs: (N, 3, H, W) -> (N, H/4, W/4, C), channels-last.

    Args:
        in_chans (int): input channels. Default: 3.
        out_chans (int): output channels C (the first level's). Default: 96.
        act_layer (str): activation between the convs. Default: 'GELU'.
        norm_layer (str): 'LN' or 'BN' after each conv. Default: 'BN'.
    """

    def __init__(self, in_chans=3, out_chans=96, act_layer='GELU',
                 norm_layer='BN'):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3,
                               stride=2, padding=1)
        self.norm1 = build_norm_layer(out_chans // 2, norm_layer,
                                      'channels_first', 'channels_first')
        self.act = build_act_layer(act_layer)
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3,
                               stride=2, padding=1)
        self.norm2 = build_norm_layer(out_chans, norm_layer, 'channels_first',
                                      'channels_last')

    def forward(self, x):
        x = self.act(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(x))


class DownsampleLayer(nn.Module):
    """Stride-2 3x3 conv doubling the channels, channels-last in and out.

    Args:
        channels (int): input channels; the output has twice as many.
        norm_layer (str): 'LN' or 'BN' after the conv. Default: 'LN'.
    """

    def __init__(self, channels, norm_layer='LN'):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2,
                              padding=1, bias=False)
        self.norm = build_norm_layer(2 * channels, norm_layer,
                                     'channels_first', 'channels_last')

    def forward(self, x):
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class MLPLayer(nn.Module):
    """Linear - activation - dropout - Linear - dropout.

    Args:
        in_features (int): input (and, by default, output) features.
        hidden_features (int, optional): hidden features; ``None`` means
            ``in_features``.
        out_features (int, optional): output features; ``None`` means
            ``in_features``.
        act_layer (str): activation. Default: 'GELU'.
        drop (float): dropout rate. Default: 0.
    """

    def __init__(self, in_features, hidden_features=None, out_features=None,
                 act_layer='GELU', drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = build_act_layer(act_layer)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        # fc1 and the activation in one oneDNN pass where it can (CPU
        # inference, see ops_dcnv3.modules.linear).
        x = self.drop(linear(x, self.fc1, self.act))
        return self.drop(linear(x, self.fc2))


class InternImageLayer(nn.Module):
    """One InternImage block: a DCNv3 branch and an MLP branch, each residual.

    Channels-last (N, H, W, C) in and out. Per branch ``f`` with norm ``n``:

    - pre-norm (default): ``x + drop_path(gamma * f(n(x)))``;
    - ``post_norm``: ``x + drop_path(gamma * n(f(x)))``;
    - ``res_post_norm`` (InternImage-H): ``x + drop_path(m(f(n(x))))`` with
      an extra LayerNorm ``m``,

    where ``gamma`` (layer scale) is 1 when ``layer_scale`` is None. As in the
    official code, ``res_post_norm`` only acts without ``post_norm`` and
    without layer scale.

    Args:
        core_op (type): :class:`~ops_dcnv3.DCNv3` or
            :class:`~ops_dcnv3.DCNv3_pytorch`.
        channels (int): C.
        groups (int): DCNv3 groups; must divide ``channels``.
        mlp_ratio (float): MLP hidden features / C. Default: 4.
        drop (float): dropout rate in the MLP. Default: 0.
        drop_path (float): stochastic depth rate of both branches. Default: 0.
        act_layer (str): activation of the MLP and of the DCNv3 offset
            branch. Default: 'GELU'.
        norm_layer (str): norm of the DCNv3 offset branch ('LN' or 'BN'); the
            block's own norms are always LayerNorms. Default: 'LN'.
        post_norm (bool): normalise after the branch instead of before.
            Default: False.
        layer_scale (float, optional): initial value of the per-channel
            scales ``gamma1``/``gamma2``; None for none. Default: None.
        offset_scale (float): DCNv3 offset scale. Default: 1.0.
        with_cp (bool): recompute the block in backward (gradient
            checkpointing) to save memory. Default: False.
        dw_kernel_size (int, optional): kernel of the DCNv3 depthwise conv;
            None means 3. Default: None.
        res_post_norm (bool): LayerNorm on each branch's output
            (InternImage-H). Default: False.
        center_feature_scale (bool): DCNv3 centre feature scale. Default:
            False.
        remove_center (bool): DCNv3 without the kernel's centre point.
            Default: False.
    """

    def __init__(self, core_op, channels, groups, mlp_ratio=4., drop=0.,
                 drop_path=0., act_layer='GELU', norm_layer='LN',
                 post_norm=False, layer_scale=None, offset_scale=1.0,
                 with_cp=False, dw_kernel_size=None, res_post_norm=False,
                 center_feature_scale=False, remove_center=False):
        super().__init__()
        self.channels = channels
        self.groups = groups
        self.mlp_ratio = mlp_ratio
        self.with_cp = with_cp
        self.post_norm = post_norm
        self.res_post_norm = res_post_norm
        self.norm1 = build_norm_layer(channels, 'LN')
        self.dcn = core_op(
            channels=channels, kernel_size=3, stride=1, pad=1, dilation=1,
            group=groups, offset_scale=offset_scale, act_layer=act_layer,
            norm_layer=norm_layer, dw_kernel_size=dw_kernel_size,
            center_feature_scale=center_feature_scale,
            remove_center=remove_center)
        self.drop_path = (DropPath(drop_path)
                          if drop_path > 0 else nn.Identity())
        self.norm2 = build_norm_layer(channels, 'LN')
        self.mlp = MLPLayer(channels, int(channels * mlp_ratio),
                            act_layer=act_layer, drop=drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(channels))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(channels))
        if res_post_norm:
            self.res_post_norm1 = build_norm_layer(channels, 'LN')
            self.res_post_norm2 = build_norm_layer(channels, 'LN')

    def _branch(self, x, fn, norm, res_norm_name, gamma_name):
        if self.post_norm:
            y = norm(fn(x))
        else:
            y = fn(norm(x))
            if self.res_post_norm and not self.layer_scale:
                y = getattr(self, res_norm_name)(y)
        if self.layer_scale:
            y = getattr(self, gamma_name) * y
        return x + self.drop_path(y)

    def _inner_forward(self, x):
        x = self._branch(x, self.dcn, self.norm1, 'res_post_norm1', 'gamma1')
        return self._branch(x, self.mlp, self.norm2, 'res_post_norm2',
                            'gamma2')

    def forward(self, x):
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


class InternImageLevel(nn.Module):
    """One level (stage): blocks, optional norms, optional downsampling.

    :meth:`forward` returns ``(x, feature)``: the input of the next level
    (downsampled when ``downsample``) and this level's output feature before
    downsampling, both channels-last.

    Args:
        core_op (type): DCNv3 module class.
        channels (int): C of the level.
        depth (int): number of blocks.
        groups (int): DCNv3 groups.
        downsample (bool): end with a :class:`DownsampleLayer`. Default: True.
        mlp_ratio (float): see :class:`InternImageLayer`. Default: 4.
        drop (float): see :class:`InternImageLayer`. Default: 0.
        drop_path (float | list[float]): stochastic depth rate, one for all
            blocks or one per block. Default: 0.
        act_layer (str): see :class:`InternImageLayer`. Default: 'GELU'.
        norm_layer (str): norm of the DCNv3 offset branch and of the
            downsampling. Default: 'LN'.
        post_norm (bool): see :class:`InternImageLayer`; without it (or with
            ``center_feature_scale``) the level ends with a LayerNorm
            ``norm``. Default: False.
        offset_scale (float): DCNv3 offset scale. Default: 1.0.
        layer_scale (float, optional): see :class:`InternImageLayer`.
        with_cp (bool): gradient checkpointing per block. Default: False.
        dw_kernel_size (int, optional): see :class:`InternImageLayer`.
        post_norm_block_ids (list[int], optional): blocks followed by an extra
            LayerNorm (``post_norms``, InternImage-H/G level 2). Default: None.
        res_post_norm (bool): see :class:`InternImageLayer`. Default: False.
        center_feature_scale (bool): see :class:`InternImageLayer`.
            Default: False.
        remove_center (bool): see :class:`InternImageLayer`. Default: False.
    """

    def __init__(self, core_op, channels, depth, groups, downsample=True,
                 mlp_ratio=4., drop=0., drop_path=0., act_layer='GELU',
                 norm_layer='LN', post_norm=False, offset_scale=1.0,
                 layer_scale=None, with_cp=False, dw_kernel_size=None,
                 post_norm_block_ids=None, res_post_norm=False,
                 center_feature_scale=False, remove_center=False):
        super().__init__()
        self.channels = channels
        self.depth = depth
        if not isinstance(drop_path, (list, tuple)):
            drop_path = [drop_path] * depth
        self.blocks = nn.ModuleList([
            InternImageLayer(
                core_op, channels, groups, mlp_ratio=mlp_ratio, drop=drop,
                drop_path=drop_path[i], act_layer=act_layer,
                norm_layer=norm_layer, post_norm=post_norm,
                layer_scale=layer_scale, offset_scale=offset_scale,
                with_cp=with_cp, dw_kernel_size=dw_kernel_size,
                res_post_norm=res_post_norm,
                center_feature_scale=center_feature_scale,
                remove_center=remove_center) for i in range(depth)
        ])
        self.has_norm = not post_norm or center_feature_scale
        if self.has_norm:
            self.norm = build_norm_layer(channels, 'LN')
        self.post_norm_block_ids = (list(post_norm_block_ids)
                                    if post_norm_block_ids is not None else [])
        if post_norm_block_ids is not None:
            self.post_norms = nn.ModuleList(
                build_norm_layer(channels, 'LN')
                for _ in post_norm_block_ids)
        self.downsample = DownsampleLayer(
            channels, norm_layer=norm_layer) if downsample else None

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.post_norm_block_ids:
                x = self.post_norms[self.post_norm_block_ids.index(i)](x)
        if self.has_norm:
            x = self.norm(x)
        feature = x
        if self.downsample is not None:
            x = self.downsample(x)
        return x, feature


class _FromArch:
    """Default of the arguments that ``arch`` sets unless given explicitly."""

    def __repr__(self):
        return 'FROM_ARCH'


FROM_ARCH = _FromArch()


class InternImage(BaseModule):
    """InternImage: large-scale vision foundation models with deformable
    convolutions (https://arxiv.org/abs/2211.05778).

    A stem (stride 4), then ``len(depths)`` levels of DCNv3 blocks, each but
    the last ending with a stride-2 downsampling that doubles the channels.
    Returns one NCHW feature map per ``out_indices`` (the level's output
    before downsampling, as the official detection/segmentation backbone).

    ``arch`` picks a size from :attr:`arch_settings`; the architecture
    arguments marked *(arch)* below default to its values, and any of them
    given explicitly overrides it, so that an official config (which spells
    every value out) ports by changing only its syntax, e.g.
    ``dict(type='InternImage', channels=64, depths=[4, 4, 18, 4],
    groups=[4, 8, 16, 32], layer_scale=1.0, ...)``.

    Args:
        arch (str | dict): 't', 's', 'b', 'l', 'xl', 'h', 'g' (or 'tiny',
            'small', 'base', 'large', 'xlarge', 'huge', 'giant'), or a dict
            with at least ``channels``, ``depths`` and ``groups`` and any
            other *(arch)* argument. Default: 't'.
        core_op (str): 'DCNv3' (compiled kernel of the input's device, the
            pure-PyTorch reference where none was built) or 'DCNv3_pytorch'
            (always the reference). Default: 'DCNv3'.
        channels (int): *(arch)* channels of the first level; level i has
            ``channels * 2**i``.
        depths (Sequence[int]): *(arch)* blocks per level.
        groups (Sequence[int]): *(arch)* DCNv3 groups per level; level i's
            channels must be divisible by ``groups[i]``.
        mlp_ratio (float): MLP hidden features / channels. Default: 4.
        drop_rate (float): dropout after the stem and in the MLPs.
            Default: 0.
        drop_path_rate (float): stochastic depth rate (of the last block
            with 'linear'). Default: 0.2, as the official code.
        drop_path_type (str): 'linear' (0 to ``drop_path_rate`` over the
            blocks) or 'uniform'. Default: 'linear'.
        act_layer (str): 'GELU', 'ReLU' or 'SiLU'. Default: 'GELU'.
        norm_layer (str): norm of the stem, the downsamplings and the DCNv3
            offset branches, 'LN' or 'BN'. Default: 'LN'.
        layer_scale (float, optional): *(arch)* initial layer-scale value;
            None for no layer scale.
        offset_scale (float): *(arch)* DCNv3 offset scale.
        post_norm (bool): *(arch)* post-normalised blocks.
        with_cp (bool): gradient checkpointing per block (same results, less
            memory, more compute). Default: False.
        dw_kernel_size (int, optional): *(arch)* kernel of the DCNv3
            depthwise conv; None means 3.
        level2_post_norm (bool): *(arch)* extra LayerNorms after the blocks
            ``level2_post_norm_block_ids`` of level 2.
        level2_post_norm_block_ids (Sequence[int], optional): *(arch)* see
            ``level2_post_norm``.
        res_post_norm (bool): *(arch)* LayerNorm on each residual branch.
        center_feature_scale (bool): *(arch)* DCNv3 centre feature scale.
        remove_center (bool): DCNv3 without the kernel's centre point.
            Default: False.
        out_indices (int | Sequence[int]): levels whose features are
            returned (negative values count from the end). Default:
            (0, 1, 2, 3).
        frozen_stages (int): -1 freezes nothing, 0 the stem, k >= 1 the stem
            and levels 0..k-1 (with their downsampling): eval mode and
            ``requires_grad=False``. The official detection backbone freezes
            ``levels[:k]`` but never the stem. Default: -1.
        norm_eval (bool): keep the BatchNorm layers (``norm_layer='BN'``) in
            eval mode during training. Default: False.
        init_cfg (dict | list[dict], optional): mmengine initialisation;
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL, prefix=None,
            strict=False)`` loads an official ``{'model': state_dict}``
            checkpoint, its HuggingFace layout (``model.safetensors``,
            ``pytorch_model.bin`` or their folder) or an OpenMMLab one with
            ``state_dict`` and ``backbone.`` keys, and logs which keys were
            missing or unused (``strict=True``: raises instead; see
            :func:`internimage.checkpoint.load_backbone_weights`).
            Default: None (the official random initialisation).
    """

    #: Sizes of the paper (Table 1 and the official configs).
    arch_settings: Dict[str, dict] = {
        't': dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32]),
        's': dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40],
                  layer_scale=1e-5, post_norm=True),
        'b': dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56],
                  layer_scale=1e-5, post_norm=True),
        'l': dict(channels=160, depths=[5, 5, 22, 5], groups=[10, 20, 40, 80],
                  layer_scale=1e-5, offset_scale=2.0, post_norm=True),
        'xl': dict(channels=192, depths=[5, 5, 24, 5],
                   groups=[12, 24, 48, 96], layer_scale=1e-5,
                   offset_scale=2.0, post_norm=True),
        'h': dict(channels=320, depths=[6, 6, 32, 6], groups=[10, 20, 40, 80],
                  dw_kernel_size=5, res_post_norm=True, level2_post_norm=True,
                  level2_post_norm_block_ids=[5, 11, 17, 23, 29],
                  center_feature_scale=True),
        'g': dict(channels=512, depths=[2, 2, 48, 4], groups=[16, 32, 64, 128],
                  dw_kernel_size=5, post_norm=True, level2_post_norm=True,
                  level2_post_norm_block_ids=[5, 11, 17, 23, 29, 35, 41, 47],
                  center_feature_scale=True),
    }
    arch_aliases = {'tiny': 't', 'small': 's', 'base': 'b', 'large': 'l',
                    'xlarge': 'xl', 'huge': 'h', 'giant': 'g'}
    #: Values of the *(arch)* arguments that an arch leaves out (the official
    #: constructor's defaults).
    arch_defaults = dict(layer_scale=None, offset_scale=1.0, post_norm=False,
                         dw_kernel_size=None, level2_post_norm=False,
                         level2_post_norm_block_ids=None, res_post_norm=False,
                         center_feature_scale=False)
    arch_required = ('channels', 'depths', 'groups')

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 core_op: str = 'DCNv3',
                 channels=FROM_ARCH,
                 depths=FROM_ARCH,
                 groups=FROM_ARCH,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.2,
                 drop_path_type: str = 'linear',
                 act_layer: str = 'GELU',
                 norm_layer: str = 'LN',
                 layer_scale=FROM_ARCH,
                 offset_scale=FROM_ARCH,
                 post_norm=FROM_ARCH,
                 with_cp: bool = False,
                 dw_kernel_size=FROM_ARCH,
                 level2_post_norm=FROM_ARCH,
                 level2_post_norm_block_ids=FROM_ARCH,
                 res_post_norm=FROM_ARCH,
                 center_feature_scale=FROM_ARCH,
                 remove_center: bool = False,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        explicit = dict(
            channels=channels, depths=depths, groups=groups,
            layer_scale=layer_scale, offset_scale=offset_scale,
            post_norm=post_norm, dw_kernel_size=dw_kernel_size,
            level2_post_norm=level2_post_norm,
            level2_post_norm_block_ids=level2_post_norm_block_ids,
            res_post_norm=res_post_norm,
            center_feature_scale=center_feature_scale)
        cfg = self._resolve_arch(arch)
        cfg.update({k: v for k, v in explicit.items() if v is not FROM_ARCH})
        self.arch_cfg = cfg
        self._check_args(cfg, core_op, drop_path_type, norm_layer)

        self.core_op = core_op
        self.channels = cfg['channels']
        self.depths = list(cfg['depths'])
        self.groups = list(cfg['groups'])
        self.num_levels = len(self.depths)
        self.num_features = int(self.channels * 2**(self.num_levels - 1))
        self.mlp_ratio = mlp_ratio
        self.post_norm = cfg['post_norm']
        self.level2_post_norm_block_ids = cfg['level2_post_norm_block_ids']
        self.remove_center = remove_center
        self.out_indices = self._check_out_indices(out_indices)
        self.out_channels = [self.channels * 2**i for i in self.out_indices]
        if not -1 <= frozen_stages <= self.num_levels:
            raise ValueError(
                'InternImage: frozen_stages must be in '
                f'[-1, {self.num_levels}] (-1: none, 0: the stem, k: the '
                f'stem and levels 0..k-1), got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if cfg['res_post_norm'] and (cfg['post_norm']
                                     or cfg['layer_scale'] is not None):
            warnings.warn(
                'InternImage: res_post_norm has no effect with post_norm or '
                'layer_scale (as in the official code); its norms are built '
                'only so that checkpoints load')

        self.patch_embed = StemLayer(3, self.channels, act_layer=act_layer,
                                     norm_layer=norm_layer)
        self.pos_drop = nn.Dropout(p=drop_rate)
        total = sum(self.depths)
        if drop_path_type == 'linear':
            dpr = torch.linspace(0, drop_path_rate, total,
                                 device='cpu').tolist()
        else:
            dpr = [drop_path_rate] * total
        core = CORE_OPS[core_op]
        self.levels = nn.ModuleList()
        for i in range(self.num_levels):
            start = sum(self.depths[:i])
            self.levels.append(InternImageLevel(
                core, int(self.channels * 2**i), self.depths[i],
                self.groups[i], downsample=i < self.num_levels - 1,
                mlp_ratio=mlp_ratio, drop=drop_rate,
                drop_path=dpr[start:start + self.depths[i]],
                act_layer=act_layer, norm_layer=norm_layer,
                post_norm=cfg['post_norm'], offset_scale=cfg['offset_scale'],
                layer_scale=cfg['layer_scale'], with_cp=with_cp,
                dw_kernel_size=cfg['dw_kernel_size'],
                post_norm_block_ids=(cfg['level2_post_norm_block_ids']
                                     if cfg['level2_post_norm'] and i == 2
                                     else None),
                res_post_norm=cfg['res_post_norm'],
                center_feature_scale=cfg['center_feature_scale'],
                remove_center=remove_center))

        self.apply(self._init_linear_and_norm)
        for m in self.modules():
            if isinstance(m, DCNv3):  # DCNv3_pytorch included
                m._reset_parameters()
        self._freeze_stages()

    # ------------------------------------------------------------------ args
    @classmethod
    def _resolve_arch(cls, arch) -> dict:
        if isinstance(arch, str):
            key = cls.arch_aliases.get(arch.lower(), arch.lower())
            if key not in cls.arch_settings:
                raise ValueError(
                    f'InternImage: unknown arch {arch!r}; choose one of '
                    f'{sorted(cls.arch_settings)} (or '
                    f'{sorted(cls.arch_aliases)}) or pass a dict')
            arch = cls.arch_settings[key]
        elif not isinstance(arch, dict):
            raise TypeError(
                f'InternImage: arch must be a str or a dict, got '
                f'{type(arch).__name__}')
        else:
            missing = [k for k in cls.arch_required if k not in arch]
            unknown = sorted(set(arch) - set(cls.arch_required)
                             - set(cls.arch_defaults))
            if missing or unknown:
                raise ValueError(
                    'InternImage: an arch dict needs '
                    f'{list(cls.arch_required)} and may set '
                    f'{sorted(cls.arch_defaults)}; missing {missing}, '
                    f'unknown {unknown}')
        cfg = copy.deepcopy(cls.arch_defaults)
        cfg.update(copy.deepcopy(arch))
        return cfg

    @staticmethod
    def _check_args(cfg, core_op, drop_path_type, norm_layer):
        if core_op not in CORE_OPS:
            raise ValueError(f'InternImage: core_op must be one of '
                             f'{sorted(CORE_OPS)}, got {core_op!r}')
        if drop_path_type not in ('linear', 'uniform'):
            raise ValueError("InternImage: drop_path_type must be 'linear' or "
                             f"'uniform', got {drop_path_type!r}")
        if norm_layer not in ('LN', 'BN'):
            raise ValueError("InternImage: norm_layer must be 'LN' or 'BN', "
                             f'got {norm_layer!r}')
        channels, depths = cfg['channels'], cfg['depths']
        groups = cfg['groups']
        if not isinstance(channels, int) or channels < 2 or channels % 2:
            raise ValueError(
                f'InternImage: channels must be an even int >= 2, got '
                f'{channels!r}')
        if len(depths) == 0 or len(depths) != len(groups):
            raise ValueError(
                f'InternImage: depths and groups need one entry per level, '
                f'got len(depths)={len(depths)} and len(groups)={len(groups)}')
        for i, (depth, group) in enumerate(zip(depths, groups)):
            c = channels * 2**i
            if depth < 1 or group < 1:
                raise ValueError(
                    f'InternImage: level {i} needs depth >= 1 and groups >= 1,'
                    f' got depth={depth}, groups={group}')
            if c % group:
                raise ValueError(
                    f'InternImage: level {i} has {c} channels (channels * 2**'
                    f'{i}), not divisible by groups[{i}]={group}')
        dw = cfg['dw_kernel_size']
        if dw is not None and (dw < 1 or dw % 2 == 0):
            raise ValueError('InternImage: dw_kernel_size must be an odd '
                             f'positive int or None, got {dw!r}')
        if cfg['level2_post_norm']:
            ids = cfg['level2_post_norm_block_ids']
            if len(depths) < 3 or not ids:
                raise ValueError(
                    'InternImage: level2_post_norm needs a level 2 and a '
                    'non-empty level2_post_norm_block_ids')
            bad = [b for b in ids if not 0 <= b < depths[2]]
            if bad:
                raise ValueError(
                    f'InternImage: level2_post_norm_block_ids {bad} are not '
                    f'blocks of level 2 (depth {depths[2]})')

    def _check_out_indices(self, out_indices) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        result = []
        for idx in out_indices:
            norm = idx + self.num_levels if idx < 0 else idx
            if not 0 <= norm < self.num_levels:
                raise ValueError(
                    f'InternImage: out_indices {tuple(out_indices)} must be '
                    f'levels of 0..{self.num_levels - 1} (or negative)')
            result.append(norm)
        if len(set(result)) != len(result) or result != sorted(result):
            raise ValueError(
                f'InternImage: out_indices must be increasing and distinct, '
                f'got {tuple(out_indices)}')
        return tuple(result)

    # ------------------------------------------------------- init / loading
    @staticmethod
    def _init_linear_and_norm(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def init_weights(self):
        """Apply ``init_cfg``; a ``Pretrained`` entry goes through
        :func:`internimage.checkpoint.load_backbone_weights`, which reads the
        official ``{'model': ...}`` layout and reports unused keys."""
        cfgs = self.init_cfg if isinstance(self.init_cfg,
                                           (list, tuple)) else [self.init_cfg]
        pretrained = [c for c in cfgs if c and c.get('type') == 'Pretrained']
        if not pretrained:
            return super().init_weights()
        others = [c for c in cfgs if c and c.get('type') != 'Pretrained']
        original, self.init_cfg = self.init_cfg, others or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        for cfg in pretrained:
            unknown = set(cfg) - {'type', 'checkpoint', 'prefix',
                                  'map_location', 'strict'}
            if unknown or 'checkpoint' not in cfg:
                raise ValueError(
                    'InternImage: init_cfg Pretrained takes checkpoint and '
                    'optionally prefix, map_location and strict, got '
                    f'{dict(cfg)}')
            load_backbone_weights(self, cfg['checkpoint'],
                                  prefix=cfg.get('prefix'),
                                  map_location=cfg.get('map_location', 'cpu'),
                                  strict=cfg.get('strict', False))

    # --------------------------------------------------------------- train
    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed, *self.levels[:self.frozen_stages]]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> tuple of (N, C_i, H / 2**(i+2), W / 2**(i+2)),
        one per ``out_indices``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError('InternImage: expected images (N, 3, H, W), got '
                             f'shape {tuple(x.shape)}')
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for i, level in enumerate(self.levels):
            x, feature = level(x)
            if i in self.out_indices:
                outs.append(feature.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
