# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage for mmpretrain: ``custom_imports=dict(imports=['mmcls_plugin'],
allow_failed_imports=False)`` registers ``InternImage`` and
``InternImageClsHead`` in ``mmpretrain.registry.MODELS``, the classifiers of
configs/mmpretrain in mmpretrain's model hub, and lets mmpretrain's APIs read
Runner checkpoints with torch's weights_only loading (see ``register``)."""
from . import heads, register  # noqa: F401
