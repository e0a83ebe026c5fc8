# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""ops_dcnv3.modules.linear: the oneDNN route gives the modules' answer and
their gradients (second derivatives included), and is not taken where it
would lose something (hooks, tracing, export, compiled training)."""
import pytest
import torch
from torch import nn

import ops_dcnv3.modules.linear as fused
from ops_dcnv3 import DCNv3

pytestmark = pytest.mark.skipif(fused._LINEAR_POINTWISE is None,
                                reason='this torch has no oneDNN linear')

ACTIVATIONS = {
    'none': None, 'gelu': nn.GELU(), 'gelu_tanh': nn.GELU(approximate='tanh'),
    'relu': nn.ReLU(), 'silu': nn.SiLU(),
}


def _fc(cin=24, cout=40, bias=True):
    torch.manual_seed(0)
    return nn.Linear(cin, cout, bias=bias)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('act', sorted(ACTIVATIONS))
def test_onednn_route_gives_the_modules_answer(act, bias):
    fc, a = _fc(bias=bias), ACTIVATIONS[act]
    x = torch.randn(2, 5, 7, 24)
    with torch.no_grad():
        assert fused.uses_onednn(x, fc, a)
        y = fused.linear(x, fc, a)
        ref = fc(x) if a is None else a(fc(x))
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def _grads(fn, x, fc, grad):
    y = fn(x)
    leaves = [t for t in (x, fc.weight, fc.bias) if t is not None and t.requires_grad]
    return (y, ) + torch.autograd.grad(y, leaves, grad)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('act', ['none', 'gelu'])
@pytest.mark.parametrize('leaves', ['all', 'input', 'weights'])
def test_training_route_gives_the_modules_gradients(act, bias, leaves):
    fc, a = _fc(bias=bias), ACTIVATIONS[act]
    x = torch.randn(2, 9, 11, 24, requires_grad=leaves != 'weights')
    if leaves == 'input':
        fc.requires_grad_(False)
    assert fused._route(x, fc, a) == 'training'
    grad = torch.randn(2, 9, 11, 40)
    fast = _grads(lambda t: fused.linear(t, fc, a), x, fc, grad)
    slow = _grads(lambda t: fc(t) if a is None else a(fc(t)), x, fc, grad)
    assert len(fast) == len(slow) == 1 + (1 if leaves != 'weights' else 0) + (
        (1 + bias) if leaves != 'input' else 0)
    for f, s in zip(fast, slow):
        assert f.abs().sum() > 0
        torch.testing.assert_close(f, s, rtol=1e-5, atol=1e-5)


def test_a_trainable_bias_alone_takes_the_training_route():
    fc = _fc()
    fc.weight.requires_grad_(False)
    x = torch.randn(5, 24)
    assert fused._route(x, fc, None) == 'training'
    grad = torch.randn(5, 40)
    fast, = torch.autograd.grad(fused.linear(x, fc), fc.bias, grad)
    torch.testing.assert_close(fast, grad.sum(0))


def test_training_route_second_derivatives():
    """A gradient penalty (create_graph=True, then a second backward) gets
    F.linear's second derivatives, not zeros or None."""
    fc, act = _fc(), nn.GELU()
    x = torch.randn(3, 4, 24, requires_grad=True)

    def penalty(fn):
        gx, = torch.autograd.grad(fn(x).square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (x, fc.weight, fc.bias))

    assert fused._route(x, fc, act) == 'training'
    fast = penalty(lambda t: fused.linear(t, fc, act))
    slow = penalty(lambda t: act(fc(t)))
    for f, s in zip(fast, slow):
        assert f.abs().sum() > 0
        torch.testing.assert_close(f, s, rtol=1e-5, atol=1e-5)


def test_compiled_training_takes_the_modules():
    fc, act = _fc(), nn.GELU()
    x = torch.randn(3, 24, requires_grad=True)
    seen = []

    def fn(t):
        seen.append(torch.compiler.is_compiling() and fused.uses_onednn(t, fc, act))
        return fused.linear(t, fc, act)

    compiled = torch.compile(fn, fullgraph=True, backend='aot_eager')
    fast = _grads(compiled, x, fc, torch.ones(3, 40))
    slow = _grads(lambda t: act(fc(t)), x, fc, torch.ones(3, 40))
    assert seen == [False]
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s, rtol=1e-5, atol=1e-5)


