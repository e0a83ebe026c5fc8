# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Parameters and FLOPs of an mmdet detector as the official counter.

The official (mmdet 2) ``get_flops.py`` counts ``forward_dummy`` on one
image: backbone, neck, the dense head, and for two-stage detectors the RoI
heads on 1000 proposals (the box heads) and the first 100 of them (the mask
heads), every cascade stage included. RoI pooling, NMS and element-wise
operations count nothing. This module counts the same parts, each with
:func:`internimage.complexity.count_flops` (so that models built on the
meta device are counted part by part), and registers itself for configs
whose ``default_scope`` is 'mmdet'. DETR-like detectors (DINO) count their
transformer and head through ``forward_transformer``.
"""
import copy
from collections import Counter
from typing import Optional, Tuple

import torch
from torch import nn

from internimage.cbnet import CBInternImage
from internimage.complexity import (_materialise, build_from_config,
                                    count_flops, count_params,
                                    register_complexity)

#: The input of the paper's detection FLOPs.
DEFAULT_SHAPE = (800, 1280)
NUM_PROPOSALS = 1000
NUM_MASK_ROIS = 100


def _flops(module, inputs, max_params) -> Counter:
    counts = count_flops(module, inputs, max_params)
    counts.pop('total')
    return Counter(counts)


def _device(model):
    return next(model.parameters()).device


def _backbone_flops(backbone, img, max_params) -> Counter:
    if not isinstance(backbone, CBInternImage):
        return _flops(backbone, (img, ), max_params)
    # Both InternImages level by level (the lead one has no stem and
    # receives the fused assisting features), plus the fusion convs.
    assisting, lead = backbone.cb_modules
    total = _flops(assisting, (img, ), max_params)
    with torch.no_grad():
        y = assisting.pos_drop(assisting.patch_embed(img))
        inputs, feats = [], []
        for level in assisting.levels:
            inputs.append(y)
            y, feature = level(y)
            feats.append(feature.permute(0, 3, 1, 2))
    for level, x in zip(lead.levels, inputs):
        total += _flops(level, (x, ), max_params)
    for i, linears in enumerate(backbone.cb_linears):
        for j, linear in enumerate(linears):
            if isinstance(linear, nn.Conv2d):
                total += _flops(linear, (feats[i + j], ), max_params)
    return total


def _roi_feats(extractor, num, device):
    size = extractor.roi_layers[0].output_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return torch.zeros(num, extractor.out_channels, *size, device=device)


def _roi_head_flops(roi_head, max_params) -> Counter:
    device = _device(roi_head)
    total = Counter()
    stages = getattr(roi_head, 'num_stages', None)
    pairs = []
    if stages is None:
        pairs.append((roi_head.bbox_roi_extractor, roi_head.bbox_head,
                      getattr(roi_head, 'mask_roi_extractor', None),
                      getattr(roi_head, 'mask_head', None)))
    else:
        for i in range(stages):
            mask = roi_head.with_mask
            pairs.append((
                roi_head.bbox_roi_extractor[i], roi_head.bbox_head[i],
                roi_head.mask_roi_extractor[i] if mask else None,
                roi_head.mask_head[i] if mask else None))
    for bbox_extractor, bbox_head, mask_extractor, mask_head in pairs:
        feats = _roi_feats(bbox_extractor, NUM_PROPOSALS, device)
        total += _flops(bbox_head, (feats, ), max_params)
        if mask_head is not None:
            feats = _roi_feats(mask_extractor, NUM_MASK_ROIS, device)
            total += _flops(mask_head, (feats, ), max_params)
    return total


class _TransformerAndHead(nn.Module):
    """A DETR-like detector's transformer and head on given features (a
    shallow copy of the detector without its backbone and neck, so that
    counting it copies only these parts)."""

    def __init__(self, detector, data_samples):
        super().__init__()
        lite = copy.copy(detector)
        lite._modules = {
            name: module
            for name, module in detector._modules.items()
            if name not in ('backbone', 'neck', 'data_preprocessor')
        }
        self.detector = lite
        self.data_samples = data_samples

    def forward(self, *feats):
        inputs = self.detector.forward_transformer(feats, self.data_samples)
        return self.detector.bbox_head(
            hidden_states=inputs['hidden_states'],
            references=inputs['references'])


def _data_samples(shape):
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(
        img_shape=shape, batch_input_shape=shape, ori_shape=shape,
        pad_shape=shape, scale_factor=(1., 1.)))
    return [sample]


def detector_complexity(cfg, shape: Optional[Tuple[int, int]] = None,
                        device: str = 'meta',
                        max_params: Optional[int] = 10_000_000) -> dict:
    """Params and FLOPs of ``cfg.model`` (an mmdet detector) for one
    (1, 3, H, W) image, default 800 x 1280 as in the paper; the same dict
    as :func:`internimage.complexity.model_complexity`."""
    from mmdet.models.detectors import DetectionTransformer
    shape = tuple(shape) if shape else DEFAULT_SHAPE
    model = build_from_config(cfg, device).eval()
    if device == 'meta':
        # Parameters made with torch.Tensor(...) (DINO's level_embed) ignore
        # the device context: move them too.
        model = model.to('meta')
    img = torch.randn(1, 3, *shape).to(_device(model))
    total = _backbone_flops(model.backbone, img, max_params)
    with torch.no_grad():
        feats = model.backbone(img)
    if getattr(model, 'neck', None) is not None:
        total += _flops(model.neck, (feats, ), max_params)
        with torch.no_grad():
            feats = model.neck(feats)
    if isinstance(model, DetectionTransformer):
        # The transformer takes its token counts from tensors (.item()),
        # which the meta device cannot do: count it on the CPU, whole (it
        # is small) with dummy weights and features.
        head = _materialise(_TransformerAndHead(model, _data_samples(shape)))
        feats = tuple(torch.randn(f.shape) for f in feats)
        total += _flops(head, feats, None)
    else:
        for name in ('rpn_head', 'bbox_head'):
            head = getattr(model, name, None)
            if head is not None:
                total += _flops(head, (feats, ), max_params)
        if getattr(model, 'roi_head', None) is not None:
            total += _roi_head_flops(model.roi_head, max_params)
    return dict(params=count_params(model), flops=sum(total.values()),
                flops_by_operator=dict(total), shape=shape)


register_complexity('mmdet', detector_complexity)
