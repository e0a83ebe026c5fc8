# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official-format InternImage checkpoints and an independent forward pass.

Written from the official code's structure (OpenGVLab/InternImage,
``classification/models/intern_image.py``), not from this project's modules,
so that tests catch a renamed parameter or a changed computation:

- :func:`official_state_dict` lists the parameter names and shapes that the
  official classifier (or backbone) has, filled with random values;
- :func:`reference_features` / :func:`reference_logits` compute the official
  forward pass functionally from such a state dict.
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from ops_dcnv3.reference import dcnv3_core_pytorch

#: A tiny configuration of each official flavour (keys as the official
#: constructor's arguments).
TINY = {
    # InternImage-T: pre-norm, no layer scale.
    't': dict(channels=8, depths=[1, 1, 2, 1], groups=[2, 2, 4, 4]),
    # InternImage-S/B/L/XL: post-norm and layer scale.
    's': dict(channels=8, depths=[1, 1, 2, 1], groups=[2, 2, 4, 4],
              post_norm=True, layer_scale=1e-5, offset_scale=2.0),
    # InternImage-H: res_post_norm, level-2 post norms, centre feature scale.
    'h': dict(channels=8, depths=[1, 1, 3, 1], groups=[2, 2, 4, 4],
              dw_kernel_size=5, res_post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=[0, 2], center_feature_scale=True),
    # InternImage-G: post-norm with centre feature scale (keeps level norms).
    'g': dict(channels=8, depths=[1, 1, 3, 1], groups=[2, 2, 4, 4],
              dw_kernel_size=5, post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=[1], center_feature_scale=True),
}
#: The official classifiers, from classification/configs/*.yaml (MODEL.
#: INTERN_IMAGE) of the official repository, with their resolution.
OFFICIAL = {
    't': dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32]),
    's': dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40],
              layer_scale=1e-5, post_norm=True),
    'b': dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56],
              layer_scale=1e-5, post_norm=True),
    'l': dict(channels=160, depths=[5, 5, 22, 5], groups=[10, 20, 40, 80],
              layer_scale=1e-5, offset_scale=2.0, post_norm=True),
    'xl': dict(channels=192, depths=[5, 5, 24, 5], groups=[12, 24, 48, 96],
               layer_scale=1e-5, offset_scale=2.0, post_norm=True),
    'h': dict(channels=320, depths=[6, 6, 32, 6], groups=[10, 20, 40, 80],
              dw_kernel_size=5, res_post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=[5, 11, 17, 23, 29],
              center_feature_scale=True, use_clip_projector=True),
    'g': dict(channels=512, depths=[2, 2, 48, 4], groups=[16, 32, 64, 128],
              dw_kernel_size=5, post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=[5, 11, 17, 23, 29, 35, 41, 47],
              center_feature_scale=True, use_clip_projector=True),
}
#: Attention-pooling head dims for tiny H/G classifiers (official: 1024, 16,
#: 768).
TINY_CLIP = dict(pretrain_embed_dim=16, attnpool_num_heads=2,
                 clip_embed_dim=12)


def _norm(sd, prefix, dim, kind, index):
    """Official ``build_norm_layer`` as a Sequential: the norm's index in it
    is ``index`` for LN (after a layout change or not), 0 for BN."""
    if kind == 'LN':
        sd[f'{prefix}.{index}.weight'] = (dim, )
        sd[f'{prefix}.{index}.bias'] = (dim, )
    else:
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            sd[f'{prefix}.0.{name}'] = (dim, )
        sd[f'{prefix}.0.num_batches_tracked'] = ()


