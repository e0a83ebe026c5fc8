# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The Triton backend (ops_dcnv3/triton) against the fp64 reference.

On a machine with a GPU the kernels run natively on ``DCNV3_TEST_DEVICE``
(default ``cuda``). Without one (CI) they run on CPU tensors under Triton's
interpreter: this module sets ``TRITON_INTERPRET=1`` before it imports the
kernels, for the kernels' definition and for its own tests only, and checks
that it took effect (it cannot if something imported ``ops_dcnv3.triton``
before). The interpreter runs the kernels' source, masks and atomics
included; a subprocess also compiles them for real GPUs (sm_80, sm_90) and
traces them into a torch.compile graph on fake CUDA tensors.
"""
import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import replace

import pytest
import torch
import torch._dynamo.testing

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device(os.environ.get('DCNV3_TEST_DEVICE', 'cuda') if ON_GPU else 'cpu')
if ON_GPU and DEVICE.index is None:
    DEVICE = torch.device('cuda', torch.cuda.current_device())
triton = pytest.importorskip('triton')

if not ON_GPU and __name__ != '__main__':
    _before = os.environ.get('TRITON_INTERPRET')
    os.environ['TRITON_INTERPRET'] = '1'
    try:
        import ops_dcnv3.triton as dcnv3_triton
    finally:
        if _before is None:
            del os.environ['TRITON_INTERPRET']
        else:
            os.environ['TRITON_INTERPRET'] = _before
    if not dcnv3_triton.interpreted():
        raise RuntimeError(
            'ops_dcnv3.triton was imported before this module could set '
            'TRITON_INTERPRET=1, so its kernels cannot run on the CPU here: '
            'run this file in its own pytest process, or set TRITON_INTERPRET=1')
else:
    import ops_dcnv3.triton as dcnv3_triton

from ops_dcnv3 import dcnv3, dcnv3_core_pytorch  # noqa: E402
from test_dcnv3_op import (BORDER_CASE, CASES, LOW_PRECISION, Case,  # noqa: E402
                           assert_close_scaled, border_offsets, fractional_offsets)

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5,
             # fp16/bf16 outputs are rounded once: half an ulp of the
             # largest value (2^-11, 2^-8), with room for the interpreter,
             # which rounds bf16 by truncation.
             torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    monkeypatch.setenv('OPS_DCNV3_BACKEND', 'triton')
    if not ON_GPU:
        monkeypatch.setenv('TRITON_INTERPRET', '1')


def run(case, tensors, grad_out, mask_softmax=False, fn=dcnv3):
    """Output and the three gradients through ``fn``."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    if fn is dcnv3:
        out = dcnv3(*leaves, *case.params(), 64, case.remove_center, mask_softmax)
    else:
        out = fn(*leaves, *case.params(), case.remove_center, mask_softmax)
    return (out.detach(), *torch.autograd.grad(out, leaves, grad_out))


def check_against_reference(case, tensors, dtype, mask_softmax=False, seed=1):
    """Triton on DEVICE against the fp64 reference on the same (rounded)
    values, forward and all three gradients."""
    grad_out = torch.randn(case.n, *case.out_size, case.group * case.group_channels,
                           generator=torch.Generator().manual_seed(seed)).to(dtype)
    tensors = [t.to(dtype) for t in tensors]
    expected = run(case, [t.double() for t in tensors], grad_out.double(),
                   mask_softmax, fn=dcnv3_core_pytorch)
    current = torch.cuda.current_device() if ON_GPU else None
    actual = run(case, [t.to(DEVICE) for t in tensors], grad_out.to(DEVICE),
                 mask_softmax)
    if ON_GPU:  # the device guard leaves the current device alone
        assert torch.cuda.current_device() == current
    tol = TOLERANCE[dtype]
    for what, a, e in zip(('output', 'grad of input', 'grad of offset', 'grad of mask'),
                          actual, expected):
        assert a.dtype == dtype and a.device == DEVICE, what
        assert a.is_contiguous(), what
        assert_close_scaled(a.cpu(), e, tol if what == 'output' else 4 * tol, what)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('name', sorted(CASES))
def test_matches_reference(name, dtype):
    case = CASES[name]
    check_against_reference(case, case.tensors(), dtype)


HALF_CASES = ['k5_pad2_scale2', 'pad0_g8_center', 'g7_c9', 'stride2_c6']


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', HALF_CASES)
def test_half_precision_matches_reference(name, dtype):
    case = replace(CASES[name], offset_scale=1.0)
    check_against_reference(case, fractional_offsets(case), dtype)


