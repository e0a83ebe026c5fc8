# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The DCNv3 op: every backend against the reference, the reference against
torchvision, autograd, torch.library registration and bad input."""
import functools
import math
import os
import re
from dataclasses import dataclass, replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ops_dcnv3 import KERNEL_DEVICES, dcnv3, dcnv3_core_pytorch
from ops_dcnv3.ops import COMPILED_DEVICES, TRITON_FOUND, select_backend
from ops_dcnv3.reference import kernel_points, output_size

pytestmark = pytest.mark.skipif('cpu' not in KERNEL_DEVICES,
                                reason='ops_dcnv3 CPU kernel not built')
# The CUDA C++ kernel is built only with DCNV3_WITH_CUDA=1 (the default GPU
# backend is Triton: tests/test_dcnv3_triton.py).
CUDA = torch.cuda.is_available() and 'cuda' in COMPILED_DEVICES
needs_cuda = pytest.mark.skipif(
    not CUDA, reason='needs a GPU and the CUDA C++ kernel (DCNV3_WITH_CUDA=1)')
# The GPU the CUDA tests run on (tools/gpu_check.sh runs them on each).
CUDA_DEVICE = os.environ.get('DCNV3_TEST_DEVICE', 'cuda')


@dataclass(frozen=True)
class Case:
    n: int = 1
    h: int = 7
    w: int = 9
    group: int = 2
    group_channels: int = 8
    kernel_h: int = 3
    kernel_w: int = 3
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 1
    pad_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    offset_scale: float = 1.0
    remove_center: bool = False
    offset_std: float = 1.0  # large values put points outside the image

    @property
    def points(self):
        return self.kernel_h * self.kernel_w - int(self.remove_center)

    @property
    def out_size(self):
        return output_size(self.h, self.w, self.kernel_h, self.kernel_w,
                           self.stride_h, self.stride_w, self.pad_h,
                           self.pad_w, self.dilation_h, self.dilation_w)

    def params(self):
        return (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w,
                self.pad_h, self.pad_w, self.dilation_h, self.dilation_w,
                self.group, self.group_channels, self.offset_scale)

    def tensors(self, dtype=torch.float64, device='cpu', seed=0):
        gen = torch.Generator().manual_seed(seed)
        ho, wo = self.out_size
        c = self.group * self.group_channels
        x = torch.randn(self.n, self.h, self.w, c, generator=gen, dtype=torch.float64)
        off = torch.randn(self.n, ho, wo, self.group * self.points * 2,
                          generator=gen, dtype=torch.float64) * self.offset_std
        mask = torch.rand(self.n, ho, wo, self.group * self.points,
                          generator=gen, dtype=torch.float64)
        return [t.to(dtype=dtype, device=device) for t in (x, off, mask)]


# Every value the issue names appears at least once: kernel 3/5, stride 1/2,
# pad 0/1/2, dilation 1/2, odd H and W, groups 1..8, group_channels 4..64
# with non-powers of two, offset_scale 1/2, remove_center, batch larger than
# im2col_step (2 below), points on the border and wholly outside, and
# different h/w hyper-parameters so that no h/w mix-up goes unnoticed.
CASES = {
    'k3_g1_c4': Case(group=1, group_channels=4),
    'stride2_c6': Case(n=2, h=9, w=7, stride_h=2, stride_w=2, group_channels=6),
    'k5_pad2_scale2': Case(h=11, w=5, group=4, group_channels=16, kernel_h=5,
                           kernel_w=5, pad_h=2, pad_w=2, offset_scale=2.0,
                           offset_std=1.5),
    'dil2_pad2_c12': Case(h=9, w=11, group=3, group_channels=12, pad_h=2,
                          pad_w=2, dilation_h=2, dilation_w=2),
    'pad0_g8_center': Case(n=2, h=9, w=9, group=8, pad_h=0, pad_w=0,
                           remove_center=True),
    'k5_s2_d2_c64_center': Case(h=7, w=7, group_channels=64, kernel_h=5,
                                kernel_w=5, stride_h=2, stride_w=2, pad_h=2,
                                pad_w=2, dilation_h=2, dilation_w=2,
                                remove_center=True, offset_std=0.7),
    'batch3_many_outside': Case(n=3, h=5, w=7, group=5, group_channels=10,
                                offset_scale=2.0, offset_std=3.0),
    'mostly_outside_c32': Case(n=5, h=4, w=5, group=1, group_channels=32,
                               offset_std=10.0),
    'scale_half_c24_center': Case(h=6, w=11, group_channels=24, stride_h=2,
                                  stride_w=2, pad_h=0, pad_w=0, dilation_h=2,
                                  dilation_w=2, offset_scale=0.5,
                                  remove_center=True),
    'anisotropic': Case(n=2, h=9, w=8, kernel_h=3, kernel_w=5, stride_h=1,
                        stride_w=2, pad_h=1, pad_w=2, dilation_h=2,
                        dilation_w=1, group_channels=5),
    'g7_c9': Case(h=5, w=5, group=7, group_channels=9),
}


def fractional_offsets(case, seed=0):
    """Tensors whose sampling locations keep their fractional part in
    [0.25, 0.75]: in half precision, coarse offsets would put points on
    integer coordinates, where the offset gradient jumps (a kink of bilinear
    interpolation) and two implementations may pick either side."""
    x, off, mask = case.tensors(seed=seed)
    off = off.floor() + 0.25 + 0.5 * torch.rand(
        off.shape, generator=torch.Generator().manual_seed(seed), dtype=off.dtype)
    return x, off, mask


def run(fn, case, tensors, grad_out=None):
    """Forward and, with grad_out, the three gradients."""
    x, off, mask = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(x, off, mask, *case.params(), 2, case.remove_center) \
        if fn is dcnv3 else fn(x, off, mask, *case.params(), case.remove_center)
    if grad_out is None:
        return out.detach(), None
    grads = torch.autograd.grad(out, (x, off, mask), grad_out)
    return out.detach(), grads


def assert_close_scaled(actual, expected, tol, what):
    """max |actual - expected| <= tol * max(1, max |expected|)."""
    assert actual.shape == expected.shape, what
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual.double() - expected.double()).abs().max().item() \
        if expected.numel() else 0.0
    assert err <= tol * scale, f'{what}: max error {err:.3g} > {tol:g} * {scale:.3g}'


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize('name', sorted(CASES))
def test_cpu_kernel_matches_reference(name, dtype, tol):
    case = CASES[name]
    tensors = case.tensors(dtype)
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels,
                           dtype=dtype, generator=torch.Generator().manual_seed(1))
    out, grads = run(dcnv3, case, tensors, grad_out)
    ref, ref_grads = run(dcnv3_core_pytorch, case, tensors, grad_out)
    assert_close_scaled(out, ref, tol, 'output')
    for what, g, r in zip(('input', 'offset', 'mask'), grads, ref_grads):
        assert_close_scaled(g, r, tol, f'grad of {what}')


def border_offsets(case, gen):
    """Offsets that put every point of ``case`` (stride 1, no padding,
    dilation 1) in the border cells of the image (partly weighted) or
    beyond them."""
    ho, wo = case.out_size
    # Sampling x of point p at output (i, j) is j + 1 + (kx - 1) + offset_x;
    # choose offsets so that every point lands at one of these coordinates.
    targets = [-1.5, -0.75, -0.25, 0.5, case.w - 1.3, case.w - 0.6, case.w + 0.2]
    off = torch.empty(1, ho, wo, case.points * 2, dtype=torch.float64)
    for i in range(ho):
        for j in range(wo):
            for p in range(case.points):
                kx, ky = divmod(p, case.kernel_h)
                tx = targets[torch.randint(len(targets), (1,), generator=gen).item()]
                ty = targets[torch.randint(len(targets), (1,), generator=gen).item()]
                off[0, i, j, 2 * p] = tx - (j + kx)
                off[0, i, j, 2 * p + 1] = min(ty, case.h + 0.2) - (i + ky)
    return off


BORDER_CASE = Case(h=5, w=6, group=1, group_channels=4, pad_h=0, pad_w=0)


def test_points_on_the_border_and_wholly_outside():
    """Points placed in the border cells (partly weighted) and beyond them."""
    case = BORDER_CASE
    x, _, mask = case.tensors()
    ho, wo = case.out_size
    gen = torch.Generator().manual_seed(3)
    off = border_offsets(case, gen)
    grad_out = torch.randn(1, ho, wo, 4, dtype=torch.float64, generator=gen)
    out, grads = run(dcnv3, case, (x, off, mask), grad_out)
    ref, ref_grads = run(dcnv3_core_pytorch, case, (x, off, mask), grad_out)
    assert_close_scaled(out, ref, 1e-10, 'output')
    for g, r in zip(grads, ref_grads):
        assert_close_scaled(g, r, 1e-10, 'grad')
    # A point wholly outside contributes nothing, not even through gradients.
    all_out = torch.full_like(off, 0.0)
    all_out[..., 0::2] = -50.0
    out, grads = run(dcnv3, case, (x, all_out, mask), grad_out)
    assert out.abs().max() == 0 and all(g.abs().max() == 0 for g in grads)


def test_gradcheck_fp64():
    case = Case(n=2, h=4, w=5, group=2, group_channels=3, remove_center=True)
    x, off, mask = case.tensors()
    # Keep sampling locations away from integer coordinates, where bilinear
    # interpolation has kinks that finite differences cannot follow.
    off = off.round() + 0.5 + 0.3 * (torch.rand_like(off) - 0.5)
    args = case.params() + (2, True)
    for fn in (lambda a, b, c: dcnv3(a, b, c, *args),
               lambda a, b, c: dcnv3_core_pytorch(a, b, c, *case.params(), True)):
        assert torch.autograd.gradcheck(
            fn, [t.clone().requires_grad_() for t in (x, off, mask)],
            eps=1e-6, atol=1e-8)


@pytest.mark.parametrize('device', ['cpu', pytest.param(CUDA_DEVICE, marks=needs_cuda)])
def test_opcheck(device):
    case = CASES['pad0_g8_center']
    x, off, mask = case.tensors(torch.float32, device)
    args = (x.requires_grad_(), off.requires_grad_(), mask.requires_grad_(),
            *case.params(), 64, True)
    torch.library.opcheck(torch.ops.ops_dcnv3.dcnv3_forward.default, args)
    grad_out = torch.randn(case.n, *case.out_size, x.shape[-1], device=device)
    torch.library.opcheck(torch.ops.ops_dcnv3.dcnv3_backward.default,
                          (grad_out, x.detach(), off.detach(), mask.detach(),
                           *case.params(), 64, True))


def to_torchvision(case, x, off, mask):
    """DCNv3's arguments as torchvision.ops.deform_conv2d's: a depthwise
    convolution with weights of ones, offsets reordered (row-major points,
    y before x) and made relative to the plain dilated grid."""
    n, ho, wo, _ = off.shape
    g, kh, kw = case.group, case.kernel_h, case.kernel_w
    s = case.offset_scale
    dx, dy = kernel_points(kh, kw, case.dilation_h, case.dilation_w,
                           case.remove_center, x.dtype)
    kx = torch.arange(kw).repeat_interleave(kh)
    ky = torch.arange(kh).repeat(kw)
    if case.remove_center:
        keep = (kx != (kw - 1) // 2) | (ky != (kh - 1) // 2)
        kx, ky = kx[keep], ky[keep]
    off = off.reshape(n, ho, wo, g, case.points, 2)
    mask = mask.reshape(n, ho, wo, g, case.points)
    tv_off = torch.zeros(n, ho, wo, g, kh * kw, 2, dtype=x.dtype)
    tv_mask = torch.zeros(n, ho, wo, g, kh * kw, dtype=x.dtype)
    k = ky * kw + kx  # torchvision's point index
    # DCNv3 samples at base + c + s * (grid - c + offset); torchvision at
    # base + k * dilation + its offset.
    tv_off[..., k, 0] = s * (dy + off[..., 1]) - dy
    tv_off[..., k, 1] = s * (dx + off[..., 0]) - dx
    tv_mask[..., k] = mask
    return (x.permute(0, 3, 1, 2), tv_off.reshape(n, ho, wo, -1).permute(0, 3, 1, 2),
            tv_mask.reshape(n, ho, wo, -1).permute(0, 3, 1, 2))


@pytest.mark.parametrize('name', ['k3_g1_c4', 'k5_pad2_scale2', 'dil2_pad2_c12',
                                  'k5_s2_d2_c64_center', 'batch3_many_outside',
                                  'anisotropic'])
def test_reference_matches_torchvision_deform_conv2d(name):
    torchvision = pytest.importorskip('torchvision')
    case = CASES[name]
    x, off, mask = case.tensors()
    tv_x, tv_off, tv_mask = to_torchvision(case, x, off, mask)
    c = x.shape[-1]
    weight = torch.ones(c, 1, case.kernel_h, case.kernel_w, dtype=x.dtype)
    tv = torchvision.ops.deform_conv2d(
        tv_x, tv_off, weight, stride=(case.stride_h, case.stride_w),
        padding=(case.pad_h, case.pad_w),
        dilation=(case.dilation_h, case.dilation_w), mask=tv_mask)
    expected = tv.permute(0, 2, 3, 1)
    ref = dcnv3_core_pytorch(x, off, mask, *case.params(), case.remove_center)
    kernel = dcnv3(x, off, mask, *case.params(), 64, case.remove_center)
    assert_close_scaled(ref, expected, 1e-10, 'reference vs torchvision')
    assert_close_scaled(kernel, expected, 1e-10, 'CPU kernel vs torchvision')


@pytest.mark.parametrize('dtype,tol', [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_cpu_half_precision(dtype, tol):
    case = replace(CASES['k5_pad2_scale2'], offset_scale=1.0)
    x, off, mask = case.tensors(torch.float64)
    # Coarse half-precision offsets would put many points exactly on integer
    # coordinates, where the offset gradient jumps (a kink of bilinear
    # interpolation) and any two implementations may pick either side; keep
    # the fractional part of every location in [0.25, 0.75].
    off = off.floor() + 0.25 + 0.5 * torch.rand_like(off)
    tensors = [t.to(dtype) for t in (x, off, mask)]
    grad_out = torch.randn(case.n, *case.out_size, 64, generator=torch.Generator().manual_seed(2))
    out, grads = run(dcnv3, case, tensors, grad_out.to(dtype))
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    # Expected: the same (rounded) values through the fp64 reference.
    ref, ref_grads = run(dcnv3_core_pytorch, case, [t.double() for t in tensors],
                         grad_out.to(dtype).double())
    assert_close_scaled(out, ref, tol, 'output')
    for g, r in zip(grads, ref_grads):
        assert_close_scaled(g, r, 4 * tol, 'grad')


def test_non_contiguous_inputs_and_empty_batch():
    case = CASES['dil2_pad2_c12']
    x, off, mask = case.tensors()
    # Same values, strided memory.
    xs = x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    offs = torch.cat([off, off], dim=-1)[..., : off.shape[-1]]
    masks = mask.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (xs.is_contiguous() or offs.is_contiguous() or masks.is_contiguous())
    assert torch.equal(dcnv3(xs, offs, masks, *case.params(), 64, False),
                       dcnv3(x, off, mask, *case.params(), 64, False))
    assert torch.equal(dcnv3_core_pytorch(xs, offs, masks, *case.params(), False),
                       dcnv3_core_pytorch(x, off, mask, *case.params(), False))
    # Empty batch: the right shapes, forward and backward.
    empty = [t[:0].clone().requires_grad_() for t in (x, off, mask)]
    out = dcnv3(*empty, *case.params(), 64, False)
    assert out.shape == (0, *case.out_size, x.shape[-1])
    grads = torch.autograd.grad(out.sum(), empty)
    assert [g.shape for g in grads] == [t.shape for t in empty]


# Big enough for the CPU backward to split its one image into two bands of
# rows (row_bands in dcnv3_cpu.cpp: batch 1, at least 8 output rows, 4M
# units of work): with offsets of std 1 many taps land in the other band's
# rows (its halo), with std 30 most land further (rows allocated as they are
# written). One group of 64 channels ('halo_one_group'): the vector path's
# general loop, not its register one (8 to 32 channels). A negative
# offset_scale mirrors the points; the halo is sized from its magnitude (a
# negative halo once made the backward fail with std::bad_array_new_length).
BAND_CASES = {
    'halo': Case(n=1, h=64, w=48, group=4, group_channels=16),
    'negative_scale': Case(n=1, h=64, w=48, group=4, group_channels=16, offset_scale=-1.0),
    'halo_one_group': Case(n=1, h=40, w=40, group=1, group_channels=64),
    'far': Case(n=1, h=64, w=48, group=4, group_channels=16, offset_std=30.0),
    'stride2_dilation2': Case(n=1, h=96, w=64, group=2, group_channels=32, stride_h=2,
                              stride_w=2, dilation_h=2, dilation_w=2, pad_h=2, pad_w=2),
}


@pytest.mark.parametrize('name', sorted(BAND_CASES))
def test_cpu_backward_bands_give_every_tap_its_gradient(name):
    """The CPU backward splits an image into bands of rows, each adding the
    gradients of taps in the other bands' rows later: all of them must
    arrive (fp64 against the reference)."""
    case = BAND_CASES[name]
    tensors = case.tensors()
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels,
                           dtype=torch.float64)
    out, grads = run(dcnv3, case, tensors, grad_out)
    ref_out, ref_grads = run(dcnv3_core_pytorch, case, tensors, grad_out)
    assert_close_scaled(out, ref_out, 1e-12, 'output')
    for what, g, r in zip(('input', 'offset', 'mask'), grads, ref_grads):
        assert_close_scaled(g, r, 1e-12, what)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', sorted(BAND_CASES))
def test_cpu_backward_bands_in_low_precision_are_fp32_rounded(name, dtype):
    """fp16 / bf16 compute in fp32 (their values are exact there), halos and
    far rows included: forward and gradients are the fp32 kernel's on the
    same values, rounded once."""
    case = BAND_CASES[name]
    tensors = [t.to(dtype) for t in case.tensors()]
    grad_out = torch.randn(case.n, *case.out_size,
                           case.group * case.group_channels).to(dtype)
    out, grads = run(dcnv3, case, tensors, grad_out)
    out32, grads32 = run(dcnv3, case, [t.float() for t in tensors], grad_out.float())
    assert torch.equal(out, out32.to(dtype))
    for what, g, g32 in zip(('input', 'offset', 'mask'), grads, grads32):
        assert torch.equal(g, g32.to(dtype)), what


@pytest.mark.parametrize('name', ['one_band', *sorted(BAND_CASES)])
def test_cpu_kernel_is_deterministic_across_thread_counts(name):
    case = BAND_CASES.get(name) or Case(n=1, h=12, w=12, group=1, group_channels=32,
                                        offset_std=2.0)
    tensors = case.tensors(torch.float32)
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3, 1):
            torch.set_num_threads(n)
            out, grads = run(dcnv3, case, tensors, grad_out)
            results.append((out, *grads))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


BAD_INPUTS = [
    ('input must be 4-D', lambda x, o, m: (x[0], o, m), {}),
    ('group * group_channels', lambda x, o, m: (x[..., :-1], o, m), {}),
    ('offset must have shape', lambda x, o, m: (x, o[..., :-2], m), {}),
    ('mask must have shape', lambda x, o, m: (x, o, m[:, :-1]), {}),
    ('one dtype', lambda x, o, m: (x, o.float(), m), {}),
    ('floating', lambda x, o, m: (x.long(), o.long(), m.long()), {}),
    ('remove_center', lambda x, o, m: (x, o, m), {'kernel_w': 2}),
    ('no sampling point', lambda x, o, m: (x, o, m), {'kernel_h': 1, 'kernel_w': 1}),
    ('float64, float32, float16 or bfloat16',
     lambda x, o, m: (x.to(torch.float8_e4m3fn), o, m), {}),
]


@pytest.mark.parametrize('backend', ['op', 'dcnv3', 'reference'])
@pytest.mark.parametrize('message,mutate,override', BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(backend, message, mutate, override):
    case = replace(CASES['pad0_g8_center'], **override)
    x, off, mask = CASES['pad0_g8_center'].tensors()
    args = mutate(x, off, mask)
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        if backend == 'op':  # the C++ checks
            torch.ops.ops_dcnv3.dcnv3_forward(*args, *case.params(), 64, True)
        elif backend == 'dcnv3':
            dcnv3(*args, *case.params(), 64, True)
        else:
            dcnv3_core_pytorch(*args, *case.params(), True)


LOW_PRECISION = [getattr(torch, name) for name in (
    'float8_e4m3fn', 'float8_e5m2', 'float8_e8m0fnu', 'float4_e2m1fn_x2')
    if hasattr(torch, name)]


@pytest.mark.parametrize('backend', ['op', 'dcnv3', 'reference'])
@pytest.mark.parametrize('dtype', LOW_PRECISION, ids=str)
def test_fp8_and_fp4_are_refused_with_a_type_error(backend, dtype):
    """They pass torch's is_floating_point() but no kernel takes them."""
    case = CASES['k3_g1_c4']
    assert torch.empty(0, dtype=dtype).is_floating_point()
    x, off, mask = [torch.empty(t.shape, dtype=dtype) for t in case.tensors()]
    fn = {'op': torch.ops.ops_dcnv3.dcnv3_forward, 'dcnv3': dcnv3}.get(backend)
    with pytest.raises(TypeError, match='float64, float32, float16 or bfloat16'):
        if fn is None:
            dcnv3_core_pytorch(x, off, mask, *case.params(), False)
        else:
            fn(x, off, mask, *case.params(), 64, False)


