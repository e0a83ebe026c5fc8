# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""What each OpenMMLab library's plugin registers: the same classes for
all."""
from .backbone import InternImage
from .layer_decay import InternImageLayerDecayOptimWrapperConstructor


def register_into(models, optim_wrapper_constructors):
    """Register :class:`InternImage` in ``models`` and the layer-decay
    constructor in ``optim_wrapper_constructors`` (also under the official
    name ``CustomLayerDecayOptimizerConstructor``)."""
    models.register_module(module=InternImage)
    optim_wrapper_constructors.register_module(
        name=['InternImageLayerDecayOptimWrapperConstructor',
              'CustomLayerDecayOptimizerConstructor'],
        module=InternImageLayerDecayOptimWrapperConstructor)
