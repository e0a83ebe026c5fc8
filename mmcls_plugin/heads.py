# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The official InternImage classification heads as an mmpretrain head."""
from typing import Sequence, Tuple

import torch
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import nn

from internimage.attention_pool import AttentionPoolingBlock
from ops_dcnv3.modules.dcnv3 import build_act_layer, build_norm_layer


@MODELS.register_module()
class InternImageClsHead(ClsHead):
    """The official InternImage classification head.

    - T to XL (``use_clip_projector=False``): ``conv_head`` (1x1 conv to
      ``cls_scale`` times the channels, BatchNorm, activation) on the last
      feature map, global average pooling, then the linear classifier
      ``fc``.
    - H and G (``use_clip_projector=True``): the last map through a 1x1 conv
      and a 2x pixel shuffle (``dcnv3_head_x4``) plus the one before through
      a 1x1 conv (``dcnv3_head_x3``), both to ``pretrain_embed_dim``
      channels; attention pooling (``clip_projector``), LayerNorm
      (``fc_norm``), then ``fc``. The backbone must return its last two
      levels (``out_indices=(2, 3)``).

    Module names are the official ones under ``head.`` (the official ``head``
    linear layer is ``head.fc``), see
    :data:`internimage.checkpoint.CLASSIFIER_RENAMES`.

    Args:
        num_classes (int): classes.
        in_channels (int): channels of the backbone's last level.
        cls_scale (float): hidden channels of ``conv_head`` per input
            channel. Default: 1.5.
        act_layer (str): activation of ``conv_head``. Default: 'GELU'.
        use_clip_projector (bool): the H/G head. Default: False.
        pretrain_embed_dim (int): H/G token channels. Default: 1024.
        attnpool_num_heads (int): H/G attention heads. Default: 16.
        clip_embed_dim (int): H/G pooled channels. Default: 768.
        norm_layer (str): norm of the H/G head. Default: 'LN'.
        init_cfg (dict | list[dict]): the official initialisation: truncated
            normal (std 0.02) linear layers, unit LayerNorms; convs keep
            PyTorch's default.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`ClsHead`.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 cls_scale: float = 1.5,
                 act_layer: str = 'GELU',
                 use_clip_projector: bool = False,
                 pretrain_embed_dim: int = 1024,
                 attnpool_num_heads: int = 16,
                 clip_embed_dim: int = 768,
                 norm_layer: str = 'LN',
                 init_cfg=(dict(type='TruncNormal', layer='Linear', std=.02,
                                bias=0.),
                           dict(type='Constant', layer='LayerNorm', val=1.,
                                bias=0.)),
                 **kwargs):
        super().__init__(init_cfg=list(init_cfg) if init_cfg else None,
                         **kwargs)
        if num_classes <= 0:
            raise ValueError(f'InternImageClsHead: num_classes must be '
                             f'positive, got {num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.use_clip_projector = use_clip_projector
        if not use_clip_projector:
            hidden = int(in_channels * cls_scale)
            self.conv_head = nn.Sequential(
                nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
                build_norm_layer(hidden, 'BN', 'channels_first',
                                 'channels_first'),
                build_act_layer(act_layer))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(hidden, num_classes)
            return
        if in_channels % 2:
            raise ValueError('InternImageClsHead: in_channels must be even '
                             f'(the level before has half), got {in_channels}')
        stride = 2
        self.dcnv3_head_x4 = nn.Sequential(
            nn.Conv2d(in_channels, pretrain_embed_dim * stride**2,
                      kernel_size=1), nn.PixelShuffle(stride))
        self.dcnv3_head_x3 = nn.Conv2d(in_channels // 2, pretrain_embed_dim,
                                       kernel_size=1)
        self.clip_projector = AttentionPoolingBlock(
            pretrain_embed_dim, attnpool_num_heads, qkv_bias=True,
            norm_layer=norm_layer, out_dim=clip_embed_dim)
        self.fc_norm = build_norm_layer(clip_embed_dim, norm_layer)
        self.fc = nn.Linear(clip_embed_dim, num_classes)

    def _check(self, feats: Sequence[torch.Tensor]):
        want = 2 if self.use_clip_projector else 1
        if len(feats) < want or feats[-1].shape[1] != self.in_channels:
            got = [tuple(f.shape) for f in feats]
            raise ValueError(
                f'InternImageClsHead: needs the last {want} backbone levels '
                f'with {self.in_channels} channels in the last one (set the '
                f"backbone's out_indices), got feature maps {got}")

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """Features before ``fc``: (N, C)."""
        self._check(feats)
        if not self.use_clip_projector:
            return self.avgpool(self.conv_head(feats[-1])).flatten(1)
        x = self.dcnv3_head_x4(feats[-1]) + self.dcnv3_head_x3(feats[-2])
        x = self.clip_projector(x.flatten(2).transpose(1, 2))
        return self.fc_norm(x)

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.pre_logits(feats))
