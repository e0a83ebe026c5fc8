# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage for mmdet: ``custom_imports=dict(imports=['mmdet_plugin'],
allow_failed_imports=False)`` registers InternImage, CBInternImage and the
layer-decay constructor, and lets mmdet's APIs read Runner checkpoints with
torch's weights_only loading (see ``register``)."""
from . import complexity, register  # noqa: F401
