# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage for mmseg: ``custom_imports=dict(imports=['mmseg_plugin'],
allow_failed_imports=False)``."""
from . import complexity, register, transforms  # noqa: F401
