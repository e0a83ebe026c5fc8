# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Params and FLOPs of mmseg segmentors, as the official get_flops counts
them (``forward_dummy``: backbone, neck and decode head on one image; the
auxiliary head, used in training only, is not counted).

Registered for configs of ``default_scope='mmseg'`` with
:func:`internimage.complexity.register_complexity`. The input is
``shape``, else the config's ``complexity_shape`` (the shape the official
table used), else its test resize scale.
"""
from typing import Optional, Tuple

import torch
from torch import nn

from internimage.complexity import (_materialise, build_from_config,
                                    count_flops, count_params,
                                    register_complexity, test_shape)

#: Functional operators the official counter (mmcv 1.x's
#: get_model_complexity_info, which hooks modules) cannot see: Mask2Former's
#: mask einsum and attention matmuls, the pixel decoder's grid_sample.
#: Counting them would put Mask2Former-H 5.3% above the paper's 4635G.
OFFICIAL_UNSEEN_OPS = ('aten::einsum', 'aten::matmul', 'aten::bmm',
                       'aten::baddbmm', 'aten::grid_sampler')


class DecodeHeadForward(nn.Module):
    """``head(feats)`` with what the head needs besides the features.

    UPerHead & co take the features only; Mask2Former's head also takes the
    data samples (image sizes), which tracing cannot pass: they are held
    here. Returns the logits (UperNet) or the last mask predictions.
    """

    def __init__(self, head: nn.Module, shape: Tuple[int, int]):
        super().__init__()
        self.head = head
        self.shape = tuple(shape)

    def forward(self, *feats):
        if type(self.head).__name__ == 'Mask2FormerHead':
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=dict(
                img_shape=self.shape, pad_shape=self.shape,
                ori_shape=self.shape, batch_input_shape=self.shape))
            _, mask_preds = self.head(list(feats),
                                      [sample] * feats[0].shape[0])
            return mask_preds[-1]
        return self.head(list(feats))


@register_complexity('mmseg')
def segmentor_complexity(cfg, shape: Optional[Tuple[int, int]] = None,
                         device: str = 'meta',
                         max_params: Optional[int] = 10_000_000) -> dict:
    """:func:`internimage.complexity.model_complexity` for mmseg configs.

    The backbone (and neck) is counted by parts on the meta device
    (:func:`~internimage.complexity.count_flops`); the decode head, whose
    forward some heads cannot run on the meta device (Mask2Former's masked
    attention depends on values), is materialised on the CPU with dummy
    weights and traced whole, without :data:`OFFICIAL_UNSEEN_OPS`.
    """
    if shape is None:
        shape = cfg.get('complexity_shape') or test_shape(cfg)
    shape = tuple(shape)
    model = build_from_config(cfg, device)
    inputs = torch.randn(1, 3, *shape)
    flops = count_flops(model.backbone, (inputs, ), max_params)
    with torch.no_grad():
        feats = model.backbone(inputs.to(device))
        if getattr(model, 'with_neck', False):
            neck_flops = count_flops(model.neck, (tuple(feats), ),
                                     max_params)
            for k, v in neck_flops.items():
                flops[k] = flops.get(k, 0) + v
            feats = model.neck(feats)
    feats = tuple(torch.randn(f.shape) for f in feats)
    head = DecodeHeadForward(_materialise(model.decode_head), shape)
    head_flops = count_flops(head, feats, max_params=None,
                             ignored_ops=OFFICIAL_UNSEEN_OPS)
    del head
    for k, v in head_flops.items():
        flops[k] = flops.get(k, 0) + v
    total = flops.pop('total')
    return dict(params=count_params(model), flops=total,
                flops_by_operator=flops, shape=shape)
