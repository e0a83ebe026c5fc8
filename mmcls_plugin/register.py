# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Registers the shared InternImage classes into mmpretrain's registries,
this project's classifiers into mmpretrain's model hub, and lets torch's
weights_only loading read the checkpoints mmengine's Runner writes
(internimage.runner.allow_mmengine_checkpoints), so that mmpretrain's own
inference APIs load what tools/train.py saved."""
import os.path as osp

from mmpretrain.apis import ModelHub
from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

import internimage
from internimage.registry import register_into
from internimage.runner import allow_mmengine_checkpoints

#: The metafile of configs/mmpretrain, relative to where the configs are.
METAFILE = osp.join('configs', 'mmpretrain', 'metafile.yml')


def register_model_index():
    """Add the models of configs/mmpretrain/metafile.yml to mmpretrain's
    ``ModelHub``, so that ``list_models('internimage*')``,
    ``get_model('internimage-t_8xb128_in1k-224px', pretrained=CHECKPOINT)``,
    ``ImageClassificationInferencer(NAME, pretrained=...)`` and
    ``inference_model`` know them by name. The configs are those of the
    package's ``.mim`` folder (an installed package) or of the source tree;
    an install without them registers nothing. Returns the metafile used,
    or None."""
    package = osp.dirname(osp.abspath(internimage.__file__))
    for prefix in (osp.join(package, '.mim'), osp.dirname(package)):
        metafile = osp.join(prefix, METAFILE)
        if osp.isfile(metafile):
            break
    else:
        return None
    if not ModelHub.has('internimage-t_8xb128_in1k-224px'):
        ModelHub.register_model_index(metafile, config_prefix=prefix)
    return metafile


register_into(MODELS, OPTIM_WRAPPER_CONSTRUCTORS)
allow_mmengine_checkpoints()
register_model_index()
