# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Attention pooling of the InternImage-H/G classification head.

The official head (``clip_projector``) pools a token map into one vector:
the query is the mean token, keys and values are the tokens. Names follow the
official ``AttentionPoolingBlock``/``CrossAttention`` (``cross_dcn`` is
plain multi-head attention despite its name).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ops_dcnv3.modules.dcnv3 import build_norm_layer


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``x`` over keys ``k`` and values ``v``.

    Args:
        dim (int): input channels of q, k and v.
        num_heads (int): heads. Default: 8.
        qkv_bias (bool): learn biases ``q_bias``/``k_bias``/``v_bias``.
            Default: False.
        qk_scale (float, optional): attention scale; None means
            ``head_dim ** -0.5``. Default: None.
        attn_drop (float): dropout on the attention weights. Default: 0.
        proj_drop (float): dropout on the output. Default: 0.
        attn_head_dim (int, optional): channels per head; None means
            ``dim // num_heads``. ``num_heads * head_dim`` must equal
            ``dim``. Default: None.
        out_dim (int, optional): output channels; None means ``dim``.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None,
                 attn_drop=0., proj_drop=0., attn_head_dim=None,
                 out_dim=None):
        super().__init__()
        head_dim = attn_head_dim or dim // num_heads
        if head_dim * num_heads != dim:
            raise ValueError(
                f'CrossAttention: num_heads ({num_heads}) * head_dim '
                f'({head_dim}) must equal dim ({dim})')
        self.num_heads = num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.k_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, out_dim or dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x, linear, bias):
        n, length, _ = x.shape
        x = F.linear(x, linear.weight, bias)
        return x.reshape(n, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, x, k, v):
        """(N, Lq, C), (N, Lk, C), (N, Lk, C) -> (N, Lq, out_dim)."""
        q = self._heads(x, self.q, self.q_bias)
        k = self._heads(k, self.k, self.k_bias)
        v = self._heads(v, self.v, self.v_bias)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.,
            scale=self.scale)
        x = x.transpose(1, 2).flatten(2)
        return self.proj_drop(self.proj(x))


class AttentionPoolingBlock(nn.Module):
    """Pools (N, L, C) tokens to (N, out_dim): LayerNorms on the mean token
    (query) and on the tokens (keys, values), then :class:`CrossAttention`.

    Args:
        dim (int): token channels.
        num_heads (int): attention heads.
        qkv_bias (bool): see :class:`CrossAttention`. Default: False.
        qk_scale (float, optional): see :class:`CrossAttention`.
        drop (float): output dropout. Default: 0.
        attn_drop (float): attention dropout. Default: 0.
        norm_layer (str): 'LN' (the only norm of the official head).
        attn_head_dim (int, optional): see :class:`CrossAttention`.
        out_dim (int, optional): output channels; None means ``dim``.
    """

    def __init__(self, dim, num_heads, qkv_bias=False, qk_scale=None,
                 drop=0., attn_drop=0., norm_layer='LN', attn_head_dim=None,
                 out_dim=None):
        super().__init__()
        self.norm1_q = build_norm_layer(dim, norm_layer)
        self.norm1_k = build_norm_layer(dim, norm_layer)
        self.norm1_v = build_norm_layer(dim, norm_layer)
        self.cross_dcn = CrossAttention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
            attn_drop=attn_drop, proj_drop=drop, attn_head_dim=attn_head_dim,
            out_dim=out_dim)

    def forward(self, x):
        query = self.norm1_q(x.mean(1, keepdim=True))
        out = self.cross_dcn(query, k=self.norm1_k(x), v=self.norm1_v(x))
        return out.squeeze(1)
