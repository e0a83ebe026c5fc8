# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Registers the shared InternImage classes into mmpretrain's registries."""
from mmpretrain.registry import MODELS

from internimage import InternImage

MODELS.register_module(module=InternImage)