@pytest.mark.parametrize('backend', ['op', 'dcnv3', 'reference', 'meta'])
def test_input_smaller_than_the_kernel_is_refused_alike(backend):
    """2x2 input, kernel 3, stride 2, no padding: floor((2 - 3) / 2) + 1 = 0
    rows of output, on every backend (C++ truncation would give 1)."""
    case = Case(h=2, w=2, group=1, group_channels=4, stride_h=2, stride_w=2,
                pad_h=0, pad_w=0)
    device = 'meta' if backend == 'meta' else 'cpu'
    x = torch.randn(1, 2, 2, 4, device=device)
    off = torch.zeros(1, 1, 1, 18, device=device)
    mask = torch.zeros(1, 1, 1, 9, device=device)
    fn = {'op': torch.ops.ops_dcnv3.dcnv3_forward, 'dcnv3': dcnv3,
          'meta': dcnv3}.get(backend)
    with pytest.raises(ValueError, match='too small'):
        if fn is None:
            dcnv3_core_pytorch(x, off, mask, *case.params(), False)
        else:
            fn(x, off, mask, *case.params(), 64, False)


@pytest.mark.parametrize('name', ['k3_g1_c4', 'k5_pad2_scale2', 'pad0_g8_center',
                                  'batch3_many_outside', 'anisotropic'])
