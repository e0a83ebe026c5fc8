# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official InternImage checkpoints: reading, backbone loading, conversion.

The official code saves ``{'model': state_dict, ...}`` (classification) or
mmcv-1.x ``{'state_dict': ..., 'meta': ...}`` (detection, segmentation).

- :func:`load_backbone_weights` loads any of them into an
  :class:`~internimage.InternImage` (what ``init_cfg=dict(type='Pretrained')``
  calls) and reports what did not match.
- :func:`convert_checkpoint` turns a whole official checkpoint into one that
  ``mmengine.runner.load_checkpoint(model, path, strict=True)`` loads into
  this project's model of the same kind. Each kind is a
  :class:`CheckpointKind` in :data:`CHECKPOINT_KINDS`; add one with
  :func:`register_kind`.
"""
import logging
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

#: Official classification-head modules: unused by a backbone.
CLS_HEAD_PREFIXES = ('conv_head.', 'head.', 'dcnv3_head_x4.', 'dcnv3_head_x3.',
                     'clip_projector.', 'fc_norm.')
#: Official backbone modules.
BACKBONE_PREFIXES = ('patch_embed.', 'levels.')
_STATE_DICT_KEYS = ('state_dict', 'model', 'module')


class CheckpointError(ValueError):
    """A checkpoint that does not fit what it is loaded into."""


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(checkpoint, key: Optional[str] = None,
                       source: str = 'checkpoint') -> 'OrderedDict':
    """The state dict inside a loaded checkpoint, ``module.`` stripped.

    Args:
        checkpoint (dict): what ``torch.load`` returned.
        key (str, optional): the entry to take (e.g. ``'model_ema'``); by
            default the first of 'state_dict', 'model', 'module', or the
            checkpoint itself when it is a plain state dict.
        source (str): name of the checkpoint for error messages.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f'{source}: expected a dict, got {type(checkpoint).__name__}')
    if key is not None:
        if key not in checkpoint:
            raise CheckpointError(
                f'{source}: no entry {key!r}; it has {sorted(checkpoint)}')
        state_dict = checkpoint[key]
    elif _is_state_dict(checkpoint):
        state_dict = checkpoint
    else:
        found = [k for k in _STATE_DICT_KEYS if k in checkpoint]
        if not found:
            raise CheckpointError(
                f'{source}: no state dict found: expected one of '
                f'{list(_STATE_DICT_KEYS)} among its entries '
                f'{sorted(checkpoint)[:10]}')
        state_dict = checkpoint[found[0]]
    if not _is_state_dict(state_dict):
        raise CheckpointError(f'{source}: the state dict is empty or holds '
                              'something other than tensors')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return OrderedDict(state_dict)


def read_checkpoint(filename: str, map_location='cpu',
                    trust_pickle: bool = False):
    """Load a checkpoint file or URL (anything mmengine's CheckpointLoader
    reads).

    torch >= 2.6 loads only tensors and plain containers by default. Set
    ``trust_pickle`` for a file from a source you trust whose extra entries
    (a training config, say) are arbitrary Python objects.
    """
    if trust_pickle:
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        return CheckpointLoader.load_checkpoint(filename, map_location,
                                                logger='current')
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'{filename}: holds Python objects besides tensors, which torch '
            'does not load by default. If you trust the file, re-save its '
            'weights with `python tools/convert_checkpoint.py --trust-pickle '
            f'{filename} OUT.pth` (or read_checkpoint(..., '
            f'trust_pickle=True)). Original error: {str(e)[:300]}') from e


