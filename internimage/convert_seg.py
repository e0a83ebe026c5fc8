# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official InternImage segmentation checkpoints (mmseg 0.x) -> mmseg 1.x.

The 'segmentation' kind of :data:`internimage.convert.CHECKPOINT_KINDS`, so
that ``python tools/convert_checkpoint.py OFFICIAL.pth OUT.pth`` converts
them. Works on key names only (no mmseg import).

- UperNet (``UPerHead`` + ``FCNHead`` auxiliary head): mmseg 1.x kept the
  module names, so keys are kept; each is checked to belong to a known
  module.
- Mask2Former: the official head is mmdet-2 style (mmcv 1.x transformer
  layers: ``attentions.i``, ``ffns.0``); mmseg 1.x's ``Mask2FormerHead``
  wraps mmdet 3's, whose layers name them ``self_attn``, ``cross_attn`` and
  ``ffn``. In the decoder layers (operation order cross_attn, norm,
  self_attn, norm, ffn, norm) ``attentions.0`` is the cross-attention and
  ``attentions.1`` the self-attention; the norms keep their order.
"""
import re
from collections import OrderedDict
from typing import Mapping

from .checkpoint import BACKBONE_PREFIXES, CheckpointError, summarise

#: Modules of the heads this converter knows, by head prefix.
UPERNET_MODULES = ('psp_modules', 'bottleneck', 'lateral_convs', 'fpn_convs',
                   'fpn_bottleneck', 'conv_seg')
FCN_MODULES = ('convs', 'conv_cat', 'conv_seg')
MASK2FORMER_MODULES = ('pixel_decoder', 'transformer_decoder',
                       'decoder_input_projs', 'query_embed', 'query_feat',
                       'level_embed', 'cls_embed', 'mask_embed')
#: Official (mmcv 1.x) -> mmdet 3 names inside the Mask2Former head.
MASK2FORMER_RENAMES = (
    (re.compile(r'^(pixel_decoder\.encoder\.layers\.\d+\.)attentions\.0\.'),
     r'\1self_attn.'),
    (re.compile(r'^(pixel_decoder\.encoder\.layers\.\d+\.)ffns\.0\.'),
     r'\1ffn.'),
    (re.compile(r'^(transformer_decoder\.layers\.\d+\.)attentions\.0\.'),
     r'\1cross_attn.'),
    (re.compile(r'^(transformer_decoder\.layers\.\d+\.)attentions\.1\.'),
     r'\1self_attn.'),
    (re.compile(r'^(transformer_decoder\.layers\.\d+\.)ffns\.0\.'),
     r'\1ffn.'),
)
_NOT_MMCV1 = re.compile(r'\.(self_attn|cross_attn|ffn)\.')


def is_official_segmentor(state_dict: Mapping) -> bool:
    """An mmseg segmentor with an InternImage backbone."""
    return (any(k.startswith('backbone.levels.') for k in state_dict)
            and any(k.startswith('decode_head.') for k in state_dict))


def is_mask2former(state_dict: Mapping) -> bool:
    return any(k.startswith('decode_head.transformer_decoder.')
               for k in state_dict)


def _module(key: str, prefix: str) -> str:
    return key[len(prefix):].split('.')[0]


def convert_segmentor(state_dict: Mapping) -> 'OrderedDict':
    """Official UperNet / Mask2Former segmentor -> mmseg 1.x
    ``EncoderDecoder`` (``UPerHead`` + ``FCNHead``, or ``Mask2FormerHead``)
    keys.

    Raises:
        CheckpointError: for keys of no module these heads have, or a
            Mask2Former head already in mmdet-3 form.
    """
    mask2former = is_mask2former(state_dict)
    heads = {'decode_head.': MASK2FORMER_MODULES if mask2former
             else UPERNET_MODULES,
             'auxiliary_head.': FCN_MODULES}
    out = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        if key.startswith('backbone.'):
            if not key[len('backbone.'):].startswith(BACKBONE_PREFIXES):
                unknown.append(key)
            out[key] = value
            continue
        prefix = next((p for p in heads if key.startswith(p)), None)
        if prefix is None or _module(key, prefix) not in heads[prefix]:
            unknown.append(key)
            continue
        if prefix == 'auxiliary_head.' and mask2former:
            unknown.append(key)
            continue
        if mask2former:
            rest = key[len(prefix):]
            if _NOT_MMCV1.search(rest):
                raise CheckpointError(
                    f'segmentation checkpoint: {key} is already in mmdet 3 / '
                    'mmseg 1.x form; load it as it is')
            for pattern, repl in MASK2FORMER_RENAMES:
                rest = pattern.sub(repl, rest)
            key = prefix + rest
        out[key] = value
    if unknown:
        kind = 'Mask2Former' if mask2former else 'UperNet'
        raise CheckpointError(
            f'segmentation checkpoint ({kind}): keys of no known module '
            f'(backbone: {list(BACKBONE_PREFIXES)}; decode_head: '
            f'{list(heads["decode_head."])}'
            + ('' if mask2former else
               f'; auxiliary_head: {list(FCN_MODULES)}')
            + f'): {summarise(unknown, 10)}')
    return out

