# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official-format (mmdet 2.28, OpenGVLab/InternImage detection/) detector
checkpoints with random weights, written from the official module names.

- Mask R-CNN / Cascade Mask R-CNN: mmdet 2's ``FPN`` (``lateral_convs``,
  ``fpn_convs``), ``RPNHead`` (``rpn_conv``, ``rpn_cls``, ``rpn_reg``),
  ``Shared2FCBBoxHead`` / ``ConvFCBBoxHead`` (``shared_convs.k.{conv,bn}``,
  ``shared_fcs``, ``fc_cls``, ``fc_reg``), ``FCNMaskHead`` (``convs``,
  ``upsample``, ``conv_logits``).
- DINO: the official ``DINOHead`` with its ``DinoTransformer``
  (``bbox_head.transformer.{encoder,decoder}.layers.i.{attentions,ffns,
  norms}``, ``level_embeds``, ``enc_output``, ``enc_output_norm``,
  ``query_embed``, ``decoder.ref_point_head.{0,2}``, ``decoder.norm``),
  ``bbox_head.label_embedding``, ``cls_branches``, ``reg_branches.i.{0,2,4}``
  and mmdet 2's ``ChannelMapper`` (``convs.i.{conv,gn}``, ``extra_convs``).
"""
from collections import OrderedDict

import torch
from official_format import official_shapes


def _conv(sd, prefix, cout, cin, k, bias=True):
    sd[f'{prefix}.weight'] = (cout, cin, k, k)
    if bias:
        sd[f'{prefix}.bias'] = (cout, )


def _linear(sd, prefix, cout, cin):
    sd[f'{prefix}.weight'] = (cout, cin)
    sd[f'{prefix}.bias'] = (cout, )


def _norm1d(sd, prefix, c, bn=False):
    sd[f'{prefix}.weight'] = (c, )
    sd[f'{prefix}.bias'] = (c, )
    if bn:
        sd[f'{prefix}.running_mean'] = (c, )
        sd[f'{prefix}.running_var'] = (c, )
        sd[f'{prefix}.num_batches_tracked'] = ()


def _backbone(sd, arch, prefix='backbone.'):
    for k, v in official_shapes(**arch).items():
        sd[prefix + k] = v


def _fpn(sd, in_channels, out=256, num_outs=5):
    for i, c in enumerate(in_channels):
        _conv(sd, f'neck.lateral_convs.{i}.conv', out, c, 1)
    for i in range(len(in_channels)):
        _conv(sd, f'neck.fpn_convs.{i}.conv', out, out, 3)


def _rpn(sd, c=256, anchors=3):
    _conv(sd, 'rpn_head.rpn_conv', c, c, 3)
    _conv(sd, 'rpn_head.rpn_cls', anchors, c, 1)
    _conv(sd, 'rpn_head.rpn_reg', anchors * 4, c, 1)


def _mask_head(sd, prefix, num_classes, c=256):
    for i in range(4):
        _conv(sd, f'{prefix}.convs.{i}.conv', c, c, 3)
    sd[f'{prefix}.upsample.weight'] = (c, c, 2, 2)  # ConvTranspose2d
    sd[f'{prefix}.upsample.bias'] = (c, )
    _conv(sd, f'{prefix}.conv_logits', num_classes, c, 1)


def mask_rcnn_shapes(arch, in_channels, num_classes=80):
    sd = OrderedDict()
    _backbone(sd, arch)
    _fpn(sd, in_channels)
    _rpn(sd)
    p = 'roi_head.bbox_head'
    _linear(sd, f'{p}.fc_cls', num_classes + 1, 1024)
    _linear(sd, f'{p}.fc_reg', num_classes * 4, 1024)
    _linear(sd, f'{p}.shared_fcs.0', 1024, 256 * 7 * 7)
    _linear(sd, f'{p}.shared_fcs.1', 1024, 1024)
    _mask_head(sd, 'roi_head.mask_head', num_classes)
    return sd


def cascade_shapes(arch, in_channels, num_classes=80):
    """The official 4conv1fc (SyncBN) heads, three stages."""
    sd = OrderedDict()
    _backbone(sd, arch)
    _fpn(sd, in_channels)
    _rpn(sd)
    for s in range(3):
        p = f'roi_head.bbox_head.{s}'
        _linear(sd, f'{p}.fc_cls', num_classes + 1, 1024)
        _linear(sd, f'{p}.fc_reg', num_classes * 4, 1024)
        for k in range(4):
            _conv(sd, f'{p}.shared_convs.{k}.conv', 256, 256, 3, bias=False)
            _norm1d(sd, f'{p}.shared_convs.{k}.bn', 256, bn=True)
        _linear(sd, f'{p}.shared_fcs.0', 1024, 256 * 7 * 7)
    for s in range(3):
        _mask_head(sd, f'roi_head.mask_head.{s}', num_classes)
    return sd


def _msda(sd, prefix, d=256, heads=8, levels=4, points=4):
    _linear(sd, f'{prefix}.sampling_offsets', heads * levels * points * 2, d)
    _linear(sd, f'{prefix}.attention_weights', heads * levels * points, d)
    _linear(sd, f'{prefix}.value_proj', d, d)
    _linear(sd, f'{prefix}.output_proj', d, d)


def _ffn(sd, prefix, d=256, hidden=2048):
    _linear(sd, f'{prefix}.layers.0.0', hidden, d)
    _linear(sd, f'{prefix}.layers.1', d, hidden)


def dino_shapes(arch, in_channels, num_classes=80, num_queries=900,
                cb=False, layers=6, d=256):
    sd = OrderedDict()
    if cb:
        # CBInternImage: cb_modules.0 (full), cb_modules.1 (no stem, gamma),
        # cb_linears.i.j (1x1 convs from level i+j to level i).
        for k, v in official_shapes(**arch).items():
            sd['backbone.cb_modules.0.' + k] = v
        for k, v in official_shapes(**arch).items():
            if not k.startswith('patch_embed.'):
                sd['backbone.cb_modules.1.' + k] = v
        c = [arch['channels'] * 2**i for i in range(4)]
        for i in range(4):
            sd[f'backbone.cb_modules.1.gamma{i}'] = (c[i], )
        for i in range(4):
            for j in range(4 - i):
                if c[i + j] != c[i]:
                    _conv(sd, f'backbone.cb_linears.{i}.{j}', c[i], c[i + j],
                          1)
    else:
        _backbone(sd, arch)
    neck = 'neck.0' if cb else 'neck'
    for i, cin in enumerate(in_channels):
        _conv(sd, f'{neck}.convs.{i}.conv', d, cin, 1, bias=False)
        _norm1d(sd, f'{neck}.convs.{i}.gn', d)
    _conv(sd, f'{neck}.extra_convs.0.conv', d, in_channels[-1], 3,
          bias=False)
    _norm1d(sd, f'{neck}.extra_convs.0.gn', d)
    t = 'bbox_head.transformer'
    for i in range(layers):
        p = f'{t}.encoder.layers.{i}'
        _msda(sd, f'{p}.attentions.0')
        _ffn(sd, f'{p}.ffns.0')
        for k in range(2):
            _norm1d(sd, f'{p}.norms.{k}', d)
    for i in range(layers):
        p = f'{t}.decoder.layers.{i}'
        sd[f'{p}.attentions.0.attn.in_proj_weight'] = (3 * d, d)
        sd[f'{p}.attentions.0.attn.in_proj_bias'] = (3 * d, )
        _linear(sd, f'{p}.attentions.0.attn.out_proj', d, d)
        _msda(sd, f'{p}.attentions.1')
        _ffn(sd, f'{p}.ffns.0')
        for k in range(3):
            _norm1d(sd, f'{p}.norms.{k}', d)
    _linear(sd, f'{t}.decoder.ref_point_head.0', d, 2 * d)
    _linear(sd, f'{t}.decoder.ref_point_head.2', d, d)
    _norm1d(sd, f'{t}.decoder.norm', d)
    sd[f'{t}.level_embeds'] = (4, d)
    _linear(sd, f'{t}.enc_output', d, d)
    _norm1d(sd, f'{t}.enc_output_norm', d)
    sd[f'{t}.query_embed.weight'] = (num_queries, d)
    sd['bbox_head.label_embedding.weight'] = (num_classes, d)
    for i in range(layers + 1):
        _linear(sd, f'bbox_head.cls_branches.{i}', num_classes, d)
        _linear(sd, f'bbox_head.reg_branches.{i}.0', d, d)
        _linear(sd, f'bbox_head.reg_branches.{i}.2', d, d)
        _linear(sd, f'bbox_head.reg_branches.{i}.4', 4, d)
    return sd


def random_weights(shapes, seed=0):
    """Random tensors of the given shapes (num_batches_tracked: ints)."""
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape in shapes.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(3)
        elif name.endswith('running_var'):
            sd[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=gen) * 0.02
    return sd


def official_checkpoint(shapes, seed=0):
    """What the official mmcv 1 training saved."""
    return {'meta': {'mmdet_version': '2.28.1', 'CLASSES': None},
            'state_dict': random_weights(shapes, seed)}
