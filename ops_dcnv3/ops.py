# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The Python face of the compiled DCNv3 op.

The schema lives in C++ (``csrc/dcnv3.cpp``, namespace ``ops_dcnv3``) and each
backend registers its kernel for its dispatch key; autograd is registered
in C++ too (``csrc/autograd.cpp``). This module adds the fake kernels that
fake tensors and ``torch.compile`` need, the argument checks every backend shares, and :func:`dcnv3`, which runs the
compiled kernel for the tensors' device or, where none was built, the
pure-PyTorch reference.
"""
import warnings
from typing import Tuple

import torch

from .reference import dcnv3_core_pytorch, output_size

try:
    from . import _C  # noqa: F401  (registers torch.ops.ops_dcnv3.*)
    _LOAD_ERROR = None
except ImportError as e:  # not built, or built against another torch
    _LOAD_ERROR = e

_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_dcnv3_args(input, offset, mask, kernel_h, kernel_w, stride_h,
                     stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                     group_channels, remove_center) -> Tuple[int, int, int]:
    """Validate DCNv3 arguments; return ``(H_out, W_out, P)``.

    Raises ``ValueError`` / ``TypeError`` naming the offending argument,
    instead of letting a kernel read out of bounds.
    """
    for name, t in (('input', input), ('offset', offset), ('mask', mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'DCNv3: {name} must be a Tensor, got {type(t).__name__}')
        if t.dim() != 4:
            raise ValueError(
                f'DCNv3: {name} must be 4-D channels-last (N, H, W, C), '
                f'got shape {tuple(t.shape)}')
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f'DCNv3: {name} must be a floating tensor of float64, float32, '
                f'float16 or bfloat16, got {t.dtype}')
    if not (offset.dtype == mask.dtype == input.dtype):
        raise TypeError(
            'DCNv3: input, offset and mask must share one dtype, got '
            f'{input.dtype}, {offset.dtype} and {mask.dtype}')
    if not (offset.device == mask.device == input.device):
        raise ValueError(
            'DCNv3: input, offset and mask must be on one device, got '
            f'{input.device}, {offset.device} and {mask.device}')
    for name, v in (('kernel_h', kernel_h), ('kernel_w', kernel_w),
                    ('stride_h', stride_h), ('stride_w', stride_w),
                    ('dilation_h', dilation_h), ('dilation_w', dilation_w),
                    ('group', group), ('group_channels', group_channels)):
        if v < 1:
            raise ValueError(f'DCNv3: {name} must be >= 1, got {v}')
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f'DCNv3: padding must be >= 0, got pad_h={pad_h}, pad_w={pad_w}')
    if remove_center and (kernel_h != kernel_w or kernel_h % 2 == 0):
        raise ValueError(
            'DCNv3: remove_center needs a square kernel of odd size, got '
            f'{kernel_h}x{kernel_w}')
    if kernel_h * kernel_w - (1 if remove_center else 0) < 1:
        raise ValueError(
            'DCNv3: remove_center with a 1x1 kernel leaves no sampling point')
    n, height, width, channels = input.shape
    if channels != group * group_channels:
        raise ValueError(
            f'DCNv3: input has {channels} channels but group * group_channels '
            f'= {group} * {group_channels} = {group * group_channels}')
    h_out, w_out = output_size(height, width, kernel_h, kernel_w, stride_h,
                               stride_w, pad_h, pad_w, dilation_h, dilation_w)
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f'DCNv3: input of {height}x{width} is too small for a '
            f'{kernel_h}x{kernel_w} kernel with padding ({pad_h}, {pad_w}) and '
            f'dilation ({dilation_h}, {dilation_w}): output would be {h_out}x{w_out}')
    points = kernel_h * kernel_w - (1 if remove_center else 0)
    expected = {
        'offset': (n, h_out, w_out, group * points * 2),
        'mask': (n, h_out, w_out, group * points),
    }
    for name, t in (('offset', offset), ('mask', mask)):
        if tuple(t.shape) != expected[name]:
            raise ValueError(
                f'DCNv3: {name} must have shape {expected[name]} '
                f'(N, H_out, W_out, group * {points} points'
                f'{" * 2" if name == "offset" else ""}), got {tuple(t.shape)}')
    return h_out, w_out, points


_warned = set()


def _warn_fallback(device_type: str) -> None:
    if device_type in _warned:
        return
    _warned.add(device_type)
    why = (f'the extension failed to load ({_LOAD_ERROR})' if _LOAD_ERROR
           else f'it was built without a {device_type} kernel')
    warnings.warn(f'ops_dcnv3: no compiled DCNv3 kernel for {device_type} '
                  f'because {why}; using the pure-PyTorch reference, which is '
                  'exact but slower and uses more memory.')


def dcnv3(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
          kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
          pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
          group: int, group_channels: int, offset_scale: float,
          im2col_step: int = 64, remove_center=False,
          mask_softmax: bool = False) -> torch.Tensor:
    """DCNv3 core on the compiled kernel of the tensors' device.

    Arguments as :func:`ops_dcnv3.reference.dcnv3_core_pytorch`, plus
    ``im2col_step``, accepted for compatibility with the official op (the
    kernels here process the whole batch at once, so it has no effect).
    With ``mask_softmax=True``, ``mask`` holds logits and the op applies the
    softmax over each group's P points itself (forward and backward); the
    gradient it returns for ``mask`` is then that of the logits.
    Falls back, with a one-time warning, to the reference where no compiled
    kernel exists for the device.
    """
    # The compiled kernels check their arguments in C++ (same messages).
    if input.device.type not in KERNEL_DEVICES:
        _warn_fallback(input.device.type)
        return dcnv3_core_pytorch(input, offset, mask, kernel_h, kernel_w,
                                  stride_h, stride_w, pad_h, pad_w,
                                  dilation_h, dilation_w, group,
                                  group_channels, offset_scale, remove_center,
                                  mask_softmax)
    return torch.ops.ops_dcnv3.dcnv3_forward(
        input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
        pad_w, dilation_h, dilation_w, group, group_channels,
        float(offset_scale), int(im2col_step), bool(remove_center),
        bool(mask_softmax))


if _LOAD_ERROR is None:

    @torch.library.register_fake('ops_dcnv3::dcnv3_forward')
    def _dcnv3_forward_fake(input, offset, mask, kernel_h, kernel_w,
                            stride_h, stride_w, pad_h, pad_w, dilation_h,
                            dilation_w, group, group_channels, offset_scale,
                            im2col_step, remove_center, mask_softmax=False):
        h_out, w_out, _ = check_dcnv3_args(
            input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
            pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
            remove_center)
        return input.new_empty((input.shape[0], h_out, w_out, input.shape[3]))

    @torch.library.register_fake('ops_dcnv3::dcnv3_backward')
    def _dcnv3_backward_fake(grad_output, input, offset, mask, *args):
        # The kernels return contiguous gradients, whatever the inputs'
        # strides.
        return tuple(t.new_empty(t.shape) for t in (input, offset, mask))

    # Autograd is registered in C++ (csrc/autograd.cpp): the Python route
    # costs ~0.1 ms per call, as much as the kernel at small stages.


def _has_kernel(device_type: str) -> bool:
    if _LOAD_ERROR is not None:
        return False
    key = {'cpu': 'CPU', 'cuda': 'CUDA', 'meta': 'Meta'}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        'ops_dcnv3::dcnv3_forward', key)


#: Device types on which the op runs natively: 'cpu' and 'cuda' where their
#: compiled kernels were built, and 'meta' (shapes only, from the fake kernel).
KERNEL_DEVICES = frozenset(d for d in ('cpu', 'cuda', 'meta') if _has_kernel(d))