def test_mask_softmax_is_softmax_over_each_groups_points(name):
    """mask_softmax=True equals the official softmax-then-op, forward and
    all three gradients (the mask's is the logits'), fp64 to 1e-10."""
    case = CASES[name]
    x, off, _ = case.tensors()
    logits = 3 * torch.randn(*off.shape[:-1], case.group * case.points,
                             dtype=torch.float64,
                             generator=torch.Generator().manual_seed(5))
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels,
                           dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def official(x, off, logits):
        w = logits.reshape(*logits.shape[:-1], case.group, case.points).softmax(-1)
        return dcnv3_core_pytorch(x, off, w.reshape(logits.shape), *case.params(),
                                  case.remove_center)

    def fused_reference(x, off, logits):
        return dcnv3_core_pytorch(x, off, logits, *case.params(), case.remove_center,
                                  mask_softmax=True)

    def fused_kernel(x, off, logits):
        return dcnv3(x, off, logits, *case.params(), 64, case.remove_center,
                     mask_softmax=True)

    results = []
    for fn in (official, fused_reference, fused_kernel):
        leaves = [t.clone().requires_grad_() for t in (x, off, logits)]
        out = fn(*leaves)
        results.append((out, *torch.autograd.grad(out, leaves, grad_out)))
    for other in results[1:]:
        for what, a, b in zip(('output', 'input', 'offset', 'logits'), other, results[0]):
            assert_close_scaled(a, b, 1e-10, what)
    # The logits' gradient sums to zero over each group's points.
    g = results[2][3].reshape(-1, case.points)
    assert g.sum(-1).abs().max() < 1e-12 and g.abs().max() > 1e-3