SOFTMAX_CASES = ['k3_g1_c4', 'k5_pad2_scale2', 'pad0_g8_center', 'anisotropic',
                 'batch3_many_outside']


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('name', SOFTMAX_CASES)
def test_mask_softmax_matches_reference(name, dtype):
    """The fused softmax: logits in, the logits' gradient out."""
    case = CASES[name]
    x, off, mask = case.tensors()
    logits = 4 * mask - 2
    check_against_reference(case, (x, off, logits), dtype, mask_softmax=True)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_mask_softmax_half_precision(dtype):
    case = replace(CASES['pad0_g8_center'], offset_scale=1.0)
    x, off, mask = fractional_offsets(case)
    check_against_reference(case, (x, off, 4 * mask - 2), dtype, mask_softmax=True)


def test_points_on_the_border_and_wholly_outside():
    case = BORDER_CASE
    x, _, mask = case.tensors()
    off = border_offsets(case, torch.Generator().manual_seed(3))
    check_against_reference(case, (x, off, mask), torch.float64)
    check_against_reference(case, (x, off, mask), torch.float32)
    # Wholly outside: nothing reaches the output or any gradient.
    far = torch.zeros_like(off)
    far[..., 0::2] = -50.0
    grad_out = torch.randn(case.n, *case.out_size, 4, dtype=torch.float64)
    for t in run(case, [t.to(DEVICE) for t in (x, far, mask)], grad_out.to(DEVICE)):
        assert t.abs().max() == 0


def test_non_contiguous_inputs_empty_batch_and_non_finite_input():
    case = CASES['dil2_pad2_c12']
    x, off, mask = [t.float().to(DEVICE) for t in case.tensors()]
    xs = x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    offs = torch.cat([off, off], dim=-1)[..., :off.shape[-1]]
    masks = mask.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (xs.is_contiguous() or offs.is_contiguous() or masks.is_contiguous())
    grad_out = torch.randn(case.n, *case.out_size, x.shape[-1], device=DEVICE)
    strided = grad_out.transpose(1, 2).contiguous().transpose(1, 2)
    for a, b in zip(run(case, (xs, offs, masks), strided), run(case, (x, off, mask), grad_out)):
        assert torch.equal(a, b)
    empty = [t[:0] for t in (x, off, mask)]
    results = run(case, empty, grad_out[:0])
    assert [r.shape for r in results] == [(0, *case.out_size, x.shape[-1])] + [
        t.shape for t in empty]
    # Neighbours outside the image contribute nothing, even where the input
    # holds Inf or NaN elsewhere (0 * Inf would be NaN).
    case = CASES['mostly_outside_c32']
    x, off, mask = [t.float() for t in case.tensors()]
    x[0, 0, 0, :] = float('inf')
    x[1, 2, 3, 5] = float('nan')
    ref = dcnv3_core_pytorch(x, off, mask, *case.params(), False)
    out = dcnv3(*[t.to(DEVICE) for t in (x, off, mask)], *case.params()).cpu()
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
    finite = ref.isfinite()
    assert finite.any() and (~finite).any()
    torch.testing.assert_close(out[finite], ref[finite], rtol=1e-5, atol=1e-5)


def test_opcheck():
    """Schema, autograd registration and fake kernel (the function itself)
    match the real kernels; on a GPU also the AOT-dispatch (torch.compile)
    path, which the interpreter cannot take (tested in a subprocess below)."""
    case = CASES['pad0_g8_center']
    x, off, mask = [t.float().to(DEVICE) for t in case.tensors()]
    xs = x.transpose(1, 2).contiguous().transpose(1, 2)  # strided
    utils = None if ON_GPU else ('test_schema', 'test_autograd_registration',
                                 'test_faketensor')
    for softmax in (False, True):
        args = (*case.params(), 64, True, softmax)
        torch.library.opcheck(
            torch.ops.ops_dcnv3.dcnv3_triton_forward.default,
            (xs.requires_grad_(), off.requires_grad_(), mask.requires_grad_(), *args),
            test_utils=utils)
        grad_out = torch.randn(case.n, *case.out_size, x.shape[-1], device=DEVICE)
        torch.library.opcheck(
            torch.ops.ops_dcnv3.dcnv3_triton_backward.default,
            (grad_out, xs.detach(), off.detach(), mask.detach(), *args),
            test_utils=utils)


