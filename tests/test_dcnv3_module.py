# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The DCNv3 module: official parameter names and import paths, kernel vs
reference core, torch.compile."""
import pytest
import torch

from ops_dcnv3 import KERNEL_DEVICES
from ops_dcnv3.functions import DCNv3Function, dcnv3_core_pytorch
from ops_dcnv3.modules import DCNv3, DCNv3_pytorch


def official_state_dict(channels, group, kernel_size=3, dw_kernel_size=None,
                        remove_center=False, center_feature_scale=False,
                        seed=0):
    """Random weights under the names and shapes of the official module
    (written from the released checkpoints' layout, not from our module)."""
    gen = torch.Generator().manual_seed(seed)
    dw = dw_kernel_size or kernel_size
    points = kernel_size * kernel_size - int(remove_center)
    shapes = {
        'dw_conv.0.weight': (channels, 1, dw, dw),
        'dw_conv.0.bias': (channels,),
        'dw_conv.1.1.weight': (channels,),
        'dw_conv.1.1.bias': (channels,),
        'offset.weight': (group * points * 2, channels),
        'offset.bias': (group * points * 2,),
        'mask.weight': (group * points, channels),
        'mask.bias': (group * points,),
        'input_proj.weight': (channels, channels),
        'input_proj.bias': (channels,),
        'output_proj.weight': (channels, channels),
        'output_proj.bias': (channels,),
    }
    if center_feature_scale:
        shapes['center_feature_scale_proj_weight'] = (group, channels)
        shapes['center_feature_scale_proj_bias'] = (group,)
    # Offsets of a few pixels, so that the deformable sampling is exercised.
    return {k: torch.randn(*v, generator=gen) * (0.3 if k.startswith('offset') else 0.5)
            for k, v in shapes.items()}


CONFIGS = [
    dict(channels=64, group=4),
    dict(channels=48, group=3, kernel_size=3, dw_kernel_size=5,
         center_feature_scale=True),
    dict(channels=40, group=5, remove_center=True),
]


@pytest.mark.parametrize('cfg', CONFIGS, ids=['T-like', 'H-like', 'remove_center'])
def test_official_state_dict_loads_strictly_and_cores_agree(cfg):
    state = official_state_dict(**cfg)
    x = torch.randn(2, 9, 11, cfg['channels'])
    outputs = []
    for cls in (DCNv3, DCNv3_pytorch):
        module = cls(**cfg).eval()
        module.load_state_dict(state, strict=True)
        with torch.no_grad():
            outputs.append(module(x))
    assert outputs[0].shape == x.shape
    # fp32; the op alone is held to 1e-5, the projections amplify a little.
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    # The sampling really is deformable: zero offsets give another answer.
    module = DCNv3_pytorch(**cfg).eval()
    module.load_state_dict({**state, 'offset.weight': state['offset.weight'] * 0,
                            'offset.bias': state['offset.bias'] * 0})
    with torch.no_grad():
        assert not torch.allclose(module(x), outputs[1], atol=1e-3)


@pytest.mark.parametrize('cls', [DCNv3, DCNv3_pytorch])
@pytest.mark.parametrize('cfg', CONFIGS, ids=['T-like', 'H-like', 'remove_center'])
def test_fused_mask_softmax_equals_the_official_computation(cfg, cls):
    """The module passes mask logits to the op (mask_softmax=True); its
    output equals the official softmax-then-core computation in fp64."""
    from official_format import _dcn
    state = {k: v.double() for k, v in official_state_dict(**cfg).items()}
    module = cls(**cfg).double().eval()
    module.load_state_dict(state, strict=True)
    x = torch.randn(2, 9, 11, cfg['channels'], dtype=torch.float64)
    with torch.no_grad():
        expected = _dcn({'m.' + k: v for k, v in state.items()}, 'm', x,
                        cfg['group'], cfg)
        torch.testing.assert_close(module(x), expected, rtol=1e-10, atol=1e-10)


def test_official_function_signatures():
    """DCNv3Function.apply and dcnv3_core_pytorch keep the official order."""
    x = torch.randn(1, 5, 5, 8, dtype=torch.float64)
    off = torch.randn(1, 5, 5, 2 * 9 * 2, dtype=torch.float64)
    mask = torch.rand(1, 5, 5, 2 * 9, dtype=torch.float64)
    a = DCNv3Function.apply(x, off, mask, 3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 1.0, 256, 0)
    b = dcnv3_core_pytorch(x, off, mask, 3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 1.0, 0)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_module_rejects_bad_configuration():
    with pytest.raises(ValueError, match='divisible by group'):
        DCNv3(channels=30, group=4)
    with pytest.raises(ValueError, match='remove_center'):
        DCNv3(channels=32, group=4, kernel_size=4, remove_center=True)
    with pytest.raises(ValueError, match="norm_layer"):
        DCNv3(channels=32, group=4, norm_layer='GN')
    with pytest.raises(ValueError, match='4-D'):
        DCNv3(channels=32, group=4)(torch.randn(3, 5, 32))
    with pytest.raises(ValueError, match=r'\(N, H, W, 32\)'):
        DCNv3(channels=32, group=4)(torch.randn(1, 3, 5, 16))


@pytest.mark.skipif('cpu' not in KERNEL_DEVICES, reason='CPU kernel not built')
def test_torch_compile_fullgraph_matches_eager():
    """torch.compile sees the op through its fake kernel and autograd
    registration: no graph break (fullgraph=True), same values and grads."""
    torch._dynamo.reset()
    cfg = CONFIGS[1]
    module = DCNv3(**cfg)
    module.load_state_dict(official_state_dict(**cfg))
    # fp64, so that inductor's fusions cannot hide a real difference.
    module = module.double()
    x = torch.randn(2, 6, 7, cfg['channels'], dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, backend='inductor')
    out = compiled(x)
    expected = module(x)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    grad = torch.autograd.grad(out.square().sum(), x)[0]
    expected_grad = torch.autograd.grad(expected.square().sum(), x)[0]
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)
