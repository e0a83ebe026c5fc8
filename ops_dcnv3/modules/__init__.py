# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Import paths of the official ``ops_dcnv3.modules``."""
from .dcnv3 import DCNv3, DCNv3_pytorch

__all__ = ['DCNv3', 'DCNv3_pytorch']
