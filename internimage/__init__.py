# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage, written once for every OpenMMLab 2.0 library.

Depends only on torch, mmengine, mmcv and :mod:`ops_dcnv3`; the plugin
packages (``mmcls_plugin``, ``mmdet_plugin``, ``mmseg_plugin``) register these
classes into each library's registries (:func:`register_into`).
"""
from . import convert_det  # noqa: F401  (registers the detection kind)
from . import convert_seg  # noqa: F401  (the segmentation checkpoint kind)
from .backbone import InternImage
from .checkpoint import (CheckpointError, convert_checkpoint, detect_kind,
                         load_backbone_weights)
from .layer_decay import InternImageLayerDecayOptimWrapperConstructor
from .registry import register_into

__all__ = [
    'InternImage', 'InternImageLayerDecayOptimWrapperConstructor',
    'CheckpointError', 'convert_checkpoint', 'detect_kind',
    'load_backbone_weights', 'register_into'
]
