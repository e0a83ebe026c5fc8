# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage for mmseg: ``custom_imports=dict(imports=['mmseg_plugin'],
allow_failed_imports=False)`` registers InternImage, the layer-decay
constructor and the data checks, and lets mmseg's APIs read Runner
checkpoints with torch's weights_only loading (see ``register``)."""
from . import complexity, register, transforms  # noqa: F401
