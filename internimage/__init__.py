# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage, written once for every OpenMMLab 2.0 library.

Depends only on torch, mmengine, mmcv and :mod:`ops_dcnv3`; the plugin
packages (``mmcls_plugin``, ``mmdet_plugin``, ``mmseg_plugin``) register these
classes into each library's registries (:func:`register_into`) and install
the checkpoint allow-list (:func:`allow_mmengine_checkpoints`).

- :mod:`internimage.checkpoint`: reading checkpoints of every released
  layout, loading them into a backbone;
- :mod:`internimage.convert`: converting whole official checkpoints;
- :mod:`internimage.runner`: what running with mmengine needs (the
  checkpoint allow-list, CPU distributed runs, the tools' config handling).
"""
from .backbone import InternImage
from .checkpoint import (CheckpointError, extract_state_dict,
                         load_backbone_weights, read_checkpoint)
from .convert import convert_checkpoint, detect_kind
from .layer_decay import InternImageLayerDecayOptimWrapperConstructor
from .registry import register_into
from .runner import allow_mmengine_checkpoints

__all__ = [
    'InternImage', 'InternImageLayerDecayOptimWrapperConstructor',
    'CheckpointError', 'allow_mmengine_checkpoints', 'convert_checkpoint',
    'detect_kind', 'extract_state_dict', 'load_backbone_weights',
    'read_checkpoint', 'register_into'
]
