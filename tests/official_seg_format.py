# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official-format InternImage segmentation checkpoints (mmseg 0.x).

Written from the official code's structure (OpenGVLab/InternImage,
``segmentation/``: mmseg 0.27 UperNet with ``UPerHead`` + ``FCNHead``, and
``mmseg_custom`` Mask2Former whose head uses mmcv 1.x transformer layers),
not from mmseg 1.x, so that tests catch a wrong mapping: the names and
shapes of the official modules, filled with random values.
"""
import math
from collections import OrderedDict

import torch

from official_format import official_shapes


def _conv_module(sd, prefix, out_c, in_c, k, norm='bn', bias=False):
    """mmcv ``ConvModule``: ``conv`` (+ bias without a norm) and ``bn`` /
    ``gn``."""
    sd[f'{prefix}.conv.weight'] = (out_c, in_c, k, k)
    if bias:
        sd[f'{prefix}.conv.bias'] = (out_c, )
    if norm == 'bn':
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            sd[f'{prefix}.bn.{name}'] = (out_c, )
        sd[f'{prefix}.bn.num_batches_tracked'] = ()
    elif norm == 'gn':
        sd[f'{prefix}.gn.weight'] = (out_c, )
        sd[f'{prefix}.gn.bias'] = (out_c, )


def _linear(sd, prefix, out_f, in_f):
    sd[f'{prefix}.weight'] = (out_f, in_f)
    sd[f'{prefix}.bias'] = (out_f, )


def _backbone(sd, **arch):
    for name, shape in official_shapes(**arch).items():
        sd[f'backbone.{name}'] = shape


def upernet_shapes(arch, num_classes, channels=512, aux_channels=256,
                   pool_scales=(1, 2, 3, 6)):
    """Official UperNet: backbone, ``decode_head`` (UPerHead) and
    ``auxiliary_head`` (FCNHead on level 2), SyncBN norms."""
    sd = OrderedDict()
    _backbone(sd, **arch)
    ins = [arch['channels'] * 2**i for i in range(len(arch['depths']))]
    h = 'decode_head'
    sd[f'{h}.conv_seg.weight'] = (num_classes, channels, 1, 1)
    sd[f'{h}.conv_seg.bias'] = (num_classes, )
    for i in range(len(pool_scales)):
        _conv_module(sd, f'{h}.psp_modules.{i}.1', channels, ins[-1], 1)
    _conv_module(sd, f'{h}.bottleneck',
                 channels, ins[-1] + len(pool_scales) * channels, 3)
    for i, c in enumerate(ins[:-1]):
        _conv_module(sd, f'{h}.lateral_convs.{i}', channels, c, 1)
    for i in range(len(ins) - 1):
        _conv_module(sd, f'{h}.fpn_convs.{i}', channels, channels, 3)
    _conv_module(sd, f'{h}.fpn_bottleneck', channels, len(ins) * channels, 3)
    a = 'auxiliary_head'
    sd[f'{a}.conv_seg.weight'] = (num_classes, aux_channels, 1, 1)
    sd[f'{a}.conv_seg.bias'] = (num_classes, )
    _conv_module(sd, f'{a}.convs.0', aux_channels, ins[2], 3)
    return sd


def mask2former_shapes(arch, num_classes, feat=32, heads=4, ffn=64,
                       queries=10, enc_layers=2, dec_layers=3, levels=3,
                       points=4):
    """Official Mask2Former: backbone and the mmseg_custom
    ``Mask2FormerHead`` (mmcv 1.x ``BaseTransformerLayer`` names:
    ``attentions.i``, ``ffns.0.layers``, ``norms.i``)."""
    sd = OrderedDict()
    _backbone(sd, **arch)
    ins = [arch['channels'] * 2**i for i in range(len(arch['depths']))]
    p = 'decode_head.pixel_decoder'
    for i in range(levels):  # from the lowest resolution
        _conv_module(sd, f'{p}.input_convs.{i}', feat, ins[-1 - i], 1,
                     norm='gn', bias=True)
    for layer in range(enc_layers):
        e = f'{p}.encoder.layers.{layer}'
        _linear(sd, f'{e}.attentions.0.sampling_offsets',
                heads * levels * points * 2, feat)
        _linear(sd, f'{e}.attentions.0.attention_weights',
                heads * levels * points, feat)
        _linear(sd, f'{e}.attentions.0.value_proj', feat, feat)
        _linear(sd, f'{e}.attentions.0.output_proj', feat, feat)
        _linear(sd, f'{e}.ffns.0.layers.0.0', ffn, feat)
        _linear(sd, f'{e}.ffns.0.layers.1', feat, ffn)
        for n in range(2):
            sd[f'{e}.norms.{n}.weight'] = (feat, )
            sd[f'{e}.norms.{n}.bias'] = (feat, )
    sd[f'{p}.level_encoding.weight'] = (levels, feat)
    for i in range(len(ins) - levels):
        _conv_module(sd, f'{p}.lateral_convs.{i}', feat, ins[i], 1,
                     norm='gn')
        _conv_module(sd, f'{p}.output_convs.{i}', feat, feat, 3, norm='gn')
    sd[f'{p}.mask_feature.weight'] = (feat, feat, 1, 1)
    sd[f'{p}.mask_feature.bias'] = (feat, )
    t = 'decode_head.transformer_decoder'
    for layer in range(dec_layers):
        d = f'{t}.layers.{layer}'
        for a in range(2):  # 0: cross-attention, 1: self-attention
            sd[f'{d}.attentions.{a}.attn.in_proj_weight'] = (3 * feat, feat)
            sd[f'{d}.attentions.{a}.attn.in_proj_bias'] = (3 * feat, )
            _linear(sd, f'{d}.attentions.{a}.attn.out_proj', feat, feat)
        _linear(sd, f'{d}.ffns.0.layers.0.0', ffn, feat)
        _linear(sd, f'{d}.ffns.0.layers.1', feat, ffn)
        for n in range(3):
            sd[f'{d}.norms.{n}.weight'] = (feat, )
            sd[f'{d}.norms.{n}.bias'] = (feat, )
    sd[f'{t}.post_norm.weight'] = (feat, )
    sd[f'{t}.post_norm.bias'] = (feat, )
    sd['decode_head.query_embed.weight'] = (queries, feat)
    sd['decode_head.query_feat.weight'] = (queries, feat)
    sd['decode_head.level_embed.weight'] = (levels, feat)
    _linear(sd, 'decode_head.cls_embed', num_classes + 1, feat)
    for i in (0, 2, 4):
        _linear(sd, f'decode_head.mask_embed.{i}', feat, feat)
    return sd


def random_state_dict(shapes, seed=0, dtype=torch.float32):
    """Random values for a name -> shape table (BN statistics valid)."""
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(11)
        elif name.endswith('running_var'):
            sd[name] = torch.rand(shape, generator=gen, dtype=dtype) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 4
            sd[name] = torch.randn(shape, generator=gen,
                                   dtype=dtype) / math.sqrt(fan_in)
    return sd
