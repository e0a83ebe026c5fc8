# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Converting whole official InternImage checkpoints for this project's
models (what ``tools/convert_checkpoint.py`` runs).

:func:`convert_checkpoint` detects the kind of a checkpoint (the first of
:data:`CHECKPOINT_KINDS` whose ``detect`` matches) and renames its keys so
that ``mmengine.runner.load_checkpoint(model, path, strict=True)`` loads
them into the model of the matching config. The state dict is read with
:func:`internimage.checkpoint.extract_state_dict`, so the HuggingFace
layout of the official classifiers converts like the official one.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence

from .checkpoint import (CLS_HEAD_PREFIXES, CheckpointError,
                         extract_state_dict, has_prefix, read_checkpoint,
                         summarise)
from .convert_det import convert_detector, is_official_detector
from .convert_seg import convert_segmentor, is_official_segmentor


@dataclass(frozen=True)
class CheckpointKind:
    """One kind of official checkpoint.

    Attributes:
        name (str): e.g. 'classification'.
        detect (callable): state dict -> bool.
        convert (callable): state dict -> converted state dict (raises
            :class:`CheckpointError` naming what does not fit).
        description (str): what it is and what it converts into.
    """
    name: str
    detect: Callable[[Mapping], bool]
    convert: Callable[[Mapping], 'OrderedDict']
    description: str


def is_official_classifier(state_dict: Mapping) -> bool:
    return (has_prefix(state_dict, 'patch_embed.')
            and has_prefix(state_dict, 'levels.')
            and ('head.weight' in state_dict or 'head.bias' in state_dict))


def is_official_backbone(state_dict: Mapping) -> bool:
    """Stem and levels, no classification head."""
    return (has_prefix(state_dict, 'patch_embed.')
            and has_prefix(state_dict, 'levels.')
            and not has_prefix(state_dict, *CLS_HEAD_PREFIXES))


#: Official classifier prefix -> mmpretrain ``ImageClassifier`` prefix.
CLASSIFIER_RENAMES = (
    ('patch_embed.', 'backbone.patch_embed.'),
    ('levels.', 'backbone.levels.'),
    ('conv_head.', 'head.conv_head.'),
    ('dcnv3_head_x4.', 'head.dcnv3_head_x4.'),
    ('dcnv3_head_x3.', 'head.dcnv3_head_x3.'),
    ('clip_projector.', 'head.clip_projector.'),
    ('fc_norm.', 'head.fc_norm.'),
    ('head.', 'head.fc.'),
)


def convert_classifier(state_dict: Mapping) -> 'OrderedDict':
    """Official classifier -> ``ImageClassifier(backbone=InternImage,
    head=InternImageClsHead)`` keys; every key must be renamed."""
    out = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        for old, new in CLASSIFIER_RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            'classification checkpoint: keys of no known InternImage module: '
            f'{summarise(unknown, 10)}')
    return out


def refuse_backbone(state_dict: Mapping):
    raise CheckpointError(
        'a backbone-only checkpoint needs no conversion: load it with the '
        "backbone's init_cfg=dict(type='Pretrained', checkpoint=...)")


#: Every kind, in the order they are tried.
CHECKPOINT_KINDS = OrderedDict((kind.name, kind) for kind in (
    CheckpointKind(
        'classification', is_official_classifier, convert_classifier,
        'official classifier ({"model": ...} with patch_embed/levels/head, '
        'or its HuggingFace layout): converted for mmpretrain '
        'ImageClassifier + InternImageClsHead'),
    CheckpointKind(
        'backbone', is_official_backbone, refuse_backbone,
        'official backbone without a head: needs no conversion'),
    CheckpointKind(
        'segmentation', is_official_segmentor, convert_segmentor,
        'official mmseg 0.x segmentor (backbone. + decode_head.): UperNet '
        '(UPerHead + FCNHead) and Mask2Former, converted for mmseg 1.x '
        'EncoderDecoder'),
    CheckpointKind(
        'detection', is_official_detector, convert_detector,
        'official mmdet 2 detector (backbone. + neck./rpn_head./roi_head./'
        'bbox_head.): Mask R-CNN and Cascade Mask R-CNN keep their keys, DINO '
        'and CB-DINO are renamed for mmdet 3 DINO'),
))


def detect_kind(state_dict: Mapping, source: str = 'checkpoint') -> str:
    """Name of the first kind in :data:`CHECKPOINT_KINDS` that matches."""
    for kind in CHECKPOINT_KINDS.values():
        if kind.detect(state_dict):
            return kind.name
    known = '; '.join(f'{k.name}: {k.description}'
                      for k in CHECKPOINT_KINDS.values())
    prefixes = sorted({k.split('.')[0] for k in state_dict})
    raise CheckpointError(
        f'{source}: not a known kind of InternImage checkpoint (top-level '
        f'modules: {prefixes[:15]}). Known kinds: {known}')


