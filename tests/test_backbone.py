# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The InternImage backbone: official checkpoints, outputs, arguments."""
import copy

import pytest
import torch
from official_format import (OFFICIAL, TINY, official_shapes,
                             official_state_dict, reference_features)

from internimage import CheckpointError, InternImage, load_backbone_weights

FLAVOURS = sorted(TINY)


def tiny(flavour='t', **kwargs):
    """A tiny InternImage of an official flavour (keys of TINY[flavour])."""
    return InternImage(arch=copy.deepcopy(TINY[flavour]), **kwargs)


def images(n=2, size=32, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen, dtype=dtype)


@pytest.mark.parametrize('flavour', FLAVOURS)
@pytest.mark.parametrize('norm_layer', ['LN', 'BN'])
def test_official_backbone_loads_strictly_and_matches(flavour, norm_layer):
    cfg = dict(TINY[flavour], norm_layer=norm_layer)
    sd = official_state_dict(**cfg)
    model = tiny(flavour, norm_layer=norm_layer).double().eval()
    model.load_state_dict(sd, strict=True)
    x = images()
    with torch.no_grad():
        outs = model(x)
        ref = reference_features(sd, x, **cfg)
    assert len(outs) == 4
    for out, want in zip(outs, ref):
        torch.testing.assert_close(out, want.permute(0, 3, 1, 2), rtol=1e-9,
                                   atol=1e-9)


def test_remove_center_and_pure_pytorch_core():
    cfg = dict(TINY['t'], remove_center=True)
    sd = official_state_dict(**cfg)
    x = images()
    ref = reference_features(sd, x, **cfg)
    for core_op in ('DCNv3', 'DCNv3_pytorch'):
        model = tiny('t', remove_center=True, core_op=core_op).double().eval()
        model.load_state_dict(sd, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(model(x)[-1],
                                       ref[-1].permute(0, 3, 1, 2))


@pytest.mark.parametrize('arch', sorted(OFFICIAL))
def test_arch_settings_are_the_official_configs(arch):
    """Every size as the official yaml configs (meta device)."""
    with torch.device('meta'):
        model = InternImage(arch=arch)
    official = {k: v for k, v in OFFICIAL[arch].items()
                if k != 'use_clip_projector'}
    assert {k: model.arch_cfg[k] for k in official} == official
    defaults = {k: v for k, v in InternImage.arch_defaults.items()
                if k not in official}
    assert {k: model.arch_cfg[k] for k in defaults} == defaults
    want = official_shapes(**official)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want


def test_explicit_arguments_override_arch():
    model = InternImage(arch=dict(TINY['t']), layer_scale=1.0, channels=16)
    block = model.levels[0].blocks[0]
    assert model.channels == 16 and torch.all(block.gamma1 == 1.0)
    # The official det/seg configs spell every value out without arch.
    official = InternImage(channels=8, depths=[1, 1, 1, 1],
                           groups=[1, 2, 4, 8], post_norm=True,
                           layer_scale=1e-5)
    assert official.depths == [1, 1, 1, 1] and official.post_norm


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='m'), "unknown arch 'm'"),
    (dict(arch=dict(channels=8, depths=[1, 1])), r"missing \['groups'\]"),
    (dict(arch=dict(channels=8, depths=[1], groups=[1], foo=1)),
     r"unknown \['foo'\]"),
    (dict(arch=dict(TINY['t'], groups=[2, 2, 4])),
     'len\\(depths\\)=4 and len\\(groups\\)=3'),
    (dict(arch=dict(TINY['t'], groups=[3, 2, 4, 4])),
     'level 0 has 8 channels .* not divisible by groups\\[0\\]=3'),
    (dict(arch=dict(TINY['t']), channels=7), 'channels must be an even int'),
    (dict(arch=dict(TINY['h'], level2_post_norm_block_ids=[3])),
     r'block_ids \[3\] are not blocks of level 2 \(depth 3\)'),
    (dict(arch=dict(TINY['h'], level2_post_norm_block_ids=None)),
     'non-empty level2_post_norm_block_ids'),
    (dict(arch=dict(TINY['t']), core_op='DCNv2'), "core_op must be one of"),
    (dict(arch=dict(TINY['t']), out_indices=(4, )), 'out_indices'),
    (dict(arch=dict(TINY['t']), out_indices=(2, 1)), 'increasing'),
    (dict(arch=dict(TINY['t']), frozen_stages=5), 'frozen_stages'),
    (dict(arch=dict(TINY['t']), drop_path_type='cosine'), 'drop_path_type'),
    (dict(arch=dict(TINY['t']), norm_layer='GN'), 'norm_layer'),
    (dict(arch=dict(TINY['t']), dw_kernel_size=4), 'dw_kernel_size'),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InternImage(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r'expected images \(N, 3, H, W\)'):
        tiny()(torch.zeros(1, 1, 32, 32))


def test_out_indices():
    model = tiny(out_indices=(1, -1)).eval()
    outs = model(images(1, 64, dtype=torch.float32))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 8), (1, 64, 2, 2)]
    assert model.out_indices == (1, 3) and model.out_channels == [16, 64]
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.parametrize('frozen_stages', [-1, 0, 2])
def test_frozen_stages(frozen_stages):
    model = tiny(frozen_stages=frozen_stages, drop_rate=0.1)
    model.train()
    frozen = ([model.patch_embed] if frozen_stages >= 0 else []) + list(
        model.levels[:max(frozen_stages, 0)])
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen_ids)
    for m in frozen:
        assert all(not sub.training for sub in m.modules())
    assert model.levels[-1].training
    # Frozen parts get no gradient; the rest does.
    sum(o.sum() for o in model(images(1, dtype=torch.float32))).backward()
    for p in model.parameters():
        assert (p.grad is None) == (id(p) in frozen_ids)


