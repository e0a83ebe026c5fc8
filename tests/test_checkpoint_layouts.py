# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The HuggingFace layout of the official classifiers (``model.`` prefix,
``layer_scale1/2`` for ``gamma1/2``, ``model.safetensors`` or
``pytorch_model.bin``, sharded or not, or their folder): it converts with
tools/convert_checkpoint.py into a checkpoint that loads strictly and gives
the official logits, and the backbone's init_cfg Pretrained loads it
strictly."""
import json
import re

import pytest
import torch
from mmengine.runner import load_checkpoint
from official_format import (TINY, TINY_CLIP, official_state_dict,
                             reference_features, reference_logits)
from safetensors.torch import save_file

import mmcls_plugin  # noqa: F401
from internimage import CheckpointError, InternImage
from mmpretrain.registry import MODELS

NUM_CLASSES = 10
#: Where each layout's weights are written, relative to the model folder.
LAYOUTS = ['model.safetensors', 'pytorch_model.bin', 'folder', 'sharded']


def official_classifier(flavour):
    cfg = dict(TINY[flavour], num_classes=NUM_CLASSES)
    if flavour == 'h':
        cfg.update(use_clip_projector=True, **TINY_CLIP)
    return official_state_dict(**cfg), cfg


def to_hf(state_dict):
    """What the official classification/huggingface/convert.py saves."""
    return {'model.' + re.sub(r'\.gamma([12])$', r'.layer_scale\1', k):
            v.contiguous() for k, v in state_dict.items()}


def write_hf(state_dict, folder, layout):
    """Write the HF-layout weights; returns the path to give the tools."""
    folder.mkdir()
    hf = to_hf(state_dict)
    if layout == 'pytorch_model.bin':
        torch.save(hf, folder / layout)
        return folder / layout
    if layout == 'sharded':
        names = list(hf)
        shards = {'model-00001-of-00002.safetensors': names[:len(names) // 2],
                  'model-00002-of-00002.safetensors': names[len(names) // 2:]}
        for shard, keys in shards.items():
            save_file({k: hf[k] for k in keys}, folder / shard)
        index = {'metadata': {}, 'weight_map': {
            k: shard for shard, keys in shards.items() for k in keys}}
        (folder / 'model.safetensors.index.json').write_text(
            json.dumps(index))
        return folder
    save_file(hf, folder / 'model.safetensors')
    return folder if layout == 'folder' else folder / 'model.safetensors'


def classifier(flavour):
    arch = dict(TINY[flavour])
    clip = flavour == 'h'
    head = dict(type='InternImageClsHead', num_classes=NUM_CLASSES,
                in_channels=arch['channels'] * 8)
    if clip:
        head.update(use_clip_projector=True, **TINY_CLIP)
    return MODELS.build(dict(
        type='ImageClassifier', head=head,
        backbone=dict(type='InternImage', arch=arch,
                      out_indices=(2, 3) if clip else (3, ))))


def test_hf_layout_names():
    """The renames this test relies on are the official converter's."""
    sd, _ = official_classifier('s')
    hf = to_hf(sd)
    assert 'model.levels.0.blocks.0.layer_scale1' in hf
    assert 'model.levels.0.blocks.0.gamma1' not in hf
    assert 'model.head.weight' in hf and len(hf) == len(sd)


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('flavour', ['s', 'h'])
def test_hf_checkpoint_converts_and_gives_the_official_logits(
        flavour, layout, tmp_path, tool, capsys):
    sd, cfg = official_classifier(flavour)
    src = write_hf(sd, tmp_path / 'hf', layout)
    dst = tmp_path / 'converted.pth'
    tool('convert_checkpoint').main([str(src), str(dst)])
    assert 'classification checkpoint' in capsys.readouterr().out
    model = classifier(flavour).double().eval()
    load_checkpoint(model, str(dst), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
    torch.testing.assert_close(logits, reference_logits(sd, x, **cfg),
                               rtol=1e-9, atol=1e-9)


def pretrained_backbone(checkpoint, strict=True):
    backbone = InternImage(arch=dict(TINY['s']), init_cfg=dict(
        type='Pretrained', checkpoint=str(checkpoint), strict=strict))
    backbone.init_weights()
    return backbone


@pytest.mark.parametrize('layout', ['model.safetensors', 'pytorch_model.bin'])
def test_backbone_init_cfg_loads_the_hf_layout_strictly(layout, tmp_path):
    sd, cfg = official_classifier('s')
    sd = {k: v.float() for k, v in sd.items()}
    torch.save({'model': sd}, tmp_path / 'official.pth')
    official = pretrained_backbone(tmp_path / 'official.pth').state_dict()
    backbone = pretrained_backbone(write_hf(sd, tmp_path / 'hf', layout))
    # the same tensors as from the official file, gamma1/gamma2 included
    assert backbone.state_dict().keys() == official.keys()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, official[key]), key
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = backbone.eval()(x)
    for ours, theirs in zip(feats, reference_features(sd, x, **cfg)):
        torch.testing.assert_close(ours, theirs.permute(0, 3, 1, 2),
                                   rtol=1e-5, atol=1e-5)
    # strict: a backbone tensor missing from the file is an error
    del sd['levels.1.blocks.0.gamma2']
    src = write_hf(sd, tmp_path / 'broken', layout)
    with pytest.raises(CheckpointError, match=r'strictly: missing '
                       r'levels\.1\.blocks\.0\.gamma2'):
        pretrained_backbone(src)
    pretrained_backbone(src, strict=False)  # logs the missing tensor


def test_unreadable_layouts_are_named(tmp_path, tool):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match='none of the HuggingFace weight '
                       r"files \['model.safetensors'"):
        tool('convert_checkpoint').main([str(tmp_path / 'empty'),
                                         str(tmp_path / 'out.pth')])
    with pytest.raises(SystemExit, match='checkpoint not found'):
        tool('convert_checkpoint').main([str(tmp_path / 'no.safetensors'),
                                         str(tmp_path / 'out.pth')])