@pytest.mark.parametrize('isa', ['native', 'baseline'])
def test_fp32_mask_softmax_on_extreme_logits(isa, monkeypatch):
    """The fp32 kernels' own exp (a polynomial, not libm's) gives
    torch.softmax's weights over logits spread by 1e3, -inf logits (weight
    0), all-equal groups, and a NaN logit (its whole group NaN, as
    torch.softmax), on both instruction-set paths."""
    if isa == 'baseline':
        monkeypatch.setenv('OPS_DCNV3_CPU_ISA', 'baseline')
    # 8 channels a group (the AVX2 path runs), 24 points (three vectors).
    case = replace(CASES['k5_s2_d2_c64_center'], n=2, h=11, w=11, group=3,
                   group_channels=8)
    x, off, _ = case.tensors(torch.float32)
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(*off.shape[:-1], case.group, case.points, generator=gen)
    logits[0, 0] *= 1e3  # (n, row, column, group, point)
    logits[0, 1, :, 0, ::2] = float('-inf')
    logits[0, 2] = 4.0
    logits[0, 3, 0, 1] = torch.linspace(-120, 0, case.points)  # exp underflows
    logits[-1, -1, -1, -1, 2] = float('nan')
    logits = logits.flatten(-2)
    out = dcnv3(x, off, logits, *case.params(), 64, case.remove_center,
                mask_softmax=True)
    weights = logits.unflatten(-1, (case.group, case.points)).softmax(-1).flatten(-2)
    ref = dcnv3_core_pytorch(x, off, weights, *case.params(), case.remove_center)
    nan = ref.isnan()
    assert nan.any() and torch.equal(out.isnan(), nan)
    torch.testing.assert_close(out[~nan], ref[~nan], rtol=2e-6, atol=2e-6)