def test_norm_eval_keeps_batchnorm_in_eval():
    model = tiny(norm_layer='BN', norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.levels[0].blocks[0].training
    model = tiny(norm_layer='BN').train()
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize('flavour', ['t', 'h'])
def test_with_cp_gives_the_same_gradients(flavour):
    x = images(dtype=torch.float32)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = tiny(flavour, with_cp=with_cp, drop_path_rate=0.3).train()
        torch.manual_seed(1)  # same drop-path draws in both runs
        outs = model(x)
        sum((o**2).mean() for o in outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name],
                                   msg=lambda m: f'{name}: {m}')


def test_drop_path_rates():
    model = tiny(drop_path_rate=0.3)
    rates = [blk.drop_path.drop_prob for lv in model.levels
             for blk in lv.blocks if hasattr(blk.drop_path, 'drop_prob')]
    expected = torch.linspace(0, 0.3, 5).tolist()[1:]
    assert rates == pytest.approx(expected)
    model = tiny(drop_path_rate=0.3, drop_path_type='uniform')
    assert all(blk.drop_path.drop_prob == 0.3 for lv in model.levels
               for blk in lv.blocks)


def test_official_initialisation():
    model = tiny()
    dcn = model.levels[0].blocks[0].dcn
    assert torch.all(dcn.offset.weight == 0)
    assert torch.all(dcn.mask.weight == 0)
    assert dcn.input_proj.weight.std() > 0.05  # xavier, not trunc_normal .02
    fc1 = model.levels[0].blocks[0].mlp.fc1
    assert fc1.weight.std() < 0.03 and torch.all(fc1.bias == 0)


# ------------------------------------------------ official checkpoints
def save_official(path, sd):
    """The official ``save_checkpoint`` layout."""
    torch.save({'model': sd, 'epoch': 299, 'max_accuracy': 83.5}, path)
    return str(path)


def test_pretrained_init_cfg_loads_an_official_classifier(tmp_path):
    cfg = dict(TINY['s'])
    sd = official_state_dict(dtype=torch.float32, num_classes=10, **cfg)
    path = save_official(tmp_path / 'cls.pth', sd)
    model = tiny('s', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    own = model.state_dict()
    for k, v in own.items():
        torch.testing.assert_close(v, sd[k], msg=k)
    report = load_backbone_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    assert report.ignored_head == ['conv_head.0.weight'] + [
        f'conv_head.1.0.{n}' for n in ('weight', 'bias', 'running_mean',
                                       'running_var', 'num_batches_tracked')
    ] + ['head.weight', 'head.bias']


def test_pretrained_reports_missing_and_unexpected_keys(tmp_path, caplog):
    # The official T detection configs add layer_scale=1.0 to a T classifier
    # trained without: gamma1/gamma2 are missing and keep their init.
    sd = official_state_dict(dtype=torch.float32, **TINY['t'])
    sd['levels.0.extra.weight'] = torch.zeros(3)
    path = save_official(tmp_path / 't.pth', sd)
    model = tiny('t', layer_scale=1.0)
    report = load_backbone_weights(model, path)
    assert sorted(report.missing) == sorted(
        f'levels.{i}.blocks.{j}.gamma{g}' for i, d in enumerate([1, 1, 2, 1])
        for j in range(d) for g in (1, 2))
    assert report.unexpected == ['levels.0.extra.weight']
    assert torch.all(model.levels[0].blocks[0].gamma1 == 1.0)


def test_pretrained_accepts_openmmlab_checkpoints(tmp_path):
    sd = official_state_dict(dtype=torch.float32, **TINY['t'])
    detector = {f'backbone.{k}': v for k, v in sd.items()}
    detector['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'det.pth'
    torch.save({'state_dict': detector, 'meta': {}}, path)
    model = tiny('t')
    report = load_backbone_weights(model, str(path))
    assert report.missing == [] and report.ignored_other == [
        'neck.lateral_convs.0.conv.weight'
    ]
    torch.testing.assert_close(model.patch_embed.conv1.weight,
                               sd['patch_embed.conv1.weight'])


def test_pretrained_errors_are_clear(tmp_path):
    sd = official_state_dict(dtype=torch.float32, **TINY['t'])
    path = save_official(tmp_path / 't.pth', sd)
    with pytest.raises(CheckpointError, match='another shape .* arch right'):
        load_backbone_weights(tiny('t', channels=16), path)
    other = tmp_path / 'other.pth'
    torch.save({'model': {'fc.weight': torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match='no key matches'):
        load_backbone_weights(tiny('t'), str(other))
    torch.save({'epoch': 3}, other)
    with pytest.raises(CheckpointError, match='no state dict found'):
        load_backbone_weights(tiny('t'), str(other))
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(tiny('t'), str(tmp_path / 'absent.pth'))
    bad = tiny('t', init_cfg=dict(type='Pretrained', checkpoint=path,
                                  revise_keys=[]))  # mmengine's, not ours
    with pytest.raises(ValueError, match='init_cfg Pretrained takes'):
        bad.init_weights()
