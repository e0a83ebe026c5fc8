# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Layer-wise learning-rate decay for InternImage, as the official code.

The official repository has two schemes, both reproduced here exactly:

- ``decay_style='detection'``: ``CustomLayerDecayOptimizerConstructor`` of
  the official detection/segmentation code (the default, so that their
  ``paramwise_cfg`` ports unchanged);
- ``decay_style='classification'``: ``set_weight_decay_and_lr`` of the
  official ``classification/optimizer.py``.

Both give every parameter a layer id and the learning rate
``lr * layer_decay_rate ** (max_id - layer_id)``; they differ in the ids of
the stem, of the last norms and of the head, and in which parameters skip
weight decay and get ``offset_lr_scale``.
"""
import logging
import re
from typing import List, Optional, Sequence

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

_BLOCK = re.compile(r'levels\.(\d+)\.blocks\.(\d+)\.')
_LEVEL_END = re.compile(r'levels\.(\d+)\.(downsample|norm)')

#: Default ``offset_keys`` per style: the official sets of name fragments.
OFFSET_KEYS = {
    # DINO / Deformable-DETR heads of the detection code.
    'detection': ('sampling_offsets', 'reference_points'),
    # DCNv3 offsets and centre feature scales of the backbone ('offset' also
    # matches sampling_offsets), official DCN_LR_MUL.
    'classification': ('offset', 'attention_weights',
                       'center_feature_scale_proj', 'alpha_beta'),
}


class InternImageLayerDecayOptimWrapperConstructor(
        DefaultOptimWrapperConstructor):
    """Layer-wise lr decay, no weight decay on norms, biases and layer scales.

    Registered in mmpretrain, mmdet and mmseg as
    ``InternImageLayerDecayOptimWrapperConstructor`` and under the official
    name ``CustomLayerDecayOptimizerConstructor``. Parameters with
    ``requires_grad=False`` are left out, as in the official code.

    ``paramwise_cfg`` keys (all optional):

    - ``layer_decay_rate`` (float): decay per layer. Default: 1.0 (no decay;
      the official weight-decay rules still apply).
    - ``decay_style`` (str): 'detection' or 'classification', see below.
      Default: 'detection'.
    - ``depths`` (list[int]): blocks per level; checked against
      ``model.backbone.depths``, which is the default.
    - ``num_layers`` (int): 'detection' only, the official ``num_layers``
      (``sum(depths)`` in every official config; the default).
    - ``offset_lr_scale`` (float): lr multiplier of the parameters whose
      name contains one of ``offset_keys`` (the official ``offset_lr_scale``
      of detection, ``DCN_LR_MUL`` of classification). Default: 1.0.
    - ``offset_keys`` (list[str]): default :data:`OFFSET_KEYS` of the style.
      (The official classification code applies ``DCN_LR_MUL`` only with
      layer decay on, so its configs without layer decay, those of the
      paper, train the offsets at the full lr: leave ``offset_lr_scale`` at
      1 to reproduce them.)
    - ``backbone_small_lr``, ``dino_head`` (bool): the official detection
      options: a further 0.1x on every decayed layer, resp. 0.1x (instead of
      ``offset_lr_scale``) on the head's sampling offsets. Default: False.

    Layer ids (``B`` = blocks before level i, ``D`` = all blocks):

    ====================================  ==============  ===============
    parameter                             'detection'     'classification'
    ====================================  ==============  ===============
    ``backbone.patch_embed``              0               1
    ``backbone.levels.i.blocks.j``        B + j + 1       B + j + 1
    ``levels.i.downsample/norm``          first block of  first block of
                                          level i+1       level i+1 (last
                                          (last level:    level's norm:
                                          its own first   head)
                                          block)
    ``levels.2.post_norms.k`` (H/G)       B + k + 1 (*)   head
    anything else (head, neck, ...)       D + 1           D
    max_id (gets the full lr)             D + 1           D
    ====================================  ==============  ===============

    (*) The official detection code reads the post norm's index as a block
    index; reproduced as is. Detection-style names containing
    ``level_embeds`` (the official DINO) or ``level_embed`` (mmdet 3's
    DINO) also get id 0.

    CB-InternImage (:class:`~internimage.cbnet.CBInternImage`): its
    parameters (``backbone.cb_modules.{0,1}.*``, ``backbone.cb_linears.*``)
    start with neither ``backbone.patch_embed`` nor ``backbone.levels``, so
    in the 'detection' style they all get max_id and the full lr, exactly as
    in the official ``CustomLayerDecayOptimizerConstructor``, with which the
    official CB-DINO was fine-tuned (its config's 0.94 decay reaches only
    ``level_embed``). This is kept, so that the official recipe trains as it
    did; a warning says so when ``layer_decay_rate`` is not 1.

    No weight decay: 1-D parameters (norms, biases, layer scales ``gamma``)
    and names ending in ``.bias``; 'detection' also names containing
    'norm', 'relative_position' or 'sampling_offsets'.
    """

    STYLES = ('detection', 'classification')
    KEYS = ('layer_decay_rate', 'decay_style', 'depths', 'num_layers',
            'offset_lr_scale', 'offset_keys', 'backbone_small_lr', 'dino_head')

    def __init__(self, optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(self.KEYS))
        if unknown:
            raise ValueError(
                f'{type(self).__name__}: unknown paramwise_cfg keys {unknown}'
                f'; known: {list(self.KEYS)}. (The official constructor '
                'silently ignores custom_keys and *_mult: drop them to '
                'reproduce an official config.)')
        style = paramwise_cfg.setdefault('decay_style', 'detection')
        if style not in self.STYLES:
            raise ValueError(f'{type(self).__name__}: decay_style must be one '
                             f'of {self.STYLES}, got {style!r}')
        if style == 'classification':
            for key in ('num_layers', 'backbone_small_lr', 'dino_head'):
                if key in paramwise_cfg:
                    raise ValueError(
                        f'{type(self).__name__}: {key} belongs to '
                        "decay_style='detection'")
        paramwise_cfg.setdefault('layer_decay_rate', 1.0)
        # A non-empty paramwise_cfg makes the base class call add_params.
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None or self.base_wd is None:
            raise ValueError(f'{type(self).__name__}: the optimizer needs lr '
                             'and weight_decay')

    # ------------------------------------------------------------ layer ids
    @staticmethod
    def detection_layer_id(name: str, depths: Sequence[int],
                           max_id: int) -> int:
        """The official detection/segmentation layer id of ``name``."""
        if name.startswith('backbone.patch_embed') or 'level_embed' in name:
            return 0
        if not name.startswith('backbone.levels.'):
            return max_id
        parts = name.split('.')
        level = int(parts[2])
        if parts[3] in ('downsample', 'norm'):
            return 1 + sum(depths[:min(level + 1, len(depths) - 1)])
        # blocks.j, and (as the official code) post_norms.k read as block k
        return 1 + sum(depths[:level]) + int(parts[4])

    @staticmethod
    def classification_layer_id(name: str, depths: Sequence[int],
                                max_id: int) -> int:
        """The official classification layer id of ``name``."""
        found = _BLOCK.search(name)
        if found:
            level, block = int(found[1]), int(found[2])
            return 1 + sum(depths[:level]) + block
        if 'patch_embed' in name:
            return 1
        found = _LEVEL_END.search(name)
        if found and int(found[1]) < len(depths) - 1:
            return 1 + sum(depths[:int(found[1]) + 1])
        return max_id

    def _no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        if param.ndim <= 1 or name.endswith('.bias'):
            return True
        return self.paramwise_cfg['decay_style'] == 'detection' and any(
            k in name
            for k in ('relative_position', 'norm', 'sampling_offsets'))

    def _depths(self, module: nn.Module) -> List[int]:
        backbone = getattr(module, 'backbone', None)
        model_depths = getattr(backbone, 'depths', None)
        depths = self.paramwise_cfg.get('depths')
        if depths is None:
            if model_depths is None:
                raise ValueError(
                    f'{type(self).__name__}: give paramwise_cfg.depths (the '
                    'model has no backbone.depths)')
            return list(model_depths)
        if model_depths is not None and list(depths) != list(model_depths):
            raise ValueError(
                f'{type(self).__name__}: paramwise_cfg.depths={list(depths)} '
                f'but the backbone has depths={list(model_depths)}')
        return list(depths)

    def add_params(self, params: List[dict], module: nn.Module,
                   prefix: str = '', **kwargs) -> None:
        """Fill ``params`` with one group per (layer id, weight decay, lr
        scale). Each group has ``lr``, ``weight_decay``, ``lr_scale``,
        ``layer_id`` and ``param_names``."""
        cfg = self.paramwise_cfg
        style = cfg['decay_style']
        rate = cfg['layer_decay_rate']
        depths = self._depths(module)
        if style == 'detection':
            num_layers = cfg.get('num_layers', sum(depths))
            max_id = num_layers + 1
            layer_id_of = self.detection_layer_id
        else:
            max_id = sum(depths)
            layer_id_of = self.classification_layer_id
        offset_scale = cfg.get('offset_lr_scale', 1.0)
        offset_keys = tuple(cfg.get('offset_keys', OFFSET_KEYS[style]))

        groups = {}
        for name, param in module.named_parameters(prefix=prefix.rstrip('.')):
            if not param.requires_grad:
                continue
            layer_id = layer_id_of(name, depths, max_id)
            scale = rate**(max_id - layer_id)
            if style == 'detection' and cfg.get(
                    'backbone_small_lr', False) and scale < 1:
                scale *= 0.1
            if any(k in name for k in offset_keys):
                if (style == 'detection' and cfg.get('dino_head', False)
                        and layer_id == max_id):
                    scale *= 0.1
                else:
                    scale *= offset_scale
            wd = 0. if self._no_weight_decay(name, param) else self.base_wd
            key = (layer_id, wd, scale)
            if key not in groups:
                groups[key] = dict(params=[], param_names=[],
                                   lr=self.base_lr * scale, weight_decay=wd,
                                   lr_scale=scale, layer_id=layer_id)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        params.extend(groups.values())
        if style == 'detection' and rate != 1:
            self._warn_undecayed_backbone(groups, max_id)
        print_log(
            f'{type(self).__name__}: {style} style, layer_decay_rate={rate}, '
            f'{len(groups)} parameter groups over layer ids 0..{max_id}',
            logger='current')

    @staticmethod
    def _warn_undecayed_backbone(groups: dict, max_id: int) -> None:
        """Backbone parameters the decay does not reach (CB-InternImage's):
        say so, since the config's decay rate does nothing for them."""
        names = [name for (layer_id, _, _), group in groups.items()
                 if layer_id == max_id for name in group['param_names']
                 if name.startswith('backbone.')]
        if names:
            modules = sorted({'.'.join(n.split('.')[:2]) for n in names})
            print_log(
                f'layer-wise lr decay: {len(names)} backbone parameters '
                f'({", ".join(modules)}) match no decayed layer '
                '(backbone.patch_embed, backbone.levels.i) and get the full '
                'lr, as in the official CustomLayerDecayOptimizerConstructor',
                logger='current', level=logging.WARNING)