def select_classes(state_dict: Mapping, rows: Sequence[int],
                   source: str = 'checkpoint') -> 'OrderedDict':
    """Keep the classifier rows ``rows`` of a converted classifier (e.g. the
    ImageNet-1K classes of a 22K head, with the official map22kto1k.txt)."""
    out = OrderedDict(state_dict)
    for key in ('head.fc.weight', 'head.fc.bias'):
        if key not in out:
            raise CheckpointError(f'{source}: no {key} to select classes from')
        num = out[key].shape[0]
        bad = [r for r in rows if not 0 <= r < num]
        if bad:
            raise CheckpointError(
                f'{source}: class indices {bad[:5]} out of range for a head '
                f'of {num} classes')
        out[key] = out[key][list(rows)].clone()
    return out


def read_class_map(path: str) -> List[int]:
    """Class indices, whitespace-separated (the official map22kto1k.txt has
    one per line)."""
    with open(path, encoding='utf-8') as f:
        text = f.read().split()
    try:
        return [int(t) for t in text]
    except ValueError as e:
        raise CheckpointError(f'{path}: expected integers, {e}') from e


def dataset_meta_of(checkpoint) -> dict:
    """The class names (and palette) an mmcv-1.x checkpoint keeps in
    ``meta.CLASSES`` / ``meta.PALETTE``, as mmengine's ``dataset_meta``
    (what DetInferencer and MMSegInferencer show); {} without them."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    if not isinstance(meta, Mapping):
        return {}
    if isinstance(meta.get('dataset_meta'), Mapping):
        return dict(meta['dataset_meta'])
    out = {}
    if meta.get('CLASSES'):
        out['classes'] = tuple(meta['CLASSES'])
    if meta.get('PALETTE'):
        out['palette'] = [list(c) for c in meta['PALETTE']]
    return out


def convert_checkpoint(checkpoint, key: Optional[str] = None,
                       kind: Optional[str] = None,
                       source: str = 'checkpoint',
                       class_rows: Optional[Sequence[int]] = None) -> dict:
    """Convert a loaded official checkpoint.

    Args:
        checkpoint (dict): what :func:`~internimage.checkpoint.
            read_checkpoint` (or ``torch.load``) returned.
        key (str, optional): entry holding the weights (e.g. 'model_ema');
            see :func:`~internimage.checkpoint.extract_state_dict`.
        kind (str, optional): force a kind instead of detecting it.
        source (str): name for error messages.
        class_rows (Sequence[int], optional): classification only: keep
            these classifier rows (see :func:`select_classes`).

    Returns:
        dict: ``{'state_dict': ..., 'meta': {'internimage_kind': kind,
        'converted_from': source[, 'dataset_meta': ...]}}``, what
        ``mmengine.runner.load_checkpoint`` reads. ``dataset_meta`` holds
        the class names of an mmcv-1.x checkpoint's ``meta.CLASSES``
        (dropped when ``class_rows`` changes the classes).
    """
    state_dict = extract_state_dict(checkpoint, key, source)
    if kind is None:
        kind = detect_kind(state_dict, source)
    elif kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f'unknown kind {kind!r}; known: '
                              f'{list(CHECKPOINT_KINDS)}')
    converted = CHECKPOINT_KINDS[kind].convert(state_dict)
    meta = dict(internimage_kind=kind, converted_from=source)
    dataset_meta = dataset_meta_of(checkpoint)
    if class_rows is not None:
        if kind != 'classification':
            raise CheckpointError(
                f'{source}: selecting classes needs a classification '
                f'checkpoint, this is {kind}')
        converted = select_classes(converted, class_rows, source)
        dataset_meta = {}
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    return dict(state_dict=converted, meta=meta)


def load_model_weights(model, checkpoint: str) -> None:
    """Load ``checkpoint`` strictly into a whole model (classifier,
    detector or segmentor): one of tools/train.py or
    tools/convert_checkpoint.py, or an official classifier (either layout),
    converted on the fly. ``load_state_dict``'s RuntimeError names the keys
    that do not fit."""
    state_dict = extract_state_dict(read_checkpoint(checkpoint),
                                    source=checkpoint)
    if not has_prefix(state_dict, 'backbone.'):
        if detect_kind(state_dict, checkpoint) != 'classification':
            raise CheckpointError(f'{checkpoint}: not a classifier')
        state_dict = convert_classifier(state_dict)
    model.load_state_dict(state_dict, strict=True)
