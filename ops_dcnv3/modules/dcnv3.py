# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The DCNv3 module of InternImage, with the official constructor arguments
and parameter names so that released weights load unchanged."""
import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dcnv3
from ..reference import dcnv3_core_pytorch
from .linear import linear


class to_channels_first(nn.Module):
    """(N, H, W, C) -> (N, C, H, W)."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class to_channels_last(nn.Module):
    """(N, C, H, W) -> (N, H, W, C)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


def build_norm_layer(dim, norm_layer, in_format='channels_last',
                     out_format='channels_last', eps=1e-6):
    """'LN' (LayerNorm over channels) or 'BN' (BatchNorm2d), wrapped with the
    layout changes the official code uses, so that parameter paths match."""
    layers = []
    if norm_layer == 'BN':
        if in_format == 'channels_last':
            layers.append(to_channels_first())
        layers.append(nn.BatchNorm2d(dim))
        if out_format == 'channels_last':
            layers.append(to_channels_last())
    elif norm_layer == 'LN':
        if in_format == 'channels_first':
            layers.append(to_channels_last())
        layers.append(nn.LayerNorm(dim, eps=eps))
        if out_format == 'channels_first':
            layers.append(to_channels_first())
    else:
        raise ValueError(f"norm_layer must be 'LN' or 'BN', got {norm_layer!r}")
    return nn.Sequential(*layers)


def build_act_layer(act_layer):
    """'GELU', 'ReLU' or 'SiLU'."""
    layers = {'GELU': nn.GELU, 'ReLU': nn.ReLU, 'SiLU': nn.SiLU}
    if act_layer not in layers:
        raise ValueError(
            f'act_layer must be one of {sorted(layers)}, got {act_layer!r}')
    return layers[act_layer]()


class CenterFeatureScaleModule(nn.Module):
    """Per-group sigmoid gate used by ``center_feature_scale``."""

    def forward(self, query, center_feature_scale_proj_weight,
                center_feature_scale_proj_bias):
        return F.linear(query, center_feature_scale_proj_weight,
                        center_feature_scale_proj_bias).sigmoid()


class DCNv3(nn.Module):
    """DCNv3 block: input projection, deformable sampling, output projection.

    Works on channels-last tensors (N, H, W, C). The core runs on the
    compiled kernel of the input's device (see :func:`ops_dcnv3.dcnv3`).

    Args:
        channels (int): C, divisible by ``group``. Default: 64.
        kernel_size (int): sampling grid size. Default: 3.
        dw_kernel_size (int, optional): kernel of the depthwise conv that
            predicts offsets and masks; ``None`` means ``kernel_size``.
        stride (int): Default: 1.
        pad (int): Default: 1.
        dilation (int): Default: 1.
        group (int): G. Default: 4.
        offset_scale (float): scale of the grid and the offsets. Default: 1.0.
        act_layer (str): activation after the depthwise conv. Default: 'GELU'.
        norm_layer (str): norm after the depthwise conv. Default: 'LN'.
        center_feature_scale (bool): blend the output with the projected
            input through a learned per-group gate. Default: False.
        remove_center (bool): drop the kernel's centre point (odd square
            kernels only). Default: False.
    """

    def __init__(self, channels=64, kernel_size=3, dw_kernel_size=None,
                 stride=1, pad=1, dilation=1, group=4, offset_scale=1.0,
                 act_layer='GELU', norm_layer='LN',
                 center_feature_scale=False, remove_center=False):
        super().__init__()
        if channels % group != 0:
            raise ValueError(
                f'DCNv3: channels ({channels}) must be divisible by group ({group})')
        if remove_center and kernel_size % 2 == 0:
            raise ValueError(
                f'DCNv3: remove_center needs an odd kernel_size, got {kernel_size}')
        dw_kernel_size = kernel_size if dw_kernel_size is None else dw_kernel_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.dw_kernel_size = dw_kernel_size
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.group = group
        self.group_channels = channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        points = kernel_size * kernel_size - self.remove_center

        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=dw_kernel_size,
                      stride=1, padding=(dw_kernel_size - 1) // 2,
                      groups=channels),
            build_norm_layer(channels, norm_layer, 'channels_first',
                             'channels_last'),
            build_act_layer(act_layer))
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self._reset_parameters()
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(
                torch.zeros((group, channels)))
            self.center_feature_scale_proj_bias = nn.Parameter(
                torch.zeros(group))
            self.center_feature_scale_module = CenterFeatureScaleModule()

    def _reset_parameters(self):
        nn.init.constant_(self.offset.weight, 0.)
        nn.init.constant_(self.offset.bias, 0.)
        nn.init.constant_(self.mask.weight, 0.)
        nn.init.constant_(self.mask.bias, 0.)
        nn.init.xavier_uniform_(self.input_proj.weight)
        nn.init.constant_(self.input_proj.bias, 0.)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.)

    def _core(self, x, offset, mask_logits):
        """The op on values, offsets and mask logits (softmaxed inside)."""
        return dcnv3(x, offset, mask_logits, self.kernel_size,
                     self.kernel_size, self.stride, self.stride, self.pad,
                     self.pad, self.dilation, self.dilation, self.group,
                     self.group_channels, self.offset_scale, 256,
                     self.remove_center, mask_softmax=True)

    def forward(self, input):
        """(N, H, W, C) -> (N, H_out, W_out, C)."""
        if input.dim() != 4 or input.shape[-1] != self.channels:
            raise ValueError(
                f'{type(self).__name__}: input must be 4-D channels-last '
                f'(N, H, W, {self.channels}), got shape {tuple(input.shape)}')
        x = linear(input, self.input_proj)
        x_proj = x
        x1 = self.dw_conv(input.permute(0, 3, 1, 2))
        offset = linear(x1, self.offset)
        mask_logits = linear(x1, self.mask)
        x = self._core(x, offset.type(x.dtype), mask_logits.type(x.dtype))
        if self.center_feature_scale:
            scale = self.center_feature_scale_module(
                x1, self.center_feature_scale_proj_weight,
                self.center_feature_scale_proj_bias)
            scale = scale[..., None].expand(
                *scale.shape, self.group_channels).flatten(-2)
            x = x * (1 - scale) + x_proj * scale
        return linear(x, self.output_proj)


class DCNv3_pytorch(DCNv3):
    """:class:`DCNv3` with the pure-PyTorch core on every device."""

    def _core(self, x, offset, mask_logits):
        return dcnv3_core_pytorch(x, offset, mask_logits, self.kernel_size,
                                  self.kernel_size, self.stride, self.stride,
                                  self.pad, self.pad, self.dilation,
                                  self.dilation, self.group,
                                  self.group_channels, self.offset_scale,
                                  self.remove_center, mask_softmax=True)
