# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Every segmentation config builds, has the paper's size, is listed in the
metafile; FLOPs as the official table counts them."""
import os.path as osp

import pytest
import yaml
from mmseg_helpers import CONFIG_DIR, PAPER, ROOT, TINY_CONFIG, build, load

import mmseg_plugin  # noqa: F401
from internimage.complexity import count_params, model_complexity


def metafile():
    with open(osp.join(CONFIG_DIR, 'metafile.yml'), encoding='utf-8') as f:
        return yaml.safe_load(f)


def test_metafile_lists_every_config_with_the_paper_numbers():
    models = {osp.basename(m['Config']): m for m in metafile()['Models']}
    assert set(models) == set(PAPER)
    for name, (params, flops) in PAPER.items():
        meta = models[name]
        assert osp.isfile(osp.join(ROOT, meta['Config']))
        assert meta['Metadata']['Parameters'] == params
        assert meta['Metadata']['FLOPs'] == flops
        metrics = meta['Results'][0]['Metrics']
        assert set(metrics) == {'mIoU', 'mIoU(ms+flip)'}
        assert meta['Converted From']['Weights'].startswith('https://')
    with open(osp.join(ROOT, 'model-index.yml'), encoding='utf-8') as f:
        assert 'configs/mmseg/metafile.yml' in yaml.safe_load(f)['Import']


@pytest.mark.parametrize('name', sorted(PAPER))
def test_config_builds_with_the_paper_params(name):
    """On the meta device: nothing is allocated, even for H."""
    cfg = load(name)
    model = build(cfg, 'meta')
    assert type(model).__name__ == 'EncoderDecoder'
    assert model.backbone.init_cfg is None or \
        model.backbone.init_cfg['type'] == 'Pretrained'
    params = count_params(model)
    paper = PAPER[name][0]
    digits = 2 if paper >= 1e9 else 0  # as the official tables round
    unit = 1e9 if paper >= 1e9 else 1e6
    assert round(params / unit, digits) == round(paper / unit, digits), \
        f'{name}: {params / unit:.3f} vs paper {paper / unit}'


def test_tiny_config_builds_and_counts(tool, capsys):
    tool('get_flops').main([TINY_CONFIG])
    out = capsys.readouterr().out
    assert 'Input shape: (1, 3, 96, 128)' in out
    assert 'dcnv3_forward' in out


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(PAPER))
def test_flops_within_5_percent_of_the_official_table(name):
    cfg = load(name)
    result = model_complexity(cfg)
    assert tuple(result['shape']) == tuple(cfg.complexity_shape)
    paper = PAPER[name][1]
    assert abs(result['flops'] - paper) / paper < 0.05, \
        f'{name}: {result["flops"] / 1e9:.1f}G vs paper {paper / 1e9}G'
