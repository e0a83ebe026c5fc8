# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Pure-PyTorch DCNv3 core: the reference every compiled backend is tested
against, and the fallback on devices that have no compiled kernel.

The semantics are those of ``docs/dcnv3_op.md``: channels-last tensors,
points ordered with the kernel's x index outer (``p = kx * kh + ky``), the
fixed grid and the learned offsets both scaled by ``offset_scale`` around the
kernel centre, bilinear sampling in which neighbours outside the image count
as zero.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def output_size(height: int, width: int, kernel_h: int, kernel_w: int,
                stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                dilation_h: int, dilation_w: int) -> Tuple[int, int]:
    """Spatial size of the DCNv3 output, as for a convolution."""
    h_out = (height + 2 * pad_h - (dilation_h * (kernel_h - 1) + 1)) // stride_h + 1
    w_out = (width + 2 * pad_w - (dilation_w * (kernel_w - 1) + 1)) // stride_w + 1
    return h_out, w_out


def kernel_points(kernel_h: int, kernel_w: int, dilation_h: int,
                  dilation_w: int, remove_center: bool,
                  dtype: torch.dtype = torch.float64,
                  device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Offsets of the P fixed sampling points from the kernel centre.

    Returns ``(dx, dy)``, each of shape (P,), in the op's point order.
    """
    cx = (dilation_w * (kernel_w - 1)) // 2
    cy = (dilation_h * (kernel_h - 1)) // 2
    # Built on the CPU (a handful of numbers) so that this also works for
    # tensors on the meta device, which cannot do boolean indexing.
    kx = torch.arange(kernel_w).repeat_interleave(kernel_h)
    ky = torch.arange(kernel_h).repeat(kernel_w)
    if remove_center:
        keep = (kx != (kernel_w - 1) // 2) | (ky != (kernel_h - 1) // 2)
        kx, ky = kx[keep], ky[keep]
    return ((kx * dilation_w - cx).to(dtype=dtype, device=device),
            (ky * dilation_h - cy).to(dtype=dtype, device=device))


def dcnv3_core_pytorch(input: torch.Tensor, offset: torch.Tensor,
                       mask: torch.Tensor, kernel_h: int, kernel_w: int,
                       stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                       dilation_h: int, dilation_w: int, group: int,
                       group_channels: int, offset_scale: float,
                       remove_center, mask_softmax: bool = False
                       ) -> torch.Tensor:
    """DCNv3 core in plain PyTorch (differentiable through autograd).

    Args:
        input (Tensor): (N, H, W, group * group_channels).
        offset (Tensor): (N, H_out, W_out, group * P * 2), x then y per point.
        mask (Tensor): (N, H_out, W_out, group * P), used as given (the
            official semantics: the module applies the softmax), or logits
            with ``mask_softmax``.
        kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
        dilation_w (int): the sampling grid, as for a convolution.
        group (int): number of groups G.
        group_channels (int): channels per group D.
        offset_scale (float): scale of the fixed grid and of the offsets.
        remove_center (bool | int): leave out the kernel's centre point.
        mask_softmax (bool): ``mask`` holds logits; the weights are their
            softmax over the P points of each group. Default: False.

    Returns:
        Tensor: (N, H_out, W_out, group * group_channels), dtype of ``input``.
    """
    from .ops import check_dcnv3_args  # local import: ops imports this module
    h_out, w_out, points = check_dcnv3_args(
        input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
        pad_w, dilation_h, dilation_w, group, group_channels, remove_center)
    n, height, width, channels = input.shape
    out_dtype = input.dtype
    # Half-precision inputs are computed in fp32, as the kernels do.
    if input.dtype in (torch.float16, torch.bfloat16):
        input, offset, mask = input.float(), offset.float(), mask.float()
    if mask_softmax:
        mask = torch.softmax(mask.reshape(n, h_out, w_out, group, points),
                             -1).reshape(mask.shape)
    if n == 0:
        return input.new_zeros((0, h_out, w_out, channels), dtype=out_dtype)

    dtype, device = input.dtype, input.device
    px, py = kernel_points(kernel_h, kernel_w, dilation_h, dilation_w,
                           bool(remove_center), dtype, device)
    cx = (dilation_w * (kernel_w - 1)) // 2
    cy = (dilation_h * (kernel_h - 1)) // 2
    base_x = torch.arange(w_out, device=device, dtype=dtype) * stride_w + (cx - pad_w)
    base_y = torch.arange(h_out, device=device, dtype=dtype) * stride_h + (cy - pad_h)

    off = offset.reshape(n, h_out, w_out, group, points, 2)
    # Sampling locations in input pixel coordinates: (N, Ho, Wo, G, P).
    loc_x = base_x.view(1, 1, w_out, 1, 1) + offset_scale * (px + off[..., 0])
    loc_y = base_y.view(1, h_out, 1, 1, 1) + offset_scale * (py + off[..., 1])
    # grid_sample with align_corners=False puts pixel centres at
    # (2 * i + 1) / size - 1 and treats out-of-image neighbours as zero.
    grid = torch.stack(((2 * loc_x + 1) / width - 1,
                        (2 * loc_y + 1) / height - 1), dim=-1)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * group, h_out * w_out,
                                                  points, 2)
    values = input.reshape(n, height, width, group, group_channels) \
        .permute(0, 3, 4, 1, 2).reshape(n * group, group_channels, height, width)
    sampled = F.grid_sample(values, grid, mode='bilinear',
                            padding_mode='zeros', align_corners=False)
    # sampled: (N*G, D, Ho*Wo, P); weights: (N*G, 1, Ho*Wo, P).
    weights = mask.reshape(n, h_out * w_out, group, points) \
        .permute(0, 2, 1, 3).reshape(n * group, 1, h_out * w_out, points)
    out = (sampled * weights).sum(-1)
    out = out.view(n, group, group_channels, h_out, w_out) \
        .permute(0, 3, 4, 1, 2).reshape(n, h_out, w_out, channels)
    return out.to(out_dtype)
