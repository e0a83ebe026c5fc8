# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The layer-wise lr decay constructor against the official schemes."""
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from official_format import TINY, TINY_CLIP

import mmcls_plugin  # noqa: F401
import mmdet_plugin  # noqa: F401
import mmseg_plugin  # noqa: F401
from mmpretrain.registry import MODELS

LR, WD = 1e-3, 0.05


def classifier(flavour):
    arch = copy.deepcopy(TINY[flavour])
    if flavour == 't':
        arch['layer_scale'] = 1.0  # gamma1/gamma2 take no weight decay
    clip = flavour in ('h', 'g')
    head = dict(type='InternImageClsHead', num_classes=5,
                in_channels=arch['channels'] * 8, use_clip_projector=clip)
    if clip:
        head.update(TINY_CLIP)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='InternImage', arch=arch,
                      out_indices=(2, 3) if clip else (3, )),
        head=head))
    # A deformable-attention-like head parameter, for offset_lr_scale.
    model.head.sampling_offsets = torch.nn.Linear(4, 4)
    return model


# --- the official schemes, transcribed as references -----------------------
def official_detection_id(name, num_max_layer, depths):
    """Layer id of the official detection/segmentation constructor."""
    if name.startswith('backbone.patch_embed') or 'level_embeds' in name:
        return 0
    if name.startswith('backbone.levels'):
        parts = name.split('.')
        stage = int(parts[2])
        if parts[3] not in ['downsample', 'norm']:
            return int(parts[4]) + 1 + sum(depths[:stage])
        return 1 + sum(depths[:min(stage, 2) + 1])
    return num_max_layer - 1


def official_detection(name, param, rate, num_layers, depths, offset_scale):
    """(lr scale, weight decay) of the official detection constructor."""
    no_decay = (len(param.shape) == 1 or name.endswith('.bias')
                or 'relative_position' in name or 'norm' in name
                or 'sampling_offsets' in name)
    num_layers = num_layers + 2
    layer_id = official_detection_id(name, num_layers, depths)
    scale = rate**(num_layers - layer_id - 1)
    if 'sampling_offsets' in name or 'reference_points' in name:
        scale *= offset_scale
    return scale, 0. if no_decay else WD


def official_classification(name, param, rate, depths, dcn_lr_mul):
    """(lr scale, weight decay) of the official classification optimizer."""
    ratios, idx = {}, 0
    for level in reversed(range(4)):
        for j in range(depths[level]):
            ratios[f'levels.{level}.blocks.{depths[level] - j - 1}.'] = \
                rate**idx
            idx += 1
    ratios['patch_embed'] = ratios['levels.0.blocks.0.']
    for level in range(3):
        first = ratios[f'levels.{level + 1}.blocks.0.']
        ratios[f'levels.{level}.downsample'] = first
        ratios[f'levels.{level}.norm'] = first
    ratio = next((v for k, v in ratios.items() if k in name), None)
    scale = 1.0 if ratio is None else ratio
    if any(k in name for k in ('offset', 'attention_weights',
                               'center_feature_scale_proj', 'alpha_beta')):
        scale *= dcn_lr_mul
    no_decay = len(param.shape) == 1 or name.endswith('.bias')
    return scale, 0. if no_decay else WD


def built(model, library='mmpretrain', **paramwise_cfg):
    cfg = dict(constructor='CustomLayerDecayOptimizerConstructor',
               optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
               paramwise_cfg=paramwise_cfg)
    with DefaultScope.overwrite_default_scope(library):
        wrapper = build_optim_wrapper(model, cfg)
    found = {}
    for group in wrapper.optimizer.param_groups:
        for name in group['param_names']:
            assert name not in found
            found[name] = (group['lr'] / LR, group['weight_decay'],
                           group['layer_id'])
    return found