def test_mask_softmax_opcheck_and_non_contiguous_backward_fake():
    """The fake kernels match the real ones for the fused variant, and for
    strided inputs (the kernels return contiguous gradients)."""
    case = CASES['pad0_g8_center']
    x, off, mask = case.tensors(torch.float32)
    xs = x.transpose(1, 2).contiguous().transpose(1, 2)
    offs = torch.cat([off, off], dim=-1)[..., :off.shape[-1]]
    assert not (xs.is_contiguous() or offs.is_contiguous())
    torch.library.opcheck(torch.ops.ops_dcnv3.dcnv3_forward.default,
                          (xs.requires_grad_(), offs.requires_grad_(),
                           mask.requires_grad_(), *case.params(), 64, True, True))
    grad_out = torch.randn(case.n, *case.out_size, x.shape[-1])
    for softmax in (False, True):
        torch.library.opcheck(torch.ops.ops_dcnv3.dcnv3_backward.default,
                              (grad_out, xs.detach(), offs.detach(), mask.detach(),
                               *case.params(), 64, True, softmax))


class DCNv3OpLog(TorchDispatchMode):
    """The ops_dcnv3 ops that run below autograd, by name, in order."""

    def __enter__(self):
        self.names = []
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace, name = func.name().split('::')
        if namespace == 'ops_dcnv3':
            self.names.append(name.split('.')[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16])
def test_autograd_keeps_the_softmax_weights_for_the_cpu_backward(dtype):
    """With mask_softmax=True and a gradient to take, the CPU kernel's
    forward keeps the softmax weights it computed (float32 and float64) and
    the backward takes them instead of computing the softmax again: the
    output and all three gradients are dcnv3_forward's and dcnv3_backward's
    on the logits, bit for bit. Inference (no_grad) and float16 run the plain
    pair."""
    case = CASES['pad0_g8_center']
    x, off, logits = case.tensors(dtype)
    logits = 3 * logits
    grad_out = torch.randn(case.n, *case.out_size, x.shape[-1]).to(dtype)
    params = (*case.params(), 64, case.remove_center)
    ops = torch.ops.ops_dcnv3
    leaves = [t.clone().requires_grad_() for t in (x, off, logits)]
    with DCNv3OpLog() as log:
        out = ops.dcnv3_forward(*leaves, *params, True)
        grads = torch.autograd.grad(out, leaves, grad_out)
    keeps = dtype in (torch.float32, torch.float64)
    assert log.names == (['dcnv3_forward_keep_weights', 'dcnv3_backward_from_weights']
                         if keeps else ['dcnv3_forward', 'dcnv3_backward'])
    assert torch.equal(out, ops.dcnv3_forward(x, off, logits, *params, True))
    expected = ops.dcnv3_backward(grad_out, x, off, logits, *params, True)
    for what, a, b in zip(('input', 'offset', 'logits'), grads, expected):
        assert torch.equal(a, b), what
    with torch.no_grad(), DCNv3OpLog() as log:
        ops.dcnv3_forward(*leaves, *params, True)
    assert log.names == ['dcnv3_forward']
    if keeps:
        _, weights = ops.dcnv3_forward_keep_weights(x, off, logits, *params)
        softmax = logits.unflatten(-1, (case.group, case.points)).softmax(-1).flatten(-2)
        atol = 1e-6 if dtype == torch.float32 else 1e-14
        torch.testing.assert_close(weights, softmax, rtol=0, atol=atol)


def test_keep_weights_pair_opcheck_and_errors():
    """The pair's fake kernels match its CPU kernels; it refuses the dtypes
    it does not keep weights for, and a call that autograd would record
    directly (its own autograd is DCNv3's)."""
    case = CASES['pad0_g8_center']
    ops = torch.ops.ops_dcnv3
    params = (*case.params(), 64, case.remove_center)
    for dtype in (torch.float32, torch.float64):
        x, off, logits = case.tensors(dtype)
        torch.library.opcheck(ops.dcnv3_forward_keep_weights.default, (x, off, logits, *params))
        _, weights = ops.dcnv3_forward_keep_weights(x, off, logits, *params)
        grad_out = torch.randn(case.n, *case.out_size, x.shape[-1], dtype=dtype)
        torch.library.opcheck(ops.dcnv3_backward_from_weights.default,
                              (grad_out, x, off, weights, *params))
    half = case.tensors(torch.float16)
    with pytest.raises(TypeError, match='float32 or float64'):
        ops.dcnv3_forward_keep_weights(*half, *params)
    with pytest.raises(TypeError, match='float32 or float64'):
        ops.dcnv3_backward_from_weights(torch.zeros_like(half[0]), *half, *params)
    x, off, logits = case.tensors()
    with pytest.raises(NotImplementedError, match='no autograd of its own'):
        ops.dcnv3_forward_keep_weights(x.requires_grad_(), off, logits, *params)


def test_mixed_devices_are_refused():
    x, off, mask = CASES['k3_g1_c4'].tensors()
    with pytest.raises((ValueError, RuntimeError), match='device'):
        dcnv3(x, off.to('meta'), mask, *CASES['k3_g1_c4'].params(), 64, False)
    with pytest.raises(ValueError, match='one device'):
        dcnv3_core_pytorch(x, off.to('meta'), mask, *CASES['k3_g1_c4'].params(), False)


def test_meta_device_gives_shapes():
    """Models too large for memory are built and traced on the meta device."""
    case = CASES['k5_s2_d2_c64_center']
    x, off, mask = case.tensors(torch.float32, 'meta')
    assert 'meta' in KERNEL_DEVICES
    for out in (dcnv3(x, off, mask, *case.params(), 64, True),
                dcnv3_core_pytorch(x, off, mask, *case.params(), True)):
        assert out.device.type == 'meta' and out.shape == (1, *case.out_size, 128)


@needs_cuda
def test_cuda_grad_output_on_another_device_and_determinism_alert():
    case = CASES['k3_g1_c4']
    x, off, mask = [t.to(CUDA_DEVICE) for t in case.tensors(torch.float32)]
    grad_out = torch.randn(case.n, *case.out_size, 4)  # on the CPU
    with pytest.raises(ValueError, match='grad_output is on'):
        torch.ops.ops_dcnv3.dcnv3_backward(grad_out, x, off, mask, *case.params(),
                                           64, False)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match='deterministic'):
            torch.ops.ops_dcnv3.dcnv3_backward(grad_out.to(CUDA_DEVICE), x, off, mask,
                                               *case.params(), 64, False)
    finally:
        torch.use_deterministic_algorithms(False)


