# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Reading InternImage checkpoints and loading them into a backbone.

Every layout the official releases use is read:

- the official classification code's ``{'model': state_dict, ...}`` (also
  ``model_ema``), and mmcv-1.x ``{'state_dict': ..., 'meta': ...}`` of the
  official detection and segmentation code;
- the HuggingFace layout of the official classifiers (made by the official
  ``classification/huggingface/convert.py``): every key under ``model.``,
  layer scales named ``layer_scale1``/``layer_scale2`` instead of
  ``gamma1``/``gamma2``, in a ``model.safetensors`` or ``pytorch_model.bin``
  file (or a folder holding one, sharded ones included), see
  :func:`hf_to_official`;
- checkpoints of mmengine's Runner (``tools/train.py``) and of
  ``tools/convert_checkpoint.py``.

:func:`read_checkpoint` reads a file, :func:`extract_state_dict` finds the
weights in it (in the official names), :func:`load_backbone_weights` loads
them into an :class:`~internimage.InternImage` (what ``init_cfg=dict(type=
'Pretrained')`` calls). Converting whole checkpoints for this project's
models is :mod:`internimage.convert`.
"""
import json
import logging
import os.path as osp
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Mapping, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from .runner import allow_mmengine_checkpoints

#: Official classification-head modules: unused by a backbone.
CLS_HEAD_PREFIXES = ('conv_head.', 'head.', 'dcnv3_head_x4.', 'dcnv3_head_x3.',
                     'clip_projector.', 'fc_norm.')
#: Official backbone modules.
BACKBONE_PREFIXES = ('patch_embed.', 'levels.')
_STATE_DICT_KEYS = ('state_dict', 'model', 'module')
#: Weight files of a HuggingFace model folder, in the order they are looked
#: for (an ``.index.json`` lists the shards of a large model).
HF_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json',
                   'pytorch_model.bin', 'pytorch_model.bin.index.json')
#: HuggingFace layer-scale names -> the official ones.
_HF_LAYER_SCALE = re.compile(r'(\.blocks\.\d+)\.layer_scale([12])$')


class CheckpointError(ValueError):
    """A checkpoint that does not fit what it is loaded into."""


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def has_prefix(state_dict: Mapping, *prefixes: str) -> bool:
    """Whether some key of ``state_dict`` starts with one of ``prefixes``."""
    return any(k.startswith(prefixes) for k in state_dict)


def summarise(keys: List[str], limit: int = 20) -> str:
    """The first ``limit`` of ``keys``, for error messages."""
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def is_hf_layout(state_dict: Mapping) -> bool:
    """An official classifier or backbone in the HuggingFace layout: every
    key under ``model.``, with the official stem and levels below it."""
    return (len(state_dict) > 0
            and all(k.startswith('model.') for k in state_dict)
            and has_prefix(state_dict, 'model.patch_embed.')
            and has_prefix(state_dict, 'model.levels.'))


def hf_to_official(state_dict: Mapping) -> 'OrderedDict':
    """HuggingFace layout -> official names: ``model.`` dropped and
    ``levels.i.blocks.j.layer_scale1/2`` renamed ``gamma1/2`` (the official
    ``classification/huggingface/convert.py`` in reverse)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        out[_HF_LAYER_SCALE.sub(r'\1.gamma\2', key[len('model.'):])] = value
    return out


