# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""CBNet: a composite backbone of two InternImages (CB-InternImage-H).

CBNet (https://arxiv.org/abs/2107.00420) runs an *assisting* backbone, then
a *lead* backbone whose level ``i`` input also receives, through 1x1 convs
and nearest resizing, the assisting backbone's features of levels ``i`` and
above, scaled by a learned per-channel ``gamma`` (zero at initialisation, so
that the lead backbone starts as a plain InternImage). The lead backbone has
no stem of its own: it starts from the assisting backbone's stem output.

The parameter names are the official ``CBInternImage``'s
(``cb_modules.{0,1}``, ``cb_modules.1.gamma{i}``, ``cb_linears.{i}.{j}``), so
its checkpoints load after the detector-level conversion only.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from .backbone import InternImage


class CBInternImage(BaseModule):
    """Composite backbone of two :class:`InternImage` of the same size.

    Returns the lead backbone's features of ``out_indices[1]`` (NCHW), the
    features the official detector predicts from.

    Args:
        out_indices (Sequence[Sequence[int]]): levels returned by the
            assisting and the lead backbone. The assisting one must return
            every level (they all feed the lead one). Default:
            ``((0, 1, 2, 3), (1, 2, 3))`` as the official CB-InternImage-H.
        cb_del_stages (int): 1 (the only value the official code uses): the
            lead backbone drops its stem.
        init_cfg (dict, optional): for this module (the InternImages take
            their own ``init_cfg`` through ``**kwargs``).
        **kwargs: every :class:`InternImage` argument (``arch``,
            ``drop_path_rate``, ``with_cp``, ...), given to both backbones.

    Note:
        The official training also computes the detection loss on the
        assisting backbone's features (weight 0.5, a CB-DINO detector); this
        backbone gives the lead features only, which is what inference and
        fine-tuning from the released weights use.
    """

    def __init__(self,
                 out_indices: Sequence[Sequence[int]] = ((0, 1, 2, 3),
                                                         (1, 2, 3)),
                 cb_del_stages: int = 1,
                 init_cfg=None,
                 **kwargs):
        super().__init__(init_cfg=init_cfg)
        if len(out_indices) != 2 or not all(
                isinstance(o, (list, tuple)) for o in out_indices):
            raise ValueError(
                'CBInternImage: out_indices must give the levels of the '
                'assisting and of the lead backbone, e.g. [(0, 1, 2, 3), '
                f'(1, 2, 3)], got {out_indices!r}')
        if cb_del_stages != 1:
            raise ValueError('CBInternImage: only cb_del_stages=1 (the lead '
                             'backbone without its stem) is implemented, got '
                             f'{cb_del_stages}')
        if kwargs.get('frozen_stages', -1) != -1:
            raise ValueError('CBInternImage: frozen_stages is not supported')
        self.cb_modules = nn.ModuleList(
            InternImage(out_indices=tuple(o), **kwargs) for o in out_indices)
        assisting, lead = self.cb_modules
        levels = assisting.num_levels
        if tuple(assisting.out_indices) != tuple(range(levels)):
            raise ValueError(
                'CBInternImage: the assisting backbone (out_indices[0]) must '
                f'return every level {tuple(range(levels))}, got '
                f'{tuple(out_indices[0])}')
        del lead.patch_embed
        channels = [assisting.channels * 2**i for i in range(levels)]
        for i, c in enumerate(channels):
            lead.register_parameter(f'gamma{i}',
                                    nn.Parameter(torch.zeros(c)))
        self.cb_linears = nn.ModuleList()
        for i in range(levels):
            self.cb_linears.append(nn.ModuleList(
                nn.Conv2d(channels[j], channels[i], 1)
                if channels[j] != channels[i] else nn.Identity()
                for j in range(i, levels)))
        self.out_indices = [tuple(o) for o in out_indices]
        # Read by the layer-wise lr decay, which checks paramwise_cfg.depths
        # against it. The decay does not reach this module's parameters
        # (cb_modules.*, cb_linears.*): they get the full lr, as in the
        # official constructor (InternImageLayerDecayOptimWrapperConstructor).
        self.depths = assisting.depths
        self.num_levels = levels

    def init_weights(self):
        for module in self.cb_modules:
            module.init_weights()

    def _fusion(self, feats, i, size):
        """Input added to the lead backbone's level ``i`` (NHWC)."""
        total = 0
        for j, linear in enumerate(self.cb_linears[i]):
            x = linear(feats[i + j])
            if tuple(x.shape[2:]) != tuple(size):
                x = F.interpolate(x, size=size, mode='nearest')
            total = total + x
        return total.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor):
        """(N, 3, H, W) -> the lead backbone's features, NCHW."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError('CBInternImage: expected images (N, 3, H, W), '
                             f'got shape {tuple(x.shape)}')
        assisting, lead = self.cb_modules
        stem = assisting.pos_drop(assisting.patch_embed(x))
        y, feats = stem, []
        for level in assisting.levels:
            y, feature = level(y)
            feats.append(feature.permute(0, 3, 1, 2))
        y, outs = stem, []
        for i, level in enumerate(lead.levels):
            gamma = getattr(lead, f'gamma{i}')
            y = y + gamma * self._fusion(feats, i, y.shape[1:3])
            y, feature = level(y)
            if i in lead.out_indices:
                outs.append(feature.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    def train(self, mode=True):
        super().train(mode)
        for module in self.cb_modules:
            module.train(mode)
        return self
