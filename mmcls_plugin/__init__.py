# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage for mmpretrain: ``custom_imports=dict(imports=['mmcls_plugin'],
allow_failed_imports=False)`` registers ``InternImage`` and
``InternImageClsHead`` in ``mmpretrain.registry.MODELS``."""
from . import heads, register  # noqa: F401