def extract_state_dict(checkpoint, key: Optional[str] = None,
                       source: str = 'checkpoint') -> 'OrderedDict':
    """The state dict inside a loaded checkpoint, in the official names:
    ``module.`` stripped, the HuggingFace layout renamed
    (:func:`hf_to_official`).

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
    if is_hf_layout(state_dict):
        return hf_to_official(state_dict)
    return OrderedDict(state_dict)


def _hf_weight_file(folder: str) -> str:
    for name in HF_WEIGHT_FILES:
        if osp.isfile(osp.join(folder, name)):
            return osp.join(folder, name)
    raise CheckpointError(
        f'{folder}: a folder, but none of the HuggingFace weight files '
        f'{list(HF_WEIGHT_FILES)} is in it')


def _read_shards(index_file: str, map_location, trust_pickle: bool):
    """The tensors of a sharded HuggingFace checkpoint (``*.index.json``,
    whose ``weight_map`` names the file of each tensor)."""
    with open(index_file, encoding='utf-8') as f:
        weight_map = json.load(f).get('weight_map')
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f'{index_file}: no weight_map in it')
    folder = osp.dirname(index_file)
    state_dict = OrderedDict()
    for shard in sorted(set(weight_map.values())):
        tensors = read_checkpoint(osp.join(folder, shard), map_location,
                                  trust_pickle)
        if not _is_state_dict(tensors):
            raise CheckpointError(f'{shard} (listed in {index_file}): not a '
                                  'file of tensors')
        state_dict.update(tensors)
    return state_dict


def _read_safetensors(filename: str, map_location):
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover
        raise CheckpointError(
            f'{filename}: reading .safetensors files needs the safetensors '
            'package (pip install safetensors)') from e
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint not found: {filename}')
    device = map_location if isinstance(map_location, str) else 'cpu'
    return load_file(filename, device=device)


def read_checkpoint(filename: str, map_location='cpu',
                    trust_pickle: bool = False):
    """Load a checkpoint: a file or URL that mmengine's CheckpointLoader
    reads (``.pth``, ``.bin``), a ``.safetensors`` file, or a HuggingFace
    model folder (its ``model.safetensors`` or ``pytorch_model.bin``,
    sharded or not).

    torch >= 2.6 loads only tensors and plain containers by default, plus
    what mmengine's Runner writes (:func:`~internimage.runner.
    allow_mmengine_checkpoints`). Set ``trust_pickle`` for a file from a
    source you trust whose extra entries (a training config, say) are
    arbitrary Python objects.
    """
    if osp.isdir(filename):
        filename = _hf_weight_file(filename)
    if filename.endswith('.index.json'):
        return _read_shards(filename, map_location, trust_pickle)
    if filename.endswith('.safetensors'):
        return _read_safetensors(filename, map_location)
    if trust_pickle:
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    allow_mmengine_checkpoints()
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
                f'{summarise(list(state_dict), 5)}')
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
            f'model\'s (is the arch right?): {summarise(mismatched, 10)}')
    if not to_load:
        raise CheckpointError(
            f'{source}: no key matches the {type(model).__name__} model '
            f'(checkpoint keys: {summarise(list(selected), 5)}; model keys: '
            f'{summarise(list(own), 5)})')
    report.loaded = list(to_load)
    report.missing = [k for k in own if k not in to_load]
    return to_load, report


def load_backbone_weights(model: torch.nn.Module, filename: str,
                          prefix: Optional[str] = None, map_location='cpu',
                          logger='current', strict: bool = False
                          ) -> LoadReport:
    """Load an official (or OpenMMLab) checkpoint into an InternImage.

    Loads every tensor whose name and shape match, ignores the official
    classification head (``conv_head``, ``head``, ``clip_projector``, ...),
    logs the missing and unexpected keys as warnings, and raises
    :class:`CheckpointError` when shapes differ or nothing matches (with
    ``strict``, also when a backbone tensor is missing or unexpected).

    Args:
        model (nn.Module): the backbone.
        filename (str): path or URL, a ``.safetensors`` file or a
            HuggingFace model folder (see :func:`read_checkpoint`).
        prefix (str, optional): take the keys under this prefix (e.g.
            'backbone.'), see :func:`match_backbone_keys`.
        map_location: as for ``torch.load``. Default: 'cpu'.
        logger: mmengine logger name or object. Default: 'current'.
        strict (bool): every tensor of the backbone must be in the
            checkpoint, and every backbone tensor of the checkpoint in the
            model (the classification head and, under ``prefix``, the rest of
            the model are still left out). Default: False.
    """
    state_dict = extract_state_dict(read_checkpoint(filename, map_location),
                                    source=filename)
    to_load, report = match_backbone_keys(model, state_dict, prefix, filename)
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(
            f'{filename}: does not fit {type(model).__name__} strictly: '
            f'missing {summarise(report.missing, 10) or "nothing"}; '
            f'unexpected {summarise(report.unexpected, 10) or "nothing"}')
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
                  f'{summarise(report.missing)}', logger=logger,
                  level=logging.WARNING)
    if report.unexpected:
        print_log(f'{name}: {len(report.unexpected)} unexpected tensors in '
                  f'{filename}, not loaded: {summarise(report.unexpected)}',
                  logger=logger, level=logging.WARNING)
    return report


