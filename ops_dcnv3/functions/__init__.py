# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Import paths of the official ``ops_dcnv3.functions``."""
from .dcnv3_func import DCNv3Function, dcnv3_core_pytorch

__all__ = ['DCNv3Function', 'dcnv3_core_pytorch']
