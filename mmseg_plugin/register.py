# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Registers the shared InternImage classes into mmseg's registries, and
lets torch's weights_only loading read the checkpoints mmengine's Runner
writes (internimage.runner.allow_mmengine_checkpoints), so that mmseg's own
inference APIs load what tools/train.py saved."""
from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from internimage.registry import register_into
from internimage.runner import allow_mmengine_checkpoints

register_into(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
allow_mmengine_checkpoints()
