# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official InternImage detection checkpoints (mmdet 2.28) -> mmdet 3.

The 'detection' kind of :data:`internimage.convert.CHECKPOINT_KINDS`.

- Mask R-CNN and Cascade Mask R-CNN: mmdet 3 kept mmdet 2's module names
  (``backbone``, ``neck``, ``rpn_head``, ``roi_head.bbox_head[.i]``,
  ``roi_head.mask_head[.i]``), so their keys are kept as they are.
- DINO: the official ``DINOHead`` holds a ``DinoTransformer``
  (``bbox_head.transformer.*``), built from mmcv 1's generic transformer
  layers (``attentions.k``, ``ffns.0``); mmdet 3's ``DINO`` detector owns
  the encoder, decoder and embeddings itself (``self_attn``, ``cross_attn``,
  ``ffn``), see :data:`DINO_RENAMES`. CB-DINO's list neck (``neck.0``)
  becomes a single neck.

Every key must match a rule (unknown keys are an error, naming them), so
that the result loads with ``strict=True`` into the configs of
``configs/mmdet``.
"""
import re
from collections import OrderedDict
from typing import Mapping

from .checkpoint import CheckpointError, has_prefix, summarise

#: Prefixes of two-stage detectors, kept as they are.
TWO_STAGE_PREFIXES = ('backbone.', 'neck.', 'rpn_head.', 'roi_head.')

#: (regular expression, replacement) for the official DINO, applied in order
#: to each key; the first match wins.
DINO_RENAMES = (
    (r'^backbone\.', 'backbone.'),
    (r'^neck\.0\.', 'neck.'),  # CB-DINO's neck=[CBChannelMapper]
    (r'^neck\.', 'neck.'),
    (r'^bbox_head\.transformer\.(encoder\.layers\.\d+)\.attentions\.0\.',
     r'\1.self_attn.'),
    (r'^bbox_head\.transformer\.(decoder\.layers\.\d+)\.attentions\.0\.',
     r'\1.self_attn.'),
    (r'^bbox_head\.transformer\.(decoder\.layers\.\d+)\.attentions\.1\.',
     r'\1.cross_attn.'),
    (r'^bbox_head\.transformer\.((?:en|de)coder\.layers\.\d+)\.ffns\.0\.',
     r'\1.ffn.'),
    (r'^bbox_head\.transformer\.((?:en|de)coder\.layers\.\d+)\.norms\.',
     r'\1.norms.'),
    (r'^bbox_head\.transformer\.decoder\.ref_point_head\.0\.',
     'decoder.ref_point_head.layers.0.'),
    (r'^bbox_head\.transformer\.decoder\.ref_point_head\.2\.',
     'decoder.ref_point_head.layers.1.'),
    (r'^bbox_head\.transformer\.decoder\.norm\.', 'decoder.norm.'),
    (r'^bbox_head\.transformer\.level_embeds$', 'level_embed'),
    (r'^bbox_head\.transformer\.enc_output\.', 'memory_trans_fc.'),
    (r'^bbox_head\.transformer\.enc_output_norm\.', 'memory_trans_norm.'),
    (r'^bbox_head\.transformer\.query_embed\.', 'query_embedding.'),
    (r'^bbox_head\.label_embedding\.', 'dn_query_generator.label_embedding.'),
    (r'^bbox_head\.(cls_branches|reg_branches)\.', r'bbox_head.\1.'),
)


def is_official_detector(state_dict: Mapping) -> bool:
    """An official (mmdet 2) InternImage detector: an InternImage or
    CB-InternImage backbone and detection heads."""
    return (has_prefix(state_dict, 'backbone.levels.',
                        'backbone.cb_modules.')
            and has_prefix(state_dict, 'neck.', 'rpn_head.', 'roi_head.',
                            'bbox_head.', 'query_head.'))


def is_official_dino(state_dict: Mapping) -> bool:
    return has_prefix(state_dict, 'bbox_head.transformer.')


def convert_two_stage(state_dict: Mapping) -> 'OrderedDict':
    unknown = [k for k in state_dict if not k.startswith(TWO_STAGE_PREFIXES)]
    if unknown:
        raise CheckpointError(
            'detection checkpoint (two-stage): keys of no known module: '
            f'{summarise(unknown, 10)}')
    return OrderedDict(state_dict)


def convert_dino(state_dict: Mapping) -> 'OrderedDict':
    out, unknown = OrderedDict(), []
    for key, value in state_dict.items():
        for pattern, replacement in DINO_RENAMES:
            new, count = re.subn(pattern, replacement, key, count=1)
            if count:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            'detection checkpoint (DINO): keys of no known module: '
            f'{summarise(unknown, 10)}')
    return out


def convert_detector(state_dict: Mapping) -> 'OrderedDict':
    """Official mmdet 2 InternImage detector -> mmdet 3 keys."""
    if is_official_dino(state_dict):
        return convert_dino(state_dict)
    if has_prefix(state_dict, 'bbox_head.', 'query_head.'):
        raise CheckpointError(
            'detection checkpoint: a single-stage detector other than DINO '
            '(no bbox_head.transformer); only Mask R-CNN, Cascade Mask R-CNN '
            'and DINO checkpoints are converted')
    return convert_two_stage(state_dict)