def test_cpu_grad_output_must_have_the_outputs_shape():
    case = CASES['k3_g1_c4']
    x, off, mask = case.tensors()
    grad_out = torch.randn(case.n, *case.out_size, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="expected the output's shape"):
        torch.ops.ops_dcnv3.dcnv3_backward(grad_out[:, :-1], x, off, mask,
                                           *case.params(), 64, False)


@needs_cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-5),
                                       (torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize('name', sorted(CASES))
def test_cuda_cpp_kernel_matches_reference(name, dtype, tol, monkeypatch):
    """The CUDA C++ kernel (OPS_DCNV3_BACKEND=cuda) against the fp64
    reference on the same (rounded) values, forward and gradients."""
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'cuda')
    half = dtype in (torch.float16, torch.bfloat16)
    # Half precision: no location on an integer, where gradients jump.
    case = replace(CASES[name], offset_scale=1.0) if half else CASES[name]
    device = torch.device(CUDA_DEVICE)
    tensors = [t.to(dtype) for t in (fractional_offsets(case) if half else case.tensors())]
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels,
                           generator=torch.Generator().manual_seed(1)).to(dtype)
    ref, ref_grads = run(dcnv3_core_pytorch, case, [t.double() for t in tensors],
                         grad_out.double())
    current = torch.cuda.current_device()
    out, grads = run(dcnv3, case, [t.to(device) for t in tensors], grad_out.to(device))
    assert out.device == tensors[0].to(device).device
    assert torch.cuda.current_device() == current
    assert_close_scaled(out.cpu(), ref, tol, 'output')
    for g, r in zip(grads, ref_grads):
        assert_close_scaled(g.cpu(), r, 4 * tol, 'grad')


def test_backend_selection(monkeypatch):
    """OPS_DCNV3_BACKEND names the backend; by default the CPU kernel runs
    CPU tensors and Triton CUDA tensors; a backend that cannot run on the
    device is an error that says why, never a silent fallback."""
    monkeypatch.delenv('OPS_DCNV3_BACKEND', raising=False)
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert select_backend('cpu') == 'cpu'
    assert select_backend('cuda') == ('triton' if TRITON_FOUND else
                                      'cuda' if 'cuda' in COMPILED_DEVICES else 'reference')
    assert select_backend('meta') == 'cpu'  # the C++ op's fake kernel
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'reference')
    assert select_backend('cpu') == select_backend('cuda') == 'reference'
    case = CASES['k3_g1_c4']
    x, off, mask = case.tensors()
    assert torch.equal(dcnv3(x, off, mask, *case.params()),
                       dcnv3_core_pytorch(x, off, mask, *case.params(), False))
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'cpu')
    assert select_backend('cpu') == 'cpu'
    with pytest.raises(RuntimeError, match='OPS_DCNV3_BACKEND=cpu cannot run cuda'):
        select_backend('cuda')
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'cuda')
    with pytest.raises(RuntimeError, match='cannot run cpu tensors'):
        dcnv3(x, off, mask, *case.params())
    if 'cuda' not in COMPILED_DEVICES:
        with pytest.raises(RuntimeError, match='DCNV3_WITH_CUDA=1'):
            select_backend('cuda')
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'Triton')
    with pytest.raises(ValueError, match="'Triton' is not a DCNv3 backend: choose one of "
                       'triton, cuda, cpu, reference'):
        dcnv3(x, off, mask, *case.params())
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'triton')
    if TRITON_FOUND:
        assert select_backend('cuda') == 'triton'
        with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
            select_backend('cpu')


def test_grid_helpers_follow_the_spec():
    """Point order: kernel x index outer; remove_center drops the centre."""
    dx, dy = kernel_points(3, 3, 1, 1, False)
    assert dx.tolist() == [-1, -1, -1, 0, 0, 0, 1, 1, 1]
    assert dy.tolist() == [-1, 0, 1, -1, 0, 1, -1, 0, 1]
    dx, dy = kernel_points(3, 3, 2, 2, True)
    assert list(zip(dx.tolist(), dy.tolist())).count((0, 0)) == 0 and len(dx) == 8
    assert output_size(7, 9, 3, 5, 2, 1, 1, 2, 2, 1) == (3, 9)
    assert math.isclose(float(dx.abs().max()), 2.0)


# The CPU kernel's AVX2 code runs for fp32 where group_channels % 8 == 0 and
# the CPU has AVX2; each case below meets the first two conditions, and
# the test skips (visibly) where the third fails.
ISA_CASES = {
    'd16_k5_pad2_scale2': CASES['k5_pad2_scale2'],
    'd8_g8_center': CASES['pad0_g8_center'],
    'd24_anisotropic': replace(CASES['anisotropic'], group_channels=24),
    'd64_k5_s2_d2_center': CASES['k5_s2_d2_c64_center'],
    'd32_mostly_outside': CASES['mostly_outside_c32'],
    # The backward in two bands of rows (see BAND_CASES).
    'd16_bands': BAND_CASES['halo'],
    'd64_bands_far': replace(BAND_CASES['far'], group=1, group_channels=64),
}


@functools.cache
def cpu_kernel_can_run(isa):
    """Whether the CPU kernel, asked for `isa` through OPS_DCNV3_CPU_ISA,
    finds it on this CPU (it raises where the CPU or the build lacks it)."""
    case = Case(group_channels=8)
    before = os.environ.get('OPS_DCNV3_CPU_ISA')
    os.environ['OPS_DCNV3_CPU_ISA'] = isa
    try:
        torch.ops.ops_dcnv3.dcnv3_forward(*case.tensors(torch.float32), *case.params(),
                                          64, False, False)
        return True
    except ValueError as e:
        assert 'lacks' in str(e), e
        return False
    finally:
        if before is None:
            del os.environ['OPS_DCNV3_CPU_ISA']
        else:
            os.environ['OPS_DCNV3_CPU_ISA'] = before


