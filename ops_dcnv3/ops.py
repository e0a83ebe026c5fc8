# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The Python face of the DCNv3 op.

The C++ op's schema lives in ``csrc/dcnv3.cpp`` (namespace ``ops_dcnv3``) and
each compiled backend registers its kernel for its dispatch key; autograd is
registered in C++ too (``csrc/autograd.cpp``). The Triton kernels are ops of
their own (``ops_dcnv3/triton``, same arguments). This module adds the fake
kernels of the C++ op that fake tensors and ``torch.compile`` need, the
argument checks every backend shares, and :func:`dcnv3`, which picks the
backend for the tensors' device (:func:`select_backend`).
"""
import importlib.util
import os
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


#: The backends that ``OPS_DCNV3_BACKEND`` can name.
BACKENDS = ('triton', 'cuda', 'cpu', 'reference')
#: Triton and the torch API for it (torch >= 2.6) are there; triton comes
#: with torch's CUDA wheels.
TRITON_FOUND = (importlib.util.find_spec('triton') is not None
                and hasattr(torch.library, 'triton_op'))
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


def _triton_ready(device_type: str) -> bool:
    """Triton runs CUDA tensors, and CPU tensors under its interpreter."""
    return TRITON_FOUND and (device_type == 'cuda' or (
        device_type == 'cpu' and os.environ.get('TRITON_INTERPRET') == '1'))


def select_backend(device_type: str) -> str:
    """The backend that :func:`dcnv3` runs for tensors of ``device_type``.

    ``OPS_DCNV3_BACKEND`` (one of :data:`BACKENDS`) chooses it. Unset, it is
    the CPU kernel on CPU, Triton on CUDA (the CUDA C++ kernel when Triton is
    missing), and the reference elsewhere or where no kernel was built (with
    a one-time warning); on ``meta`` the chosen backend's fake kernel gives
    the shapes (by default the C++ op's, named ``'cpu'``). A named backend
    that cannot run on the device is an error, never a silent fallback.
    """
    name = os.environ.get('OPS_DCNV3_BACKEND', '')
    if not name:
        if device_type == 'cuda' and _triton_ready('cuda'):
            return 'triton'
        if device_type in COMPILED_DEVICES:
            return device_type
        if device_type == 'meta' and _LOAD_ERROR is None:
            return 'cpu'
        if device_type != 'meta':
            _warn_fallback(device_type)
        return 'reference'
    if name not in BACKENDS:
        raise ValueError(f'OPS_DCNV3_BACKEND={name!r} is not a DCNv3 backend: '
                         f'choose one of {", ".join(BACKENDS)} (or leave it unset)')
    if name == 'reference':
        return name
    if name == 'triton':
        if not TRITON_FOUND:
            raise RuntimeError('OPS_DCNV3_BACKEND=triton needs the triton package '
                               'and torch >= 2.6 (torch.library.triton_op)')
        if device_type != 'meta' and not _triton_ready(device_type):
            raise RuntimeError(
                f'OPS_DCNV3_BACKEND=triton cannot run {device_type} tensors: the '
                'Triton kernels run CUDA tensors, and CPU tensors only under '
                "Triton's interpreter (TRITON_INTERPRET=1)")
        return name
    if device_type not in (name, 'meta'):
        raise RuntimeError(f'OPS_DCNV3_BACKEND={name} cannot run {device_type} tensors')
    if name not in COMPILED_DEVICES:
        how = '; build it with DCNV3_WITH_CUDA=1' if name == 'cuda' else ''
        why = (f'the extension failed to load ({_LOAD_ERROR})' if _LOAD_ERROR
               else f'ops_dcnv3 was built without its {name} kernel{how}')
        raise RuntimeError(f'OPS_DCNV3_BACKEND={name}: {why}')
    return name


def dcnv3(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
          kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
          pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
          group: int, group_channels: int, offset_scale: float,
          im2col_step: int = 64, remove_center=False,
          mask_softmax: bool = False) -> torch.Tensor:
    """DCNv3 core on the backend for the tensors' device.

    Arguments as :func:`ops_dcnv3.reference.dcnv3_core_pytorch`, plus
    ``im2col_step``, accepted for compatibility with the official op (the
    kernels here process the whole batch at once, so it has no effect).
    With ``mask_softmax=True``, ``mask`` holds logits and the op applies the
    softmax over each group's P points itself (forward and backward); the
    gradient it returns for ``mask`` is then that of the logits.
    :func:`select_backend` says which backend runs: by default the CPU
    kernel on CPU and the Triton kernels on CUDA; ``OPS_DCNV3_BACKEND``
    (``triton``, ``cuda``, ``cpu`` or ``reference``) names one.
    """
    backend = select_backend(input.device.type)
    if backend == 'reference':
        return dcnv3_core_pytorch(input, offset, mask, kernel_h, kernel_w,
                                  stride_h, stride_w, pad_h, pad_w,
                                  dilation_h, dilation_w, group,
                                  group_channels, offset_scale, remove_center,
                                  mask_softmax)
    # The kernels check their arguments (same messages as check_dcnv3_args).
    op = triton_ops()[0] if backend == 'triton' else torch.ops.ops_dcnv3.dcnv3_forward
    return op(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
              pad_w, dilation_h, dilation_w, group, group_channels,
              float(offset_scale), int(im2col_step), bool(remove_center),
              bool(mask_softmax))


_triton_loaded = False


def triton_ops():
    """``(forward, backward)``: the Triton ops, defined on first use (so that
    ``TRITON_INTERPRET`` may be set any time before)."""
    global _triton_loaded
    if not _triton_loaded:
        from . import triton  # noqa: F401  (defines the ops)
        _triton_loaded = True
    return (torch.ops.ops_dcnv3.dcnv3_triton_forward,
            torch.ops.ops_dcnv3.dcnv3_triton_backward)


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

    @torch.library.register_fake('ops_dcnv3::dcnv3_forward_keep_weights')
    def _dcnv3_forward_keep_weights_fake(input, offset, mask, *args):
        if input.dtype not in (torch.float32, torch.float64):
            raise TypeError('DCNv3: dcnv3_forward_keep_weights takes float32 or float64 '
                            f'tensors, got {input.dtype}')
        output = _dcnv3_forward_fake(input, offset, mask, *args, True)
        return output, mask.new_empty(mask.shape)

    @torch.library.register_fake('ops_dcnv3::dcnv3_backward_from_weights')
    def _dcnv3_backward_from_weights_fake(grad_output, input, offset, mask_weights,
                                          *args):
        return _dcnv3_backward_fake(grad_output, input, offset, mask_weights)

    # Autograd is registered in C++ (csrc/autograd.cpp): the Python route
    # costs ~0.1 ms per call, as much as the kernel at small stages.


def _has_kernel(device_type: str) -> bool:
    if _LOAD_ERROR is not None:
        return False
    key = {'cpu': 'CPU', 'cuda': 'CUDA', 'meta': 'Meta'}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        'ops_dcnv3::dcnv3_forward', key)


#: Device types whose C++ kernel was built ('cuda' only with DCNV3_WITH_CUDA=1).
COMPILED_DEVICES = frozenset(d for d in ('cpu', 'cuda') if _has_kernel(d))
#: Device types on which the op runs natively: the compiled kernels', 'cuda'
#: where Triton is installed, and 'meta' (shapes only, from the fake kernels).
KERNEL_DEVICES = COMPILED_DEVICES | frozenset(
    ['cuda'] * TRITON_FOUND + ['meta'] * (_LOAD_ERROR is None))
if TRITON_FOUND and torch.cuda.is_available():
    # Define the Triton ops now, before anything traces dcnv3().
    triton_ops()
