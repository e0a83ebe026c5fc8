# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""configs/mmpretrain: they build, take the official checkpoints strictly,
and the metafiles list them."""
import glob
import os

import pytest
import torch
import yaml
from mmengine.config import Config
from official_format import OFFICIAL, official_shapes, official_state_dict

import mmcls_plugin  # noqa: F401
from internimage import CheckpointError, convert_checkpoint
from internimage.convert import convert_classifier, read_class_map
from mmpretrain.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, 'configs/mmpretrain/*.py')))


def size_of(config):
    """'configs/mmpretrain/internimage-xl_...' -> 'xl'."""
    return os.path.basename(config).split('_')[0].split('-')[1]


def test_every_size_has_a_config():
    assert sorted(size_of(c) for c in CONFIGS) == sorted(OFFICIAL)


@pytest.mark.parametrize('config', CONFIGS)
def test_config_takes_the_official_checkpoint_strictly(config):
    cfg = Config.fromfile(os.path.join(ROOT, config))
    assert cfg.custom_imports['imports'] == ['mmcls_plugin']
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    # The names and shapes of the official classifier, converted.
    official = convert_classifier(
        official_shapes(num_classes=1000, **OFFICIAL[size_of(config)]))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == dict(official)


def test_model_index_lists_every_config():
    with open(os.path.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert 'configs/mmpretrain/metafile.yml' in index['Import']
    with open(os.path.join(ROOT, 'configs/mmpretrain/metafile.yml')) as f:
        meta = yaml.safe_load(f)
    listed = [m['Config'] for m in meta['Models']]
    assert sorted(listed) == CONFIGS
    for model in meta['Models']:
        assert model['Name'] == os.path.basename(model['Config'])[:-3]
        assert model['Metadata']['Parameters'] > 0
        assert model['Results'][0]['Metrics']['Top 1 Accuracy'] > 80


def test_22k_head_to_1k_classes(tmp_path):
    sd = official_state_dict(dtype=torch.float32, num_classes=12,
                             channels=8, depths=[1, 1, 1, 1],
                             groups=[1, 2, 4, 8])
    mapping = tmp_path / 'map.txt'
    mapping.write_text('11\n0\n5\n')
    rows = read_class_map(str(mapping))
    out = convert_checkpoint({'model': sd}, class_rows=rows)['state_dict']
    torch.testing.assert_close(out['head.fc.weight'],
                               sd['head.weight'][[11, 0, 5]])
    torch.testing.assert_close(out['head.fc.bias'], sd['head.bias'][[11, 0,
                                                                     5]])
    with pytest.raises(CheckpointError, match=r'indices \[12\] out of range'):
        convert_checkpoint({'model': sd}, class_rows=[12])
    mapping.write_text('1\nx\n')
    with pytest.raises(CheckpointError, match='expected integers'):
        read_class_map(str(mapping))
