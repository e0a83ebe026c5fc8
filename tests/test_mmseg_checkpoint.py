# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Official segmentation checkpoints (mmseg 0.x layout) convert into
checkpoints that the mmseg 1.x models of our configs load strictly."""
import pytest
import torch
from mmengine.runner import load_checkpoint
from mmseg_helpers import build, load, set_classes, shrink
from official_format import TINY
from official_seg_format import (mask2former_shapes, random_state_dict,
                                 upernet_shapes)

import mmseg_plugin  # noqa: F401
from internimage import CheckpointError, convert_checkpoint

#: Official T segmentation backbone: layer scale 1.0 (gamma1/gamma2).
T_SEG = dict(TINY['t'], layer_scale=1.0)
NUM_CLASSES = 7


def upernet():
    cfg = shrink(load('upernet_internimage-t_8xb2-160k_ade20k-512x512.py'),
                 arch=T_SEG)
    official = upernet_shapes(T_SEG, NUM_CLASSES, channels=16,
                              aux_channels=8)
    return set_classes(cfg, NUM_CLASSES), official


def mask2former():
    cfg = shrink(load(
        'mask2former_internimage-h_16xb1-80k_cocostuff2ade20k-896x896.py'),
        arch=TINY['h'])
    official = mask2former_shapes(TINY['h'], NUM_CLASSES, feat=32, heads=4,
                                  ffn=64, queries=10, enc_layers=2,
                                  dec_layers=2)
    return set_classes(cfg, NUM_CLASSES), official


@pytest.mark.parametrize('make', [upernet, mask2former])
def test_official_segmentor_converts_and_loads_strictly(make, tmp_path,
                                                        tool):
    cfg, shapes = make()
    official = random_state_dict(shapes)
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'meta': {'CLASSES': ['c'] * NUM_CLASSES, 'iter': 160000},
                'state_dict': official}, src)
    tool('convert_checkpoint').main([str(src), str(dst)])
    model = build(cfg)
    load_checkpoint(model, str(dst), strict=True, map_location='cpu')
    state = model.state_dict()
    assert len(state) == len(official)
    # every official tensor landed in the module the mapping says
    converted = torch.load(dst)['state_dict']
    for key, value in converted.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    if make is mask2former:
        layer = 'decode_head.transformer_decoder.layers.1'
        torch.testing.assert_close(
            state[f'{layer}.cross_attn.attn.in_proj_weight'],
            official[f'{layer}.attentions.0.attn.in_proj_weight'])
        torch.testing.assert_close(
            state[f'{layer}.self_attn.attn.in_proj_weight'],
            official[f'{layer}.attentions.1.attn.in_proj_weight'])
        enc = 'decode_head.pixel_decoder.encoder.layers.0'
        torch.testing.assert_close(
            state[f'{enc}.self_attn.sampling_offsets.weight'],
            official[f'{enc}.attentions.0.sampling_offsets.weight'])
        torch.testing.assert_close(
            state[f'{enc}.ffn.layers.0.0.weight'],
            official[f'{enc}.ffns.0.layers.0.0.weight'])
    # the converted model runs
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), mode='predict')
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_conversion_errors():
    _, shapes = mask2former()
    official = random_state_dict(shapes)
    converted = convert_checkpoint({'state_dict': official})['state_dict']
    with pytest.raises(CheckpointError, match='already in mmdet 3'):
        convert_checkpoint({'state_dict': converted})
    official['auxiliary_head.conv_seg.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError,
                       match=r'\(Mask2Former\).*auxiliary_head.conv_seg'):
        convert_checkpoint({'state_dict': official})
    _, shapes = upernet()
    official = random_state_dict(shapes)
    official['backbone.extra.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='backbone.extra.weight'):
        convert_checkpoint({'state_dict': official})
