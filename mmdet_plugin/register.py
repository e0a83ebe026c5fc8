# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Registers the shared InternImage classes into mmdet's registries."""
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from internimage.cbnet import CBInternImage
from internimage.registry import register_into

register_into(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
MODELS.register_module(module=CBInternImage)
