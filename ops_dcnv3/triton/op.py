# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The Triton kernels as ``torch.library`` ops, with autograd.

``torch.ops.ops_dcnv3.dcnv3_triton_forward`` and ``dcnv3_triton_backward``
take the arguments of the C++ ops (``ops_dcnv3::dcnv3_forward`` /
``dcnv3_backward``). They are ``torch.library.triton_op`` ops whose kernels
are launched through ``torch.library.wrap_triton``, so ``torch.compile``
traces into them and Inductor schedules the kernels itself; the same Python
function is their fake kernel.
"""
import contextlib

import torch
import triton
from torch.library import triton_op, wrap_triton

from ..ops import check_dcnv3_args
from .kernels import dcnv3_backward_kernel, dcnv3_forward_kernel

NUM_WARPS = 4
# Elements of a program's (rows x channels) tile: the forward keeps one
# accumulator tile live, the backward the output gradient and its scatter.
FORWARD_TILE = 2048
BACKWARD_TILE = 1024
# Under TRITON_INTERPRET=1 every program is a Python loop iteration: take
# large tiles so that the few programs each do numpy work in bulk.
INTERPRETER_TILE = 16384


def interpreted() -> bool:
    """True when the kernels run under Triton's interpreter (they were
    defined with TRITON_INTERPRET=1 set)."""
    return not isinstance(dcnv3_forward_kernel, triton.runtime.JITFunction)


def _block_rows(rows: int, block_d: int, tile: int, device: torch.device) -> int:
    """Rows per program: a tile of about ``tile`` elements, halved (down to
    16 rows) until there are programs enough for every multiprocessor."""
    if interpreted():
        return max(1, min(triton.next_power_of_2(max(rows, 1)),
                          INTERPRETER_TILE // block_d))
    block = max(16, min(256, tile // block_d))
    if device.type == 'cuda' and torch.cuda.is_available():
        target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
        while block > 16 and triton.cdiv(rows, block) < target:
            block //= 2
    return block


def _on_device(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    if t.device.type == 'cuda' and torch.cuda.is_available():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _traced(tensors) -> bool:
    """Fake or meta tensors: shapes without data."""
    return any(t.device.type == 'meta' or torch._subclasses.fake_tensor.is_fake(t)
               for t in tensors)


def _launch(kernel, grid, tensors, *args, **constexprs):
    """Launch a kernel through wrap_triton. Interpreted kernels cannot be
    captured in a graph: for fake and meta tensors (shapes only) they are
    skipped, and tracing them for torch.compile or export is refused."""
    launcher = wrap_triton(kernel)
    if launcher is kernel and interpreted() and _traced(tensors):
        if torch._C._get_dispatch_mode(
                torch._C._TorchDispatchModeKey.FUNCTIONAL) is not None:
            raise RuntimeError(
                'ops_dcnv3: Triton kernels run by the interpreter '
                '(TRITON_INTERPRET=1) cannot be traced by torch.compile or '
                'torch.export; compile on a GPU, or use another backend '
                '(OPS_DCNV3_BACKEND=cpu or reference)')
        return
    launcher[grid](*tensors, *args, **constexprs, num_warps=NUM_WARPS)


def alert_not_deterministic(caller: str) -> None:
    """What torch's own atomic-add backwards do under
    ``torch.use_deterministic_algorithms(True)``: raise, or warn with
    ``warn_only=True``."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = (f'{caller} adds into grad_input with atomics, in no fixed order, '
               'so it is not deterministic, but '
               'torch.use_deterministic_algorithms(True) is set')
    if torch.is_deterministic_algorithms_warn_only_enabled():
        import warnings
        warnings.warn(message, stacklevel=3)
    else:
        raise RuntimeError(message)


