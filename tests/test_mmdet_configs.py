# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""configs/mmdet: every config builds (on the meta device), has the paper's
size, is listed in the metafile, and takes converted official checkpoints
strictly; CBInternImage; the complexity hook; clear config errors."""
import glob
import os

import pytest
import torch
import yaml
from mmengine.config import Config
from official_det_format import (cascade_shapes, dino_shapes,
                                 mask_rcnn_shapes, official_checkpoint)
from official_format import TINY

import mmdet_plugin  # noqa: F401
from internimage import CheckpointError, convert_checkpoint
from internimage.cbnet import CBInternImage
from internimage.complexity import (build_from_config, count_params,
                                    model_complexity)
from mmdet.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs', 'mmdet')
CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(CONFIG_DIR, '*.py')))
TINY_COCO = 'mask-rcnn_internimage-t_fpn_tiny-coco'

#: Parameters of the whole detector, in millions, as the official README
#: (CB-H: 2.18B). The plain H has no official number.
PARAMS_M = {
    'mask-rcnn_internimage-t_fpn_1x_coco': 49,
    'mask-rcnn_internimage-t_fpn_ms-3x_coco': 49,
    'mask-rcnn_internimage-s_fpn_1x_coco': 69,
    'mask-rcnn_internimage-s_fpn_ms-3x_coco': 69,
    'mask-rcnn_internimage-b_fpn_1x_coco': 115,
    'mask-rcnn_internimage-b_fpn_ms-3x_coco': 115,
    'cascade-mask-rcnn_internimage-l_fpn_1x_coco': 277,
    'cascade-mask-rcnn_internimage-l_fpn_ms-3x_coco': 277,
    'cascade-mask-rcnn_internimage-xl_fpn_1x_coco': 387,
    'cascade-mask-rcnn_internimage-xl_fpn_ms-3x_coco': 387,
    'dino-4scale_internimage-t_layer-wise-lr_1x_coco': 49,
    'dino-4scale_internimage-l_layer-wise-lr_1x_coco': 241,
    'dino-4scale_internimage-l_0.1x-backbone-lr_1x_coco': 241,
    'dino-4scale_cb-internimage-h_o365-pre_coco': 2180,
}


def load(name):
    return Config.fromfile(os.path.join(CONFIG_DIR, name + '.py'))


def test_metafile_lists_every_coco_config():
    with open(os.path.join(ROOT, 'model-index.yml')) as f:
        assert 'configs/mmdet/metafile.yml' in yaml.safe_load(f)['Import']
    with open(os.path.join(CONFIG_DIR, 'metafile.yml')) as f:
        meta = yaml.safe_load(f)
    names = [m['Name'] for m in meta['Models']]
    assert sorted(names) == [c for c in CONFIGS if c != TINY_COCO]
    for model in meta['Models']:
        assert model['Config'] == f'configs/mmdet/{model["Name"]}.py'
        if model['Name'] in PARAMS_M:
            paper = model['Metadata']['Parameters'] / 1e6
            assert paper == pytest.approx(PARAMS_M[model['Name']], rel=0.01)
            assert model['Converted From']['Weights'].startswith(
                'https://huggingface.co/OpenGVLab/InternImage/')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_with_the_paper_size(name):
    cfg = load(name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports['imports'] == ['mmdet_plugin']
    model = build_from_config(cfg, 'meta')
    params = count_params(model) / 1e6
    if name in PARAMS_M:
        target = PARAMS_M[name]
        if target > 1000:  # 2.18B: three significant digits
            assert round(params / 10) * 10 == target, params
        else:
            assert round(params) == target, params
    # The recipe: AdamW with the official layer-wise decay (or the 0.1x
    # backbone variant), pretrained backbones from the official URLs.
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    if '0.1x-backbone-lr' in name:
        assert optim.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    else:
        assert optim.constructor == 'CustomLayerDecayOptimizerConstructor'
        assert optim.paramwise_cfg.depths == list(model.backbone.depths)
    init = cfg.model.backbone.get('init_cfg')
    if init and 'tiny-coco' not in name:
        assert init.checkpoint.startswith(
            'https://huggingface.co/OpenGVLab/InternImage/resolve/main/')


def test_s_and_b_differ_from_t_in_a_few_lines():
    for size in 'sb':
        with open(os.path.join(
                CONFIG_DIR, f'mask-rcnn_internimage-{size}_fpn_1x_coco.py')) \
                as f:
            code = [ln for ln in f if ln.strip() and not ln.startswith('#')]
        assert len(code) <= 10


def test_3x_configs_train_multi_scale_for_36_epochs():
    cfg = load('mask-rcnn_internimage-t_fpn_ms-3x_coco')
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [27, 33]
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert any(step.type == 'RandomChoice' for step in pipeline)
    cascade = load('cascade-mask-rcnn_internimage-l_fpn_ms-3x_coco')
    assert cascade.optim_wrapper.optimizer.lr == 2e-4
    assert cascade.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.9
    assert cascade.custom_hooks[0].type == 'EMAHook'


def _tiny(cfg, arch, cb=False):
    """``cfg`` with a tiny InternImage of the same flavour (names unchanged),
    so that official-format checkpoints are small."""
    backbone = cfg.model.backbone
    backbone.arch = dict(arch)
    for key in ('layer_scale', 'offset_scale', 'post_norm'):
        if key in arch:
            backbone[key] = arch[key]
    backbone.init_cfg = None
    channels = [arch['channels'] * 2**i for i in range(4)]
    if cfg.model.neck.type == 'FPN':
        cfg.model.neck.in_channels = channels
    else:
        cfg.model.neck.in_channels = channels[1:]
    return cfg


@pytest.mark.parametrize('name,shapes,flavour', [
    ('mask-rcnn_internimage-t_fpn_1x_coco', mask_rcnn_shapes, 't'),
    ('cascade-mask-rcnn_internimage-l_fpn_1x_coco', cascade_shapes, 's'),
    ('dino-4scale_internimage-t_layer-wise-lr_1x_coco', dino_shapes, 't'),
    ('dino-4scale_cb-internimage-h_o365-pre_coco', dino_shapes, 'h'),
])
def test_official_checkpoint_converts_and_loads_strictly(tmp_path, tool,
                                                         name, shapes,
                                                         flavour):
    arch = dict(TINY[flavour])
    if flavour == 't':
        arch['layer_scale'] = 1.0  # as the detection configs
    cfg = _tiny(load(name), arch)
    channels = [arch['channels'] * 2**i for i in range(4)]
    if shapes is dino_shapes:
        official = shapes(arch, channels[1:], cb='cb-' in name)
    else:
        official = shapes(arch, channels)
    src = tmp_path / 'official.pth'
    torch.save(official_checkpoint(official), src)
    dst = tmp_path / 'converted.pth'
    tool('convert_checkpoint').main([str(src), str(dst)])
    converted = torch.load(dst)
    assert converted['meta']['internimage_kind'] == 'detection'
    model = build_from_config(cfg, 'cpu')
    model.load_state_dict(converted['state_dict'], strict=True)
    # The values arrive where the names say.
    weights = official_checkpoint(official)['state_dict']  # same seed
    sd = model.state_dict()
    if shapes is dino_shapes:
        pairs = [('level_embed', 'bbox_head.transformer.level_embeds'),
                 ('decoder.layers.0.cross_attn.sampling_offsets.weight',
                  'bbox_head.transformer.decoder.layers.0.attentions.1.'
                  'sampling_offsets.weight'),
                 ('dn_query_generator.label_embedding.weight',
                  'bbox_head.label_embedding.weight')]
    else:
        pairs = [('rpn_head.rpn_cls.weight', 'rpn_head.rpn_cls.weight')]
    for ours, theirs in pairs:
        assert torch.equal(sd[ours], weights[theirs]), ours


def test_unknown_detection_keys_are_named():
    arch = dict(TINY['t'], layer_scale=1.0)
    sd = official_checkpoint(dino_shapes(arch, [16, 32, 64], layers=1))
    sd['state_dict']['bbox_head.transformer.mystery.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='mystery'):
        convert_checkpoint(sd)
    sd = official_checkpoint(mask_rcnn_shapes(arch, [8, 16, 32, 64]))
    sd['state_dict']['semantic_head.conv.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='semantic_head'):
        convert_checkpoint(sd)


def test_unknown_backbone_argument_is_named():
    cfg = load('mask-rcnn_internimage-t_fpn_1x_coco')
    cfg.model.backbone.depth_multiplier = 2
    with pytest.raises(TypeError, match='depth_multiplier'):
        build_from_config(cfg, 'meta')


def test_cb_internimage_fuses_the_assisting_backbone():
    torch.manual_seed(0)
    arch = dict(TINY['h'])
    cb = CBInternImage(arch=arch, out_indices=[(0, 1, 2, 3), (1, 2, 3)])
    cb.eval()  # no drop path
    assert not hasattr(cb.cb_modules[1], 'patch_embed')
    x = torch.randn(1, 3, 64, 96)
    outs = cb(x)
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 12), (1, 32, 4, 6),
                                              (1, 64, 2, 3)]
    # gamma = 0: the lead backbone is a plain InternImage on the stem.
    lead = cb.cb_modules[1]
    y = cb.cb_modules[0].patch_embed(x)
    ref = []
    for i, level in enumerate(lead.levels):
        y, f = level(y)
        if i in (1, 2, 3):
            ref.append(f.permute(0, 3, 1, 2))
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r)
    # gamma != 0: the assisting features change the result, and gradients
    # reach the fusion convs.
    with torch.no_grad():
        for i in range(4):
            getattr(lead, f'gamma{i}').fill_(0.5)
    outs2 = cb(x)
    assert not torch.allclose(outs2[-1], outs[-1])
    sum(o.sum() for o in outs2).backward()
    assert cb.cb_linears[0][1].weight.grad.abs().sum() > 0
    assert MODELS.get('CBInternImage') is CBInternImage
    with pytest.raises(ValueError, match='assisting backbone'):
        CBInternImage(arch=arch, out_indices=[(1, 2, 3), (1, 2, 3)])


def test_get_flops_counts_a_detector(tool, capsys):
    """tools/get_flops.py on a detection config (reduced input: the full
    800 x 1280 counts are the slow test below)."""
    tool('get_flops').main([
        os.path.join(CONFIG_DIR, 'mask-rcnn_internimage-t_fpn_1x_coco.py'),
        '--shape', '256', '384'
    ])
    out = capsys.readouterr().out
    assert 'Input shape: (1, 3, 256, 384)' in out
    assert 'Params: 48.' in out or 'Params: 49.' in out
    assert 'dcnv3_forward' in out and 'conv' in out


FLOPS_G = {
    'mask-rcnn_internimage-t_fpn_1x_coco': 270,
    'mask-rcnn_internimage-s_fpn_1x_coco': 340,
    'mask-rcnn_internimage-b_fpn_1x_coco': 501,
    'cascade-mask-rcnn_internimage-l_fpn_1x_coco': 1399,
    'cascade-mask-rcnn_internimage-xl_fpn_1x_coco': 1782,
}


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(FLOPS_G))
def test_flops_within_5_percent_of_the_paper(name):
    result = model_complexity(load(name))
    assert result['shape'] == (800, 1280)
    assert result['flops'] / 1e9 == pytest.approx(FLOPS_G[name], rel=0.05)