def official_shapes(channels, depths, groups, post_norm=False,
                    layer_scale=None, offset_scale=1.0, dw_kernel_size=None,
                    res_post_norm=False, level2_post_norm=False,
                    level2_post_norm_block_ids=None,
                    center_feature_scale=False, remove_center=False,
                    norm_layer='LN', mlp_ratio=4., num_classes=None,
                    cls_scale=1.5, use_clip_projector=False,
                    pretrain_embed_dim=1024, attnpool_num_heads=16,
                    clip_embed_dim=768):
    """Name -> shape of the official model, in the official order.

    ``num_classes=None`` gives the backbone alone.
    """
    del offset_scale, attnpool_num_heads  # no parameters
    sd = OrderedDict()
    c = channels
    sd['patch_embed.conv1.weight'] = (c // 2, 3, 3, 3)
    sd['patch_embed.conv1.bias'] = (c // 2, )
    # channels_first -> channels_first: LN sits between two permutes.
    _norm(sd, 'patch_embed.norm1', c // 2, norm_layer, 1)
    sd['patch_embed.conv2.weight'] = (c, c // 2, 3, 3)
    sd['patch_embed.conv2.bias'] = (c, )
    _norm(sd, 'patch_embed.norm2', c, norm_layer, 1)
    points = 9 - int(remove_center)
    k = dw_kernel_size or 3
    for i, (depth, g) in enumerate(zip(depths, groups)):
        ci = c * 2**i
        for j in range(depth):
            b = f'levels.{i}.blocks.{j}'
            sd[f'{b}.norm1.0.weight'] = (ci, )
            sd[f'{b}.norm1.0.bias'] = (ci, )
            sd[f'{b}.dcn.dw_conv.0.weight'] = (ci, 1, k, k)
            sd[f'{b}.dcn.dw_conv.0.bias'] = (ci, )
            _norm(sd, f'{b}.dcn.dw_conv.1', ci, norm_layer, 1)
            sd[f'{b}.dcn.offset.weight'] = (g * points * 2, ci)
            sd[f'{b}.dcn.offset.bias'] = (g * points * 2, )
            sd[f'{b}.dcn.mask.weight'] = (g * points, ci)
            sd[f'{b}.dcn.mask.bias'] = (g * points, )
            sd[f'{b}.dcn.input_proj.weight'] = (ci, ci)
            sd[f'{b}.dcn.input_proj.bias'] = (ci, )
            sd[f'{b}.dcn.output_proj.weight'] = (ci, ci)
            sd[f'{b}.dcn.output_proj.bias'] = (ci, )
            if center_feature_scale:
                sd[f'{b}.dcn.center_feature_scale_proj_weight'] = (g, ci)
                sd[f'{b}.dcn.center_feature_scale_proj_bias'] = (g, )
            sd[f'{b}.norm2.0.weight'] = (ci, )
            sd[f'{b}.norm2.0.bias'] = (ci, )
            hidden = int(ci * mlp_ratio)
            sd[f'{b}.mlp.fc1.weight'] = (hidden, ci)
            sd[f'{b}.mlp.fc1.bias'] = (hidden, )
            sd[f'{b}.mlp.fc2.weight'] = (ci, hidden)
            sd[f'{b}.mlp.fc2.bias'] = (ci, )
            if layer_scale is not None:
                sd[f'{b}.gamma1'] = (ci, )
                sd[f'{b}.gamma2'] = (ci, )
            if res_post_norm:
                for n in ('res_post_norm1', 'res_post_norm2'):
                    sd[f'{b}.{n}.0.weight'] = (ci, )
                    sd[f'{b}.{n}.0.bias'] = (ci, )
        lv = f'levels.{i}'
        if not post_norm or center_feature_scale:
            sd[f'{lv}.norm.0.weight'] = (ci, )
            sd[f'{lv}.norm.0.bias'] = (ci, )
        if level2_post_norm and i == 2:
            for n in range(len(level2_post_norm_block_ids)):
                sd[f'{lv}.post_norms.{n}.0.weight'] = (ci, )
                sd[f'{lv}.post_norms.{n}.0.bias'] = (ci, )
        if i < len(depths) - 1:
            sd[f'{lv}.downsample.conv.weight'] = (2 * ci, ci, 3, 3)
            _norm(sd, f'{lv}.downsample.norm', 2 * ci, norm_layer, 1)
    if num_classes is None:
        return sd
    nf = c * 2**(len(depths) - 1)
    if not use_clip_projector:
        hid = int(nf * cls_scale)
        sd['conv_head.0.weight'] = (hid, nf, 1, 1)
        _norm(sd, 'conv_head.1', hid, 'BN', 0)
        sd['head.weight'] = (num_classes, hid)
        sd['head.bias'] = (num_classes, )
        return sd
    e = pretrain_embed_dim
    sd['dcnv3_head_x4.0.weight'] = (e * 4, nf, 1, 1)
    sd['dcnv3_head_x4.0.bias'] = (e * 4, )
    sd['dcnv3_head_x3.weight'] = (e, nf // 2, 1, 1)
    sd['dcnv3_head_x3.bias'] = (e, )
    for n in ('norm1_q', 'norm1_k', 'norm1_v'):
        sd[f'clip_projector.{n}.0.weight'] = (e, )
        sd[f'clip_projector.{n}.0.bias'] = (e, )
    for n in ('q', 'k', 'v'):
        sd[f'clip_projector.cross_dcn.{n}_bias'] = (e, )
        sd[f'clip_projector.cross_dcn.{n}.weight'] = (e, e)
    sd['clip_projector.cross_dcn.proj.weight'] = (clip_embed_dim, e)
    sd['clip_projector.cross_dcn.proj.bias'] = (clip_embed_dim, )
    sd['fc_norm.0.weight'] = (clip_embed_dim, )
    sd['fc_norm.0.bias'] = (clip_embed_dim, )
    sd['head.weight'] = (num_classes, clip_embed_dim)
    sd['head.bias'] = (num_classes, )
    return sd


def official_state_dict(seed=0, dtype=torch.float64, **cfg):
    """Random official-format weights for :func:`official_shapes`."""
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape in official_shapes(**cfg).items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(7)
        elif name.endswith('running_var'):
            sd[name] = torch.rand(shape, generator=gen, dtype=dtype) + 0.5
        elif len(shape) == 1 and ('norm' in name or 'gamma' in name):
            sd[name] = 1 + 0.2 * torch.randn(shape, generator=gen, dtype=dtype)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 4
            sd[name] = torch.randn(shape, generator=gen,
                                   dtype=dtype) / math.sqrt(fan_in)
    return sd


# ------------------------------------------------------------ the forward
def _ln(sd, prefix, x):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + '.weight'],
                        sd[prefix + '.bias'], eps=1e-6)


def _bn(sd, prefix, x):
    return F.batch_norm(x, sd[prefix + '.running_mean'],
                        sd[prefix + '.running_var'], sd[prefix + '.weight'],
                        sd[prefix + '.bias'], False, 0., 1e-5)


def _norm_nhwc(sd, prefix, x, kind):
    """Norm of a channels-last tensor, returned channels-last."""
    if kind == 'LN':
        return _ln(sd, prefix + '.1', x)
    return _bn(sd, prefix + '.0', x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _linear(sd, prefix, x):
    return F.linear(x, sd[prefix + '.weight'], sd[prefix + '.bias'])


def _dcn(sd, p, x, group, cfg):
    n, h, w, c = x.shape
    k = cfg.get('dw_kernel_size') or 3
    values = _linear(sd, p + '.input_proj', x)
    feat = F.conv2d(x.permute(0, 3, 1, 2), sd[p + '.dw_conv.0.weight'],
                    sd[p + '.dw_conv.0.bias'], padding=(k - 1) // 2, groups=c)
    feat = F.gelu(_norm_nhwc(sd, p + '.dw_conv.1',
                             feat.permute(0, 2, 3, 1),
                             cfg.get('norm_layer', 'LN')))
    offset = _linear(sd, p + '.offset', feat)
    mask = _linear(sd, p + '.mask', feat).reshape(n, h, w, group, -1)
    mask = mask.softmax(-1).reshape(n, h, w, -1)
    out = dcnv3_core_pytorch(values, offset, mask, 3, 3, 1, 1, 1, 1, 1, 1,
                             group, c // group, cfg.get('offset_scale', 1.0),
                             cfg.get('remove_center', False))
    if cfg.get('center_feature_scale'):
        gate = torch.sigmoid(F.linear(
            feat, sd[p + '.center_feature_scale_proj_weight'],
            sd[p + '.center_feature_scale_proj_bias']))
        gate = gate.repeat_interleave(c // group, dim=-1)
        out = out * (1 - gate) + values * gate
    return _linear(sd, p + '.output_proj', out)


def _block(sd, b, x, group, cfg):
    """The official ``InternImageLayer._inner_forward``, branch by branch."""
    dcn = lambda t: _dcn(sd, b + '.dcn', t, group, cfg)  # noqa: E731
    mlp = lambda t: _linear(sd, b + '.mlp.fc2', F.gelu(  # noqa: E731
        _linear(sd, b + '.mlp.fc1', t)))
    n1 = lambda t: _ln(sd, b + '.norm1.0', t)  # noqa: E731
    n2 = lambda t: _ln(sd, b + '.norm2.0', t)  # noqa: E731
    if cfg.get('layer_scale') is None:
        if cfg.get('post_norm'):
            x = x + n1(dcn(x))
            x = x + n2(mlp(x))
        elif cfg.get('res_post_norm'):
            x = x + _ln(sd, b + '.res_post_norm1.0', dcn(n1(x)))
            x = x + _ln(sd, b + '.res_post_norm2.0', mlp(n2(x)))
        else:
            x = x + dcn(n1(x))
            x = x + mlp(n2(x))
        return x
    g1, g2 = sd[b + '.gamma1'], sd[b + '.gamma2']
    if cfg.get('post_norm'):
        x = x + g1 * n1(dcn(x))
        x = x + g2 * n2(mlp(x))
    else:
        x = x + g1 * dcn(n1(x))
        x = x + g2 * mlp(n2(x))
    return x


def reference_features(sd, x, **cfg):
    """Channels-last output of every level, before its downsampling."""
    kind = cfg.get('norm_layer', 'LN')
    x = F.conv2d(x, sd['patch_embed.conv1.weight'],
                 sd['patch_embed.conv1.bias'], stride=2, padding=1)
    x = _norm_nhwc(sd, 'patch_embed.norm1', x.permute(0, 2, 3, 1), kind)
    x = F.gelu(x).permute(0, 3, 1, 2)
    x = F.conv2d(x, sd['patch_embed.conv2.weight'],
                 sd['patch_embed.conv2.bias'], stride=2, padding=1)
    x = _norm_nhwc(sd, 'patch_embed.norm2', x.permute(0, 2, 3, 1), kind)
    feats = []
    depths = cfg['depths']
    ids = (cfg.get('level2_post_norm_block_ids') or []
           if cfg.get('level2_post_norm') else [])
    for i, depth in enumerate(depths):
        lv = f'levels.{i}'
        for j in range(depth):
            x = _block(sd, f'{lv}.blocks.{j}', x, cfg['groups'][i], cfg)
            if i == 2 and j in ids:
                x = _ln(sd, f'{lv}.post_norms.{ids.index(j)}.0', x)
        if not cfg.get('post_norm') or cfg.get('center_feature_scale'):
            x = _ln(sd, f'{lv}.norm.0', x)
        feats.append(x)
        if i < len(depths) - 1:
            x = F.conv2d(x.permute(0, 3, 1, 2),
                         sd[f'{lv}.downsample.conv.weight'], stride=2,
                         padding=1)
            x = _norm_nhwc(sd, f'{lv}.downsample.norm',
                           x.permute(0, 2, 3, 1), kind)
    return feats


def reference_logits(sd, x, use_clip_projector=False,
                     attnpool_num_heads=16, **cfg):
    """The official classifier's ``forward`` (inference mode)."""
    cfg = {k: v for k, v in cfg.items()
           if k not in ('pretrain_embed_dim', 'clip_embed_dim', 'cls_scale',
                        'num_classes')}
    feats = reference_features(sd, x, **cfg)
    if not use_clip_projector:
        y = F.conv2d(feats[-1].permute(0, 3, 1, 2), sd['conv_head.0.weight'])
        y = F.gelu(_bn(sd, 'conv_head.1.0', y))
        y = y.mean((2, 3))
        return _linear(sd, 'head', y)
    x4 = F.conv2d(feats[-1].permute(0, 3, 1, 2), sd['dcnv3_head_x4.0.weight'],
                  sd['dcnv3_head_x4.0.bias'])
    x4 = F.pixel_shuffle(x4, 2)
    x3 = F.conv2d(feats[-2].permute(0, 3, 1, 2), sd['dcnv3_head_x3.weight'],
                  sd['dcnv3_head_x3.bias'])
    tokens = (x4 + x3).flatten(2).transpose(1, 2)  # (N, L, E)
    p = 'clip_projector'
    q = _ln(sd, f'{p}.norm1_q.0', tokens.mean(1, keepdim=True))
    k = _ln(sd, f'{p}.norm1_k.0', tokens)
    v = _ln(sd, f'{p}.norm1_v.0', tokens)
    a = f'{p}.cross_dcn'
    heads = attnpool_num_heads
    n, length, e = tokens.shape

    def split(t, name):
        t = F.linear(t, sd[f'{a}.{name}.weight'], sd[f'{a}.{name}_bias'])
        return t.reshape(n, t.shape[1], heads, e // heads).transpose(1, 2)

    qh, kh, vh = split(q, 'q'), split(k, 'k'), split(v, 'v')
    attn = (qh * (e // heads)**-0.5) @ kh.transpose(-2, -1)
    y = (attn.softmax(-1) @ vh).transpose(1, 2).reshape(n, 1, e)
    y = _linear(sd, f'{a}.proj', y).squeeze(1)
    y = _ln(sd, 'fc_norm.0', y)
    return _linear(sd, 'head', y)
