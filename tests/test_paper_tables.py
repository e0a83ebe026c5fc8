# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Params and FLOPs of every size against the paper; the tools that print
them."""
import copy
import math
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from official_format import OFFICIAL, TINY, TINY_CLIP, official_state_dict
from PIL import Image

import mmcls_plugin  # noqa: F401
from internimage.complexity import count_flops, model_complexity
from mmpretrain.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    't': 'internimage-t_8xb128_in1k-224px',
    's': 'internimage-s_8xb128_in1k-224px',
    'b': 'internimage-b_8xb128_in1k-224px',
    'l': 'internimage-l_in21k-pre_8xb64_in1k-384px',
    'xl': 'internimage-xl_in21k-pre_8xb64_in1k-384px',
    'h': 'internimage-h_in21k-pre_8xb16_in1k-640px',
    'g': 'internimage-g_in21k-pre_8xb16_in1k-512px',
}
#: Parameters of the official classifiers (the sum of the official names'
#: shapes, see test_configs) and the paper's figures.
PARAMS = {
    't': (29_918_424, '29.9M'),
    's': (50_079_880, '50.1M'),
    'b': (97_461_832, '97.5M'),
    'l': (223_334_810, '223.3M'),
    'xl': (334_819_780, '334.8M'),
    'h': (1_089_636_760, '1.08B'),
    'g': (3_076_373_352, '3.0B'),
}
#: The paper's FLOPs (G) at the configs' resolutions.
FLOPS = {'t': 5, 's': 8, 'b': 16, 'l': 108, 'xl': 163, 'h': 1478, 'g': 2700}


def config(size):
    return Config.fromfile(
        os.path.join(ROOT, 'configs/mmpretrain', CONFIGS[size] + '.py'))


def test_official_parameter_counts():
    from official_format import official_shapes
    for size, (count, _) in PARAMS.items():
        shapes = official_shapes(num_classes=1000, **OFFICIAL[size])
        assert sum(math.prod(s) for n, s in shapes.items()
                   if not n.endswith(('running_mean', 'running_var',
                                      'num_batches_tracked'))) == count


@pytest.mark.parametrize('size', sorted(CONFIGS))
def test_params_of_every_size_equal_the_targets(size):
    with torch.device('meta'):
        model = MODELS.build(config(size).model)
    count = sum(p.numel() for p in model.parameters())
    assert count == PARAMS[size][0]
    paper = PARAMS[size][1]
    value, unit = float(paper[:-1]), {'M': 1e6, 'B': 1e9}[paper[-1]]
    decimals = len(paper[:-1].split('.')[1])
    if size in ('h', 'g'):
        # The paper truncates these (1.0896B -> 1.08B, 3.076B -> 3.0B).
        assert math.floor(count / unit * 10**decimals) / 10**decimals == \
            value
    else:
        assert round(count / unit, decimals) == value


def test_flops_by_parts_equal_the_whole_model():
    for flavour, size in (('t', 64), ('h', 64)):
        arch = copy.deepcopy(TINY[flavour])
        clip = flavour == 'h'
        cfg = dict(type='ImageClassifier',
                   backbone=dict(type='InternImage', arch=arch,
                                 out_indices=(2, 3) if clip else (3, )),
                   head=dict(type='InternImageClsHead', num_classes=7,
                             in_channels=64, use_clip_projector=clip,
                             **(TINY_CLIP if clip else {})))
        x = torch.randn(1, 3, size, size)
        whole = count_flops(MODELS.build(cfg), (x, ), max_params=None)
        with torch.device('meta'):
            model = MODELS.build(cfg)
        for max_params in (0, 2000, 10**9):
            assert count_flops(model, (x, ), max_params) == whole
        # The DCNv3 core: 5 * H * W * 9 * C per block, as the official code.
        depths = arch['depths']
        core = sum(depths[i] * 5 * (size // 4 // 2**i)**2 * 9 * 8 * 2**i
                   for i in range(4))
        assert whole['dcnv3_forward'] == core


@pytest.mark.parametrize('size', ['t', 's', 'b', 'l', 'xl'])
def test_flops_within_5_percent_of_the_paper(size):
    result = model_complexity(config(size))
    assert abs(result['flops'] / 1e9 - FLOPS[size]) / FLOPS[size] < 0.05


@pytest.mark.slow  # ~10 s each but ~3.5 GB of memory on a shared machine
@pytest.mark.parametrize('size', ['h', 'g'])
def test_flops_within_5_percent_of_the_paper_h_g(size):
    result = model_complexity(config(size))
    assert abs(result['flops'] / 1e9 - FLOPS[size]) / FLOPS[size] < 0.05


def test_get_flops_cli(tool, capsys):
    tool('get_flops').main([
        os.path.join(ROOT,
                     'configs/mmpretrain/internimage-t_8xb128_in1k-224px.py'),
        '--shape', '256'
    ])
    out = capsys.readouterr().out
    assert 'Input shape: (1, 3, 256, 256)' in out
    assert 'Params: 29.92 M (29918424)' in out
    assert 'dcnv3_forward' in out


def test_paper_tables_cli_with_a_checkpoint(tmp_path, tool, capsys):
    """Counts beside the paper's, and an official checkpoint evaluated on a
    tiny ImageNet-format validation set."""
    ckpts = tmp_path / 'ckpts'
    ckpts.mkdir()
    sd = official_state_dict(dtype=torch.float32, num_classes=1000,
                             **OFFICIAL['t'])
    torch.save({'model': sd}, ckpts / 'internimage_t_1k_224.pth')
    data = tmp_path / 'imagenet'
    (data / 'val').mkdir(parents=True)
    (data / 'meta').mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(2):
        img = rng.integers(0, 255, (240, 250, 3), dtype=np.uint8)
        Image.fromarray(img).save(data / 'val' / f'{i}.JPEG')
        lines.append(f'{i}.JPEG {i}')
    (data / 'meta' / 'val.txt').write_text('\n'.join(lines) + '\n')
    tool('paper_tables').main([
        '--models', CONFIGS['t'], '--checkpoint-dir',
        str(ckpts), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        f'test_dataloader.dataset.data_root={data}',
        'test_dataloader.batch_size=2', 'test_dataloader.num_workers=0'
    ])
    out = capsys.readouterr().out
    row = [line for line in out.splitlines()
           if line.startswith(f'| {CONFIGS["t"]}')]
    assert len(row) == 1, out
    cells = [c.strip() for c in row[0].strip('|').split('|')]
    assert cells[1:8] == ['224x224', '29.92', '29.90', '+0.02', '4.92',
                          '5.0', '-1.5%']
    assert cells[9] == '83.5' and 0 <= float(cells[10]) <= 100


def test_ignored_operators_are_not_counted():
    """What the segmentor count relies on to leave out what the official
    counter cannot see (mmengine's own set_op_handle(op=None) would still
    count an operator it has a handle for)."""
    from torch import nn

    from internimage.complexity import count_flops

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return torch.einsum('bi,bj->bij', self.fc(x), x)

    x = torch.randn(2, 8)
    full = count_flops(Outer(), (x, ), max_params=None)
    assert full['einsum'] > 0 and full['linear'] > 0
    for max_params in (None, 1):  # traced whole, and by parts
        part = count_flops(Outer(), (x, ), max_params=max_params,
                           ignored_ops=('aten::einsum', ))
        assert part['total'] == full['total'] - full['einsum']
