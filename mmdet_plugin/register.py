# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Registers the shared InternImage classes into mmdet's registries, and
lets torch's weights_only loading read the checkpoints mmengine's Runner
writes (internimage.runner.allow_mmengine_checkpoints), so that mmdet's own
inference APIs load what tools/train.py saved."""
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from internimage.cbnet import CBInternImage
from internimage.registry import register_into
from internimage.runner import allow_mmengine_checkpoints

register_into(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
allow_mmengine_checkpoints()
MODELS.register_module(module=CBInternImage)
