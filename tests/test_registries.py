# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""One InternImage, registered in mmpretrain, mmdet and mmseg."""
import copy
import importlib

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings
from official_format import TINY

from internimage import (InternImage,
                         InternImageLayerDecayOptimWrapperConstructor)

LIBRARIES = [('mmpretrain', 'mmcls_plugin'), ('mmdet', 'mmdet_plugin'),
             ('mmseg', 'mmseg_plugin')]


@pytest.mark.parametrize('library, plugin', LIBRARIES)
def test_the_same_classes_in_every_library(library, plugin):
    cfg = Config(dict(custom_imports=dict(imports=[plugin],
                                          allow_failed_imports=False)))
    import_modules_from_strings(**cfg.custom_imports)
    registry = importlib.import_module(f'{library}.registry')
    assert registry.MODELS.get('InternImage') is InternImage
    for name in ('InternImageLayerDecayOptimWrapperConstructor',
                 'CustomLayerDecayOptimizerConstructor'):
        assert registry.OPTIM_WRAPPER_CONSTRUCTORS.get(name) is \
            InternImageLayerDecayOptimWrapperConstructor
    with DefaultScope.overwrite_default_scope(library):
        backbone = registry.MODELS.build(
            dict(type='InternImage', arch=copy.deepcopy(TINY['t'])))
    outs = backbone(torch.zeros(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == backbone.out_channels == [
        8, 16, 32, 64
    ]