def _geometry(input, h_out, w_out, points, kernel_h, kernel_w, stride_h,
              stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
              group_channels, offset_scale, remove_center, mask_softmax):
    """The kernels' scalar arguments and constexprs, and the rows."""
    n, height, width, _ = input.shape
    rows = n * h_out * w_out * group
    if rows >= 2**31:
        raise ValueError(f'DCNv3 (Triton): {rows} (output pixel, group) pairs; '
                         'the kernels take fewer than 2**31: split the batch')
    args = (rows, height, width, h_out, w_out, group, stride_h, stride_w,
            pad_h, pad_w, dilation_h, dilation_w)
    constexprs = dict(
        D=group_channels,
        OFFSET_SCALE=float(offset_scale), KH=kernel_h, KW=kernel_w,
        REMOVE_CENTER=int(bool(remove_center)), SOFTMAX=bool(mask_softmax),
        FP64=input.dtype == torch.float64,
        BLOCK_D=triton.next_power_of_2(group_channels),
        BLOCK_P=triton.next_power_of_2(points))
    return rows, args, constexprs


@triton_op('ops_dcnv3::dcnv3_triton_forward', mutates_args=())
def dcnv3_triton_forward(
        input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
        kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, pad_h: int,
        pad_w: int, dilation_h: int, dilation_w: int, group: int,
        group_channels: int, offset_scale: float, im2col_step: int,
        remove_center: bool, mask_softmax: bool = False) -> torch.Tensor:
    h_out, w_out, points = check_dcnv3_args(
        input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
        pad_w, dilation_h, dilation_w, group, group_channels, remove_center)
    rows, args, constexprs = _geometry(
        input, h_out, w_out, points, kernel_h, kernel_w, stride_h, stride_w,
        pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
        offset_scale, remove_center, mask_softmax)
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    output = input.new_empty((input.shape[0], h_out, w_out, input.shape[3]))
    if rows > 0:
        block = _block_rows(rows, constexprs['BLOCK_D'], FORWARD_TILE, input.device)
        with _on_device(input):
            _launch(dcnv3_forward_kernel, (triton.cdiv(rows, block),),
                    (input, offset, mask, output), *args, BLOCK_R=block,
                    **constexprs)
    return output


@triton_op('ops_dcnv3::dcnv3_triton_backward', mutates_args=())
def dcnv3_triton_backward(
        grad_output: torch.Tensor, input: torch.Tensor, offset: torch.Tensor,
        mask: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int,
        stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
        dilation_w: int, group: int, group_channels: int, offset_scale: float,
        im2col_step: int, remove_center: bool, mask_softmax: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h_out, w_out, points = check_dcnv3_args(
        input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
        pad_w, dilation_h, dilation_w, group, group_channels, remove_center)
    if grad_output.device != input.device:
        raise ValueError(f'DCNv3: grad_output is on {grad_output.device} but '
                         f'the inputs are on {input.device}')
    expected = (input.shape[0], h_out, w_out, input.shape[3])
    if tuple(grad_output.shape) != expected:
        raise ValueError(f'DCNv3: grad_output has shape {tuple(grad_output.shape)}, '
                         f"expected the output's shape {expected}")
    rows, args, constexprs = _geometry(
        input, h_out, w_out, points, kernel_h, kernel_w, stride_h, stride_w,
        pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
        offset_scale, remove_center, mask_softmax)
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    grad_output = grad_output.to(input.dtype).contiguous()
    # grad_input is a scatter: summed in fp32 (fp64 for fp64) with atomics.
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    grad_input = torch.zeros(input.shape, dtype=acc, device=input.device)
    grad_offset = torch.empty_like(offset)
    grad_mask = torch.empty_like(mask)
    if rows > 0:
        alert_not_deterministic('ops_dcnv3 Triton backward')
        block = _block_rows(rows, constexprs['BLOCK_D'], BACKWARD_TILE, input.device)
        with _on_device(input):
            _launch(dcnv3_backward_kernel, (triton.cdiv(rows, block),),
                    (grad_output, input, offset, mask, grad_input, grad_offset,
                     grad_mask), *args, BLOCK_R=block, **constexprs)
    return grad_input.to(input.dtype), grad_offset, grad_mask


def _setup_context(ctx, inputs, output):
    input, offset, mask, *params = inputs
    ctx.save_for_backward(input, offset, mask)
    ctx.params = params


def _backward(ctx, grad_output):
    input, offset, mask = ctx.saved_tensors
    grads = torch.ops.ops_dcnv3.dcnv3_triton_backward(
        grad_output, input, offset, mask, *ctx.params)
    return (*grads, *([None] * len(ctx.params)))


dcnv3_triton_forward.register_autograd(_backward, setup_context=_setup_context)