@pytest.mark.parametrize('flavour', ['t', 'h'])
@pytest.mark.parametrize('library', ['mmpretrain', 'mmdet', 'mmseg'])
def test_detection_style_is_the_official_scheme(flavour, library):
    model = classifier(flavour)
    depths = TINY[flavour]['depths']
    found = built(model, library, num_layers=sum(depths),
                  layer_decay_rate=0.9, depths=depths, offset_lr_scale=0.01)
    assert found.keys() == {n for n, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        scale, wd = official_detection(name, param, 0.9, sum(depths), depths,
                                       0.01)
        assert found[name][:2] == (pytest.approx(scale), wd), name


@pytest.mark.parametrize('flavour', ['t', 'h'])
def test_classification_style_is_the_official_scheme(flavour):
    model = classifier(flavour)
    depths = TINY[flavour]['depths']
    found = built(model, decay_style='classification', layer_decay_rate=0.9,
                  offset_lr_scale=0.1)
    for name, param in model.named_parameters():
        scale, wd = official_classification(name, param, 0.9, depths, 0.1)
        assert found[name][:2] == (pytest.approx(scale), wd), name


def test_layer_ids_spelled_out():
    """depths [1, 1, 3, 1]: 6 blocks; ids as in the class docstring."""
    model = classifier('h')
    det = built(model, layer_decay_rate=0.5)
    cls = built(model, decay_style='classification', layer_decay_rate=0.5)
    cases = {  # name: (detection id, classification id)
        'backbone.patch_embed.conv1.weight': (0, 1),
        'backbone.levels.0.blocks.0.dcn.offset.weight': (1, 1),
        'backbone.levels.0.downsample.conv.weight': (2, 2),
        'backbone.levels.2.blocks.2.mlp.fc1.weight': (5, 5),
        'backbone.levels.2.post_norms.1.0.weight': (4, 6),
        'backbone.levels.2.norm.0.weight': (6, 6),
        'backbone.levels.3.blocks.0.norm1.0.weight': (6, 6),
        'backbone.levels.3.norm.0.weight': (6, 6),
        'head.fc.weight': (7, 6),
    }
    for name, (det_id, cls_id) in cases.items():
        assert (det[name][2], cls[name][2]) == (det_id, cls_id), name
        assert det[name][0] == pytest.approx(0.5**(7 - det_id)), name
        assert cls[name][0] == pytest.approx(0.5**(6 - cls_id)), name
    # No weight decay on norms, biases, layer scales, q/k/v biases.
    gamma = 'backbone.levels.0.blocks.0.gamma1'
    assert built(classifier('t'))[gamma][1] == 0.
    for name in ('backbone.levels.0.blocks.0.norm1.0.weight',
                 'backbone.levels.0.blocks.0.dcn.offset.bias',
                 'backbone.levels.0.blocks.0.dcn.'
                 'center_feature_scale_proj_bias',
                 'head.clip_projector.cross_dcn.q_bias'):
        assert det[name][1] == cls[name][1] == 0., name
    assert det['backbone.levels.0.blocks.0.dcn.offset.weight'][1] == WD
    assert det['head.sampling_offsets.weight'][1] == 0.  # 'detection' only
    assert cls['head.sampling_offsets.weight'][1] == WD


def test_dino_level_embed_gets_id_0():
    """The official DINO's ``level_embeds`` and mmdet 3 DINO's
    ``level_embed`` both get id 0 (the official rule, kept for mmdet 3)."""
    from internimage import InternImageLayerDecayOptimWrapperConstructor
    layer_id = InternImageLayerDecayOptimWrapperConstructor.detection_layer_id
    for name in ('level_embed', 'bbox_head.transformer.level_embeds'):
        assert layer_id(name, [1, 1, 3, 1], 7) == 0, name
    assert layer_id('query_embedding.weight', [1, 1, 3, 1], 7) == 7


def test_defaults_and_frozen_parameters():
    model = classifier('t')
    model.backbone.patch_embed.requires_grad_(False)
    found = built(model)  # layer_decay_rate 1: only the weight-decay rules
    assert not any(n.startswith('backbone.patch_embed') for n in found)
    assert {lr for lr, _, _ in found.values()} == {1.0}


@pytest.mark.parametrize('paramwise_cfg, match', [
    (dict(custom_keys={'head': dict(lr_mult=10.)}), r"unknown .*custom_keys"),
    (dict(decay_style='swin'), 'decay_style must be one of'),
    (dict(decay_style='classification', num_layers=6),
     "num_layers belongs to decay_style='detection'"),
    (dict(depths=[1, 1, 2, 2]), r'depths=\[1, 1, 2, 2\] but the backbone has'),
])
def test_bad_paramwise_cfg(paramwise_cfg, match):
    with pytest.raises(ValueError, match=match):
        built(classifier('t'), **paramwise_cfg)


def test_cb_internimage_parameters_get_the_full_lr_as_official():
    """CB-InternImage's parameters (backbone.cb_modules.*,
    backbone.cb_linears.*) match neither backbone.patch_embed nor
    backbone.levels: the official constructor gives them the top layer id
    (lr scale 1), and so does ours, with a warning."""
    import logging

    from internimage.cbnet import CBInternImage
    arch = dict(TINY['h'])
    depths = arch['depths']
    model = torch.nn.Module()
    model.backbone = CBInternImage(arch=arch)
    model.head = torch.nn.Linear(8, 2)
    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        found = built(model, 'mmdet', num_layers=sum(depths),
                      layer_decay_rate=0.9, depths=depths)
    finally:
        logger.removeHandler(handler)
    max_id = sum(depths) + 1
    names = {n for n, _ in model.named_parameters()}
    assert found.keys() == names
    for name, param in model.named_parameters():
        scale, wd = official_detection(name, param, 0.9, sum(depths), depths,
                                       1.0)
        assert found[name][:2] == (pytest.approx(scale), wd), name
        if name.startswith('backbone.'):
            assert found[name][2] == max_id and found[name][0] == 1.0, name
    assert any('backbone.cb_linears, backbone.cb_modules' in r.getMessage()
               and 'get the full lr' in r.getMessage()
               for r in records)
