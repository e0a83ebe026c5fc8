# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Registers the shared InternImage classes into mmseg's registries."""
from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from internimage.registry import register_into

register_into(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