def test_meta_tensors_give_shapes():
    case = CASES['k5_s2_d2_c64_center']
    x, off, mask = [t.float().to('meta').requires_grad_() for t in case.tensors()]
    out = dcnv3(x, off, mask, *case.params(), 64, True, True)
    assert out.device.type == 'meta' and out.shape == (1, *case.out_size, 128)
    grads = torch.autograd.grad(out.sum(), (x, off, mask))
    assert [g.shape for g in grads] == [t.shape for t in (x, off, mask)]


def test_gradcheck_fp64():
    """Against finite differences (fast mode: a few random directions, each
    a handful of interpreted launches)."""
    case = Case(n=1, h=4, w=5, group=2, group_channels=3, remove_center=True)
    x, off, mask = [t.to(DEVICE) for t in case.tensors()]
    off = off.round() + 0.5 + 0.3 * (torch.rand_like(off) - 0.5)
    for softmax in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, c: dcnv3(a, b, c, *case.params(), 64, True, softmax),
            [t.clone().requires_grad_() for t in (x, off, mask)], eps=1e-6, atol=1e-8,
            fast_mode=True)


def test_backward_alerts_under_deterministic_algorithms():
    """grad_input is summed with atomics: torch.use_deterministic_algorithms
    raises (or warns with warn_only), as for torch's own atomic backwards."""
    case = CASES['k3_g1_c4']
    x, off, mask = [t.float().to(DEVICE).requires_grad_() for t in case.tensors()]
    try:
        torch.use_deterministic_algorithms(True)
        out = dcnv3(x, off, mask, *case.params())  # the forward is deterministic
        with pytest.raises(RuntimeError, match='use_deterministic_algorithms'):
            out.sum().backward()
        torch.use_deterministic_algorithms(True, warn_only=True)
        with pytest.warns(UserWarning, match='not deterministic'):
            dcnv3(x, off, mask, *case.params()).sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        dcnv3(x, off, mask, *case.params()).sum().backward()
    assert not [w for w in caught if 'deterministic' in str(w.message)]


def test_bad_input_and_grad_output_on_another_device():
    case = CASES['k3_g1_c4']
    x, off, mask = [t.to(DEVICE) for t in case.tensors()]
    with pytest.raises(ValueError, match='offset must have shape'):
        dcnv3(x, off[..., :-2], mask, *case.params())
    for dtype in LOW_PRECISION:
        with pytest.raises(TypeError, match='float64, float32, float16 or bfloat16'):
            dcnv3(*[torch.empty(t.shape, dtype=dtype, device=DEVICE) for t in (x, off, mask)],
                  *case.params())
    with pytest.raises(ValueError, match='no sampling point'):
        dcnv3(x, off[..., :0], mask[..., :0], 1, 1, *case.params()[2:], 64, True)
    grad_out = torch.randn(case.n, *case.out_size, 4, dtype=torch.float64)
    backward = torch.ops.ops_dcnv3.dcnv3_triton_backward
    with pytest.raises(ValueError, match='grad_output is on meta'):
        backward(grad_out.to('meta'), x, off, mask, *case.params(), 64, False)
    with pytest.raises(ValueError, match="expected the output's shape"):
        backward(grad_out[:, :-1].to(DEVICE), x, off, mask, *case.params(), 64, False)


def test_dynamo_traces_dcnv3_without_graph_breaks():
    """torch.compile's first stage (Dynamo) turns dcnv3() with the Triton
    backend into one graph holding the op; the 'eager' backend then runs it
    (so this runs under the interpreter too)."""
    case = CASES['k3_g1_c4']
    x, off, mask = [t.float().to(DEVICE) for t in case.tensors()]
    torch._dynamo.reset()
    counts = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(lambda *t: dcnv3(*t, *case.params(), 64, False, True),
                             backend=counts, fullgraph=True)
    assert torch.equal(compiled(x, off, mask),
                       dcnv3(x, off, mask, *case.params(), 64, False, True))
    assert counts.frame_count == 1 and counts.op_count == 1


@pytest.mark.skipif(not ON_GPU, reason='needs a GPU (the compiled graph runs the kernels)')
def test_torch_compile_runs_the_triton_kernels():
    from ops_dcnv3.modules import DCNv3
    torch.manual_seed(0)
    module = DCNv3(channels=64, group=4).to(DEVICE)
    x = torch.randn(2, 14, 14, 64, device=DEVICE, requires_grad=True)
    expected = module(x)
    compiled = torch.compile(module, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    grad, = torch.autograd.grad(out.sum(), x)
    expected_grad, = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-3)