# --------------------------------------------------------------- backbone
@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did."""
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    ignored_head: List[str] = field(default_factory=list)
    ignored_other: List[str] = field(default_factory=list)


def _summarise(keys: List[str], limit: int = 20) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def match_backbone_keys(model: torch.nn.Module, state_dict: Mapping,
                        prefix: Optional[str] = None,
                        source: str = 'checkpoint'):
    """Split ``state_dict`` against ``model``'s keys.

    Keys are taken relative to ``prefix`` (e.g. 'backbone.'); without one,
    'backbone.' is used when the checkpoint has such keys (an OpenMMLab
    detector or segmentor) and nothing otherwise (official classification
    checkpoints). Returns ``(to_load, report)``; raises
    :class:`CheckpointError` when nothing matches or shapes differ.
    """
    report = LoadReport()
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        selected = {k[len(prefix):]: v for k, v in state_dict.items()
                    if k.startswith(prefix)}
        report.ignored_other = [k for k in state_dict
                                if not k.startswith(prefix)]
        if not selected:
            raise CheckpointError(
                f'{source}: no key starts with {prefix!r}; first keys: '
                f'{_summarise(list(state_dict), 5)}')
    else:
        selected = dict(state_dict)
    own = model.state_dict()
    mismatched = []
    to_load = OrderedDict()
    for k, v in selected.items():
        if k in own:
            if tuple(own[k].shape) != tuple(v.shape):
                mismatched.append(f'{k}: checkpoint {tuple(v.shape)}, model '
                                  f'{tuple(own[k].shape)}')
            else:
                to_load[k] = v
        elif k.startswith(CLS_HEAD_PREFIXES):
            report.ignored_head.append(k)
        else:
            report.unexpected.append(k)
    if mismatched:
        raise CheckpointError(
            f'{source}: {len(mismatched)} tensors have another shape than the '
            f'model\'s (is the arch right?): {_summarise(mismatched, 10)}')
    if not to_load:
        raise CheckpointError(
            f'{source}: no key matches the {type(model).__name__} model '
            f'(checkpoint keys: {_summarise(list(selected), 5)}; model keys: '
            f'{_summarise(list(own), 5)})')
    report.loaded = list(to_load)
    report.missing = [k for k in own if k not in to_load]
    return to_load, report


def load_backbone_weights(model: torch.nn.Module, filename: str,
                          prefix: Optional[str] = None, map_location='cpu',
                          logger='current') -> LoadReport:
    """Load an official (or OpenMMLab) checkpoint into an InternImage.

    Loads every tensor whose name and shape match, ignores the official
    classification head (``conv_head``, ``head``, ``clip_projector``, ...),
    logs the missing and unexpected keys as warnings, and raises
    :class:`CheckpointError` when shapes differ or nothing matches.

    Args:
        model (nn.Module): the backbone.
        filename (str): path or URL.
        prefix (str, optional): take the keys under this prefix (e.g.
            'backbone.'), see :func:`match_backbone_keys`.
        map_location: as for ``torch.load``. Default: 'cpu'.
        logger: mmengine logger name or object. Default: 'current'.
    """
    state_dict = extract_state_dict(read_checkpoint(filename, map_location),
                                    source=filename)
    to_load, report = match_backbone_keys(model, state_dict, prefix, filename)
    model.load_state_dict(to_load, strict=False)
    name = type(model).__name__
    print_log(f'{name}: loaded {len(report.loaded)} tensors from {filename}',
              logger=logger)
    if report.ignored_head:
        heads = sorted({k.split('.')[0] for k in report.ignored_head})
        print_log(f'{name}: ignored {len(report.ignored_head)} tensors of '
                  f'the classification head ({", ".join(heads)})',
                  logger=logger)
    if report.ignored_other:
        print_log(f'{name}: ignored {len(report.ignored_other)} tensors '
                  f'outside the prefix (other parts of the model)',
                  logger=logger)
    if report.missing:
        print_log(f'{name}: {len(report.missing)} tensors missing in '
                  f'{filename}, left as initialised: '
                  f'{_summarise(report.missing)}', logger=logger,
                  level=logging.WARNING)
    if report.unexpected:
        print_log(f'{name}: {len(report.unexpected)} unexpected tensors in '
                  f'{filename}, not loaded: {_summarise(report.unexpected)}',
                  logger=logger, level=logging.WARNING)
    return report


# ------------------------------------------------------------- conversion
@dataclass
class CheckpointKind:
    """One kind of official checkpoint.

    Attributes:
        name (str): e.g. 'classification'.
        detect (callable): state dict -> bool.
        convert (callable, optional): state dict -> converted state dict;
            None for a kind that is recognised but not converted yet.
        description (str): what it is and what it converts into (or why it
            is not converted).
    """
    name: str
    detect: Callable[[Mapping], bool]
    convert: Optional[Callable[[Mapping], 'OrderedDict']]
    description: str


#: Known kinds, tried in order.
CHECKPOINT_KINDS: Dict[str, CheckpointKind] = OrderedDict()


def register_kind(kind: CheckpointKind, replace: bool = False):
    """Add ``kind`` to :data:`CHECKPOINT_KINDS` (``replace`` to override)."""
    if kind.name in CHECKPOINT_KINDS and not replace:
        raise KeyError(f'checkpoint kind {kind.name!r} is already registered')
    CHECKPOINT_KINDS[kind.name] = kind
    return kind


def _has_prefix(state_dict, *prefixes):
    return any(k.startswith(prefixes) for k in state_dict)


def _is_official_classifier(state_dict) -> bool:
    return (_has_prefix(state_dict, 'patch_embed.')
            and _has_prefix(state_dict, 'levels.')
            and ('head.weight' in state_dict or 'head.bias' in state_dict))


def _is_official_backbone_only(state_dict) -> bool:
    return (_has_prefix(state_dict, 'patch_embed.')
            and _has_prefix(state_dict, 'levels.')
            and not _has_prefix(state_dict, *CLS_HEAD_PREFIXES))


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
            f'{_summarise(unknown, 10)}')
    return out


def _refuse(message):
    """A converter for a kind that is recognised but not converted."""
    def convert(state_dict):
        raise CheckpointError(message)
    return convert


register_kind(CheckpointKind(
    'classification', _is_official_classifier, convert_classifier,
    'official classifier ({"model": ...} with patch_embed/levels/head): '
    'converted for mmpretrain ImageClassifier + InternImageClsHead'))
register_kind(CheckpointKind(
    'backbone', _is_official_backbone_only,
    _refuse('a backbone-only checkpoint needs no conversion: load it with '
            "the backbone's init_cfg=dict(type='Pretrained', checkpoint=...)"),
    'official backbone without a head: needs no conversion'))
register_kind(CheckpointKind(
    'segmentation',
    lambda sd: _has_prefix(sd, 'backbone.levels.')
    and _has_prefix(sd, 'decode_head.'),
    _refuse('segmentation checkpoints are recognised but not converted '
            'yet (mmseg support is its own issue)'),
    'official mmseg 0.x segmentor (backbone. + decode_head.)'))
register_kind(CheckpointKind(
    'detection',
    lambda sd: _has_prefix(sd, 'backbone.levels.')
    and _has_prefix(sd, 'neck.', 'rpn_head.', 'roi_head.', 'bbox_head.',
                    'query_head.'),
    _refuse('detection checkpoints are recognised but not converted yet '
            '(mmdet support is its own issue)'),
    'official mmdet 2.x detector (backbone. + neck/heads)'))


def detect_kind(state_dict: Mapping, source: str = 'checkpoint') -> str:
    """Name of the first kind in :data:`CHECKPOINT_KINDS` that matches."""
    for kind in CHECKPOINT_KINDS.values():
        if kind.detect(state_dict):
            return kind.name
    known = '; '.join(f'{k.name}: {k.description}'
                      for k in CHECKPOINT_KINDS.values())
    prefixes = sorted({re.split(r'\.', k)[0] for k in state_dict})
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


def convert_checkpoint(checkpoint, key: Optional[str] = None,
                       kind: Optional[str] = None,
                       source: str = 'checkpoint',
                       class_rows: Optional[Sequence[int]] = None) -> dict:
    """Convert a loaded official checkpoint.

    Args:
        checkpoint (dict): what ``torch.load`` returned.
        key (str, optional): entry holding the weights (e.g. 'model_ema');
            see :func:`extract_state_dict`.
        kind (str, optional): force a kind instead of detecting it.
        source (str): name for error messages.
        class_rows (Sequence[int], optional): classification only: keep
            these classifier rows (see :func:`select_classes`).

    Returns:
        dict: ``{'state_dict': ..., 'meta': {'internimage_kind': kind}}``,
        what ``mmengine.runner.load_checkpoint`` reads.
    """
    state_dict = extract_state_dict(checkpoint, key, source)
    if kind is None:
        kind = detect_kind(state_dict, source)
    elif kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f'unknown kind {kind!r}; known: '
                              f'{list(CHECKPOINT_KINDS)}')
    converted = CHECKPOINT_KINDS[kind].convert(state_dict)
    if class_rows is not None:
        if kind != 'classification':
            raise CheckpointError(
                f'{source}: selecting classes needs a classification '
                f'checkpoint, this is {kind}')
        converted = select_classes(converted, class_rows, source)
    return dict(state_dict=converted,
                meta=dict(internimage_kind=kind, converted_from=source))