@pytest.mark.parametrize('value, message', [
    ('avx3', 'is not one of baseline, avx2, avx512'),
    ('AVX2', 'is not one of baseline, avx2, avx512'),
    ('avx512', 'lacks'),
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_cpu_instruction_set_variable_rejects_what_it_cannot_honour(value, message, dtype,
                                                                  monkeypatch):
    """OPS_DCNV3_CPU_ISA with a name it does not know, or an instruction set
    this CPU lacks, is an error naming the variable, not a silent fallback
    (whatever the dtype, though only fp32 has vector paths)."""
    if message == 'lacks' and cpu_kernel_can_run(value):
        pytest.skip(f'the CPU has {value}: nothing it lacks to ask for')
    case = Case(group_channels=8)
    monkeypatch.setenv('OPS_DCNV3_CPU_ISA', value)
    with pytest.raises(ValueError, match=f'OPS_DCNV3_CPU_ISA={value} .*{message}'):
        dcnv3(*case.tensors(dtype), *case.params(), 64, False)
    monkeypatch.setenv('OPS_DCNV3_CPU_ISA', 'baseline')
    dcnv3(*case.tensors(dtype), *case.params(), 64, False)


@pytest.mark.parametrize('isa', ['avx2', 'avx512'])
@pytest.mark.parametrize('mask_softmax', [False, True])
@pytest.mark.parametrize('name', sorted(ISA_CASES))
def test_cpu_instruction_set_paths_are_bit_identical(name, mask_softmax, isa, monkeypatch):
    """fp32 has AVX2 paths (and an AVX-512 weighted sum in the forward, which
    OPS_DCNV3_CPU_ISA=avx2 turns off); forward and gradients must give
    exactly the baseline's bits."""
    if not cpu_kernel_can_run(isa):
        pytest.skip(f'the CPU (or the build) has no {isa}: that path cannot run here')
    case = ISA_CASES[name]
    assert case.group_channels % 8 == 0  # else the AVX2 path would not run
    x, off, mask = case.tensors(torch.float32)
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels)

    def both():
        leaves = [t.clone().requires_grad_() for t in (x, off, mask)]
        out = dcnv3(*leaves, *case.params(), 64, case.remove_center,
                    mask_softmax=mask_softmax)
        return (out, *torch.autograd.grad(out, leaves, grad_out))

    monkeypatch.setenv('OPS_DCNV3_CPU_ISA', isa)
    fast = both()
    monkeypatch.setenv('OPS_DCNV3_CPU_ISA', 'baseline')
    baseline = both()
    for what, a, b in zip(('output', 'input', 'offset', 'mask'), fast, baseline):
        assert torch.equal(a, b), what


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('mask_softmax', [False, True])
@pytest.mark.parametrize('name', ['d16_k5_pad2_scale2', 'd8_g8_center', 'd16_bands',
                                  'd64_bands_far'])
def test_cpu_half_types_on_the_fp32_vector_path_keep_the_portable_bits(
        name, mask_softmax, dtype, monkeypatch):
    """fp16 / bf16 run the fp32 vector code on fp32 copies where it can run:
    forward and gradients must be exactly those of the portable fp16 / bf16
    code (OPS_DCNV3_CPU_ISA=baseline)."""
    if not cpu_kernel_can_run('avx2'):
        pytest.skip('the CPU (or the build) has no avx2: only the portable code runs')
    case = ISA_CASES[name]
    x, off, mask = [t.to(dtype) for t in case.tensors(torch.float32)]
    grad_out = torch.randn(case.n, *case.out_size,
                           case.group * case.group_channels).to(dtype)

    def both():
        leaves = [t.clone().requires_grad_() for t in (x, off, mask)]
        out = dcnv3(*leaves, *case.params(), 64, case.remove_center,
                    mask_softmax=mask_softmax)
        return (out, *torch.autograd.grad(out, leaves, grad_out))

    monkeypatch.delenv('OPS_DCNV3_CPU_ISA', raising=False)
    fast = both()
    monkeypatch.setenv('OPS_DCNV3_CPU_ISA', 'baseline')
    portable = both()
    for what, a, b in zip(('output', 'input', 'offset', 'mask'), fast, portable):
        assert a.dtype == dtype and torch.equal(a, b), what


def test_non_finite_input_gives_the_reference_answer():
    """Neighbours outside the image contribute nothing, even where the input
    holds Inf or NaN elsewhere (a kernel that clamped their index and weighted
    it by 0 would turn 0 * Inf into NaN)."""
    case = CASES['mostly_outside_c32']
    x, off, mask = case.tensors(torch.float32)
    x[0, 0, 0, :] = float('inf')
    x[1, 2, 3, 5] = float('nan')
    out = dcnv3(x, off, mask, *case.params(), 64, False)
    ref = dcnv3_core_pytorch(x, off, mask, *case.params(), False)
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
    finite = ref.isfinite()
    assert finite.any() and (~finite).any()
    torch.testing.assert_close(out[finite], ref[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('mask_softmax', [False, True])
def test_second_order_gradients_raise_instead_of_returning_zeros(mask_softmax):
    """create_graph=True gives the right first-order gradients; a backward
    through them (double backward) raises NotImplementedError naming the
    limitation, where autograd used to treat the op as constant (zeros)."""
    case = CASES['k3_g1_c4']
    x, off, mask = case.tensors()
    leaves = [t.clone().requires_grad_() for t in (x, off, mask)]
    out = dcnv3(*leaves, *case.params(), 64, False, mask_softmax=mask_softmax)
    grads = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
    ref_leaves = [t.clone().requires_grad_() for t in (x, off, mask)]
    ref = dcnv3_core_pytorch(*ref_leaves, *case.params(), False,
                             mask_softmax=mask_softmax)
    ref_grads = torch.autograd.grad(ref.square().sum(), ref_leaves, create_graph=True)
    for g, r in zip(grads, ref_grads):
        assert g.requires_grad
        assert_close_scaled(g.detach(), r.detach(), 1e-10, 'first-order gradient')
    # The reference has non-zero second-order gradients ...
    second = torch.autograd.grad(ref_grads[0].square().sum(), ref_leaves[1])[0]
    assert second.abs().max() > 1e-3
    # ... which the kernel refuses to fake.
    with pytest.raises(NotImplementedError, match='second-order gradients'):
        torch.autograd.grad(grads[0].square().sum(), leaves[1])


def random_case(seed):
    """A random valid geometry: kernel 1-5 (non-square too), stride 1-3,
    padding 0-3, dilation 1-3, 1-5 groups of 1-24 channels, odd and tiny
    sizes, remove_center, offset_scale."""
    gen = torch.Generator().manual_seed(seed)

    def pick(values):
        return values[torch.randint(len(values), (1,), generator=gen).item()]

    while True:
        kh, kw = pick([1, 2, 3, 5]), pick([1, 2, 3, 5])
        case = Case(
            n=pick([1, 2, 3]), h=pick([1, 2, 3, 5, 7, 8, 12]), w=pick([1, 2, 4, 5, 9, 11]),
            group=pick([1, 2, 3, 5]), group_channels=pick([1, 2, 3, 4, 5, 7, 8, 12, 16, 24]),
            kernel_h=kh, kernel_w=kw, stride_h=pick([1, 2, 3]), stride_w=pick([1, 2, 3]),
            pad_h=pick([0, 1, 2, 3]), pad_w=pick([0, 1, 2, 3]),
            dilation_h=pick([1, 2, 3]), dilation_w=pick([1, 2, 3]),
            offset_scale=pick([0.5, 1.0, 1.7, 2.0]),
            remove_center=kh == kw and kh % 2 == 1 and kh > 1 and pick([False, True]),
            offset_std=pick([0.5, 2.0, 6.0]))
        if min(case.out_size) >= 1:
            return case, gen


def sampling_locations(case, off):
    """(x, y) of every point, (N, Ho, Wo, G, P) each, as the kernels compute
    them (docs/dcnv3_op.md)."""
    n, ho, wo, _ = off.shape
    dx, dy = kernel_points(case.kernel_h, case.kernel_w, case.dilation_h,
                           case.dilation_w, case.remove_center, off.dtype)
    cx = (case.dilation_w * (case.kernel_w - 1)) // 2
    cy = (case.dilation_h * (case.kernel_h - 1)) // 2
    base_x = torch.arange(wo, dtype=off.dtype) * case.stride_w - case.pad_w + cx
    base_y = torch.arange(ho, dtype=off.dtype) * case.stride_h - case.pad_h + cy
    o = off.reshape(n, ho, wo, case.group, case.points, 2)
    s = case.offset_scale
    return (base_x.view(1, 1, wo, 1, 1) + s * (dx + o[..., 0]),
            base_y.view(1, ho, 1, 1, 1) + s * (dy + o[..., 1]))


def place_points(case, off, gen, fraction, targets):
    """Moves a random `fraction` of the points so that they sample at
    coordinates drawn from targets(width or height) (both axes)."""
    n, ho, wo, _ = off.shape
    off = off.clone()
    o = off.view(n, ho, wo, case.group, case.points, 2)
    x, y = sampling_locations(case, off)
    chosen = torch.rand(x.shape, generator=gen) < fraction
    for axis, loc, size in ((0, x, case.w), (1, y, case.h)):
        values = torch.tensor(targets(size), dtype=off.dtype)
        target = values[torch.randint(len(values), loc.shape, generator=gen)]
        o[..., axis] = torch.where(chosen, o[..., axis] + (target - loc) / case.offset_scale,
                                   o[..., axis])
    return off


@pytest.mark.parametrize('seed', range(40))
def test_fuzz_against_the_reference(seed):
    """Random geometry and offsets (points far outside, on the border cells,
    at integer coordinates), with and without the fused softmax: output and
    the three gradients equal the reference's, fp64 to 1e-10. The offset
    gradient is compared away from integer coordinates, where bilinear
    interpolation has a kink and either side's derivative is right."""
    case, gen = random_case(seed)
    mask_softmax = bool(seed % 2)
    x, off, mask = case.tensors(seed=seed)
    if mask_softmax:
        mask = 4 * torch.randn(mask.shape, generator=gen, dtype=torch.float64)
    off = place_points(case, off, gen, 0.15, lambda size: [-1e6, -3e3, -5.5, 2 * size + 7, 1e5])
    off = place_points(case, off, gen, 0.15, lambda size: [
        -0.99, -0.75, -0.5, -0.25, 0.0, 0.25, size - 1.0, size - 0.75, size - 0.5, size - 0.01])
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels,
                           dtype=torch.float64, generator=gen)
    results = []
    for fn in (dcnv3, dcnv3_core_pytorch):
        leaves = [t.clone().requires_grad_() for t in (x, off, mask)]
        extra = (64, ) if fn is dcnv3 else ()
        out = fn(*leaves, *case.params(), *extra, case.remove_center,
                 mask_softmax=mask_softmax)
        results.append((out, *torch.autograd.grad(out, leaves, grad_out)))
    (out, g_in, g_off, g_mask), (ref, r_in, r_off, r_mask) = results
    assert_close_scaled(out, ref, 1e-10, f'output of {case}')
    assert_close_scaled(g_in, r_in, 1e-10, f'grad of input of {case}')
    assert_close_scaled(g_mask, r_mask, 1e-10, f'grad of mask of {case}')
    px, py = sampling_locations(case, off)
    smooth = ((px - px.round()).abs() > 1e-6) & ((py - py.round()).abs() > 1e-6)
    smooth = smooth[..., None].expand(*smooth.shape, 2).reshape(off.shape)
    assert_close_scaled(g_off[smooth], r_off[smooth], 1e-10, f'grad of offset of {case}')


@pytest.mark.parametrize('mask_softmax', [False, True])
@pytest.mark.parametrize('bad', ['nan', 'inf', '-inf'])
def test_nan_and_inf_offsets_count_as_outside(bad, mask_softmax):
    """The kernel's documented answer for a non-finite offset: its point
    counts as outside the image (it adds nothing and gets zero offset and
    weight gradients), exactly as a point moved far outside does. The
    reference (grid_sample) returns NaN there instead."""
    case, gen = random_case(7)
    case = replace(case, n=2, h=6, w=7, group=2, group_channels=8)
    x, off, mask = case.tensors()
    n, ho, wo, _ = off.shape
    hit = torch.rand(n, ho, wo, case.group, case.points, generator=gen) < 0.3
    axis = torch.randint(2, hit.shape, generator=gen)  # x or y goes bad
    o = off.view(*hit.shape, 2)
    bad_off = o.clone()
    bad_off[..., 0] = torch.where(hit & (axis == 0), float(bad), o[..., 0])
    bad_off[..., 1] = torch.where(hit & (axis == 1), float(bad), o[..., 1])
    far_off = torch.where(hit[..., None], torch.full_like(o, 1e6), o)
    grad_out = torch.randn(case.n, *case.out_size, 16, dtype=torch.float64, generator=gen)
    results = []
    for offsets in (bad_off.reshape(off.shape), far_off.reshape(off.shape)):
        leaves = [t.clone().requires_grad_() for t in (x, offsets, mask)]
        out = dcnv3(*leaves, *case.params(), 64, case.remove_center,
                    mask_softmax=mask_softmax)
        results.append((out, *torch.autograd.grad(out, leaves, grad_out)))
    for what, a, b in zip(('output', 'input', 'offset', 'mask'), *results):
        assert torch.equal(a, b), what
    assert results[0][0].isfinite().all()
    g_off = results[0][2].view(*hit.shape, 2)
    assert (g_off[hit] == 0).all()
    if not mask_softmax:
        assert (results[0][3].view(hit.shape)[hit] == 0).all()
    ref = dcnv3_core_pytorch(x, bad_off.reshape(off.shape), mask, *case.params(),
                             case.remove_center, mask_softmax=mask_softmax)
    assert ref.isnan().any()
