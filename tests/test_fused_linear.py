# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""ops_dcnv3.modules.linear: the oneDNN route for CPU inference gives the
modules' answer, and is not taken where it would lose something (gradients,
hooks, tracing)."""
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


def test_training_keeps_the_modules_and_their_gradients():
    fc, act = _fc(), nn.GELU()
    x = torch.randn(3, 24, requires_grad=True)
    assert not fused.uses_onednn(x, fc, act)
    fused.linear(x, fc, act).sum().backward()
    assert fc.weight.grad is not None and fc.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


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
