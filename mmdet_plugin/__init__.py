# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""InternImage for mmdet: ``custom_imports=dict(imports=['mmdet_plugin'],
allow_failed_imports=False)``."""
from . import complexity, register  # noqa: F401