# --- compiled for real GPUs, and traced for torch.compile, in a subprocess --
# (the kernels here are the interpreter's; these need Triton's compiler).

def compile_and_trace():
    """Compile both kernels with Triton's real compiler for sm_80 and sm_90
    (no GPU needed), and trace dcnv3 with its backward on fake CUDA tensors
    as AOTAutograd does for torch.compile; print what was found as JSON."""
    from triton.backends.compiler import GPUTarget
    from torch._functorch.aot_autograd import aot_export_module
    from torch._subclasses.fake_tensor import FakeTensorMode
    from ops_dcnv3.triton import kernels
    compiled = []
    for kernel, pointers in ((kernels.dcnv3_forward_kernel, 4),
                             (kernels.dcnv3_backward_kernel, 7)):
        for dtype, arch, softmax in (('fp32', 90, False), ('fp16', 90, True),
                                     ('bf16', 80, True), ('fp64', 80, False)):
            signature = {}
            for i, name in enumerate(kernel.arg_names):
                if i in kernel.constexprs:
                    signature[name] = 'constexpr'
                elif i < pointers:
                    acc = 'fp64' if dtype == 'fp64' else 'fp32'
                    signature[name] = '*' + (acc if name == 'grad_inp' else dtype)
                else:
                    signature[name] = 'i32'
            constexprs = dict(D=16, OFFSET_SCALE=1.0, KH=3, KW=3, REMOVE_CENTER=1,
                              SOFTMAX=softmax, FP64=dtype == 'fp64', BLOCK_R=64,
                              BLOCK_D=16, BLOCK_P=8)
            # As a launch specialises them: tensors start 16-byte aligned.
            aligned = {(i,): [['tt.divisibility', 16]] for i in range(pointers)}
            binary = triton.compile(
                triton.compiler.ASTSource(kernel, signature, constexprs, attrs=aligned),
                target=GPUTarget('cuda', arch, 32))
            # DCNv4's point: a row's channels move as vectors, not one by one.
            vector_loads = len(re.findall(r'ld\.global(?:\.\w+)*\.v[24]', binary.asm['ptx']))
            compiled.append(dict(kernel=kernel.fn.__name__, dtype=dtype, arch=arch,
                                 cubin_bytes=len(binary.asm['cubin']),
                                 vector_loads=vector_loads))
    # The forward and the backward op, each as AOTAutograd traces it for
    # torch.compile (joint tracing needs the kernels' mutation analysis, which
    # needs a GPU driver; without one it assumes every input is mutated).
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    case = CASES['pad0_g8_center']
    args = (*case.params(), 64, True, True)

    class Forward(torch.nn.Module):
        def forward(self, x, off, mask):
            return (torch.ops.ops_dcnv3.dcnv3_triton_forward(x, off, mask, *args),)

    class Backward(torch.nn.Module):
        def forward(self, grad, x, off, mask):
            return torch.ops.ops_dcnv3.dcnv3_triton_backward(grad, x, off, mask, *args)

    traced = {}
    with FakeTensorMode():
        x, off, mask = [t.float().to('cuda') for t in case.tensors()]
        grad = torch.empty(case.n, *case.out_size, x.shape[-1], device='cuda')
        for name, module, inputs in (('forward', Forward(), (x, off, mask)),
                                     ('backward', Backward(), (grad, x, off, mask))):
            graph, _ = aot_export_module(module, inputs, trace_joint=False)
            traced[name] = dict(
                code=graph.code,
                kernels=[kernel_side_table.get_kernel(n.kwargs['kernel_idx']).fn.__name__
                         for n in graph.graph.nodes
                         if 'triton_kernel_wrapper' in str(n.target)])
    print(json.dumps(dict(compiled=compiled, traced=traced)))


def test_kernels_compile_for_gpus_and_trace_into_torch_compile_graphs():
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = os.pathsep.join([root, os.path.dirname(__file__),
                                         env.get('PYTHONPATH', '')])
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(found['compiled']) == 8, found['compiled']
    assert all(c['vector_loads'] > 0 for c in found['compiled']), found['compiled']
    # Each op's kernel is a call in its traced graph (Inductor launches it
    # itself); no opaque custom op is left.
    for name in ('forward', 'backward'):
        traced = found['traced'][name]
        assert traced['kernels'] == [f'dcnv3_{name}_kernel'], traced['code']
        assert 'ops_dcnv3' not in traced['code'], traced['code']

if __name__ == '__main__':
    compile_and_trace()