def test_hooks_still_fire():
    fc, act = _fc(), nn.GELU()
    seen = []
    act.register_forward_hook(lambda m, i, o: seen.append('act'))
    x = torch.randn(3, 24)
    with torch.no_grad():
        assert not fused.uses_onednn(x, fc, act)
        fused.linear(x, fc, act)
        fc.register_forward_hook(lambda m, i, o: seen.append('fc'))
        fused.linear(x, fc)
    assert seen == ['act', 'fc']


def test_other_dtypes_devices_and_layouts_take_the_modules():
    fc = _fc()
    with torch.no_grad():
        assert not fused.uses_onednn(torch.randn(3, 24).double(), fc.double())
        fc.float()
        assert not fused.uses_onednn(torch.randn(24, 3).t(), fc)
        assert not fused.uses_onednn(torch.randn(3, 24), fc, nn.Tanh())


def test_cpu_autocast_takes_the_modules():
    """Autocast casts F.linear's inputs to bf16; the oneDNN call would not."""
    fc, act = _fc(), nn.GELU()
    x = torch.randn(3, 24, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not fused.uses_onednn(x, fc, act)
        assert fused.linear(x, fc, act).dtype == torch.bfloat16
        with torch.no_grad():
            assert not fused.uses_onednn(x, fc, act)


def test_tracing_sees_aten_linear():
    """jit tracing (mmengine's FLOP counter, ONNX export) records the
    standard op, never the oneDNN one."""
    block = DCNv3(channels=16, group=2).eval()
    with torch.no_grad():
        graph = torch.jit.trace(block, torch.randn(1, 5, 5, 16)).inlined_graph
    kinds = {n.kind() for n in graph.nodes()}
    assert 'aten::linear' in kinds
    assert not any(k.startswith('mkldnn::') for k in kinds)


def test_dcnv3_block_is_unchanged_by_the_route(monkeypatch):
    torch.manual_seed(0)
    block = DCNv3(channels=32, group=4).eval()
    for p in block.parameters():  # the offsets and masks start at zero
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 6, 7, 32)
    with torch.no_grad():
        fast = block(x)
        monkeypatch.setattr(fused, '_LINEAR_POINTWISE', None)
        slow = block(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_dcnv3_block_gradients_are_unchanged_by_the_route(monkeypatch):
    torch.manual_seed(0)
    block = DCNv3(channels=32, group=4).train()
    for p in block.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 6, 7, 32, requires_grad=True)
    grad = torch.randn(2, 6, 7, 32)
    leaves = [x] + list(block.parameters())
    assert fused._route(x, block.input_proj, None) == 'training'
    fast = torch.autograd.grad(block(x), leaves, grad)
    monkeypatch.setattr(fused, '_LINEAR_POINTWISE', None)
    slow = torch.autograd.grad(block(x), leaves, grad)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-4)


def test_compiled_inference_keeps_the_route_and_the_answer():
    """torch.compile(fullgraph=True) traces through the oneDNN op (no graph
    break) and gives the eager answer; torch.export records aten.linear."""
    torch.manual_seed(0)
    fc, act = _fc(), nn.GELU()
    x = torch.randn(4, 24)
    with torch.no_grad():
        compiled = torch.compile(lambda t: fused.linear(t, fc, act), fullgraph=True,
                                 backend='aot_eager')
        torch.testing.assert_close(compiled(x), act(fc(x)), rtol=1e-5, atol=1e-5)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = fc, act

        def forward(self, t):
            return fused.linear(t, self.fc, self.act)

    with torch.no_grad():
        graph = torch.export.export(Block(), (x, )).graph
    targets = {str(n.target) for n in graph.nodes if n.op == 'call_function'}
    assert any('linear' in t and 'mkldnn' not in t for t in targets), targets
