# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""mmpretrain classification: registration, head, official checkpoints."""
import copy
import os

import pytest
import torch
from mmengine.runner import load_checkpoint
from official_format import (TINY, TINY_CLIP, official_state_dict,
                             reference_logits)

import mmcls_plugin  # noqa: F401
from internimage import CheckpointError, convert_checkpoint
from mmpretrain.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 10


def classifier_cfg(flavour):
    """An mmpretrain ImageClassifier like configs/mmpretrain's, tiny."""
    arch = copy.deepcopy(TINY[flavour])
    clip = flavour in ('h', 'g')
    head = dict(type='InternImageClsHead', num_classes=NUM_CLASSES,
                in_channels=arch['channels'] * 8)
    if clip:
        head.update(use_clip_projector=True, **TINY_CLIP)
    return dict(
        type='ImageClassifier',
        backbone=dict(type='InternImage', arch=arch,
                      out_indices=(2, 3) if clip else (3, )),
        head=head)


def official_classifier(flavour, dtype=torch.float64):
    cfg = dict(TINY[flavour], num_classes=NUM_CLASSES)
    if flavour in ('h', 'g'):
        cfg.update(use_clip_projector=True, **TINY_CLIP)
    return official_state_dict(dtype=dtype, **cfg), cfg


def test_registered_in_mmpretrain():
    assert MODELS.get('InternImage').__module__ == 'internimage.backbone'
    model = MODELS.build(classifier_cfg('t'))
    assert type(model.backbone).__name__ == 'InternImage'


@pytest.mark.parametrize('flavour', ['t', 's', 'h', 'g'])
def test_official_classifier_converts_and_gives_official_logits(
        flavour, tmp_path):
    sd, cfg = official_classifier(flavour)
    src = tmp_path / 'official.pth'
    torch.save({'model': sd, 'epoch': 299}, src)
    converted = convert_checkpoint(torch.load(src), source=str(src))
    assert converted['meta']['internimage_kind'] == 'classification'
    dst = tmp_path / 'converted.pth'
    torch.save(converted, dst)

    model = MODELS.build(classifier_cfg(flavour)).double().eval()
    load_checkpoint(model, str(dst), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        want = reference_logits(sd, x, **cfg)
    assert logits.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(logits, want, rtol=1e-9, atol=1e-9)


def test_convert_checkpoint_cli(tmp_path, tool, capsys):
    sd, _ = official_classifier('s', dtype=torch.float32)
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'mm.pth'
    torch.save({'model': sd}, src)
    convert = tool('convert_checkpoint')
    convert.main([str(src), str(dst)])
    assert 'classification checkpoint' in capsys.readouterr().out
    model = MODELS.build(classifier_cfg('s'))
    load_checkpoint(model, str(dst), strict=True)
    torch.testing.assert_close(model.head.fc.weight, sd['head.weight'])
    # Unknown kinds fail with a message naming what was found.
    torch.save({'model': {'encoder.weight': torch.zeros(2)}}, src)
    with pytest.raises(SystemExit) as exit_:
        convert.main([str(src), str(dst)])
    assert 'not a known kind of InternImage checkpoint' in str(exit_.value)
    assert "['encoder']" in str(exit_.value)


def test_convert_checkpoint_kinds():
    backbone = official_state_dict(dtype=torch.float32, **TINY['t'])
    with pytest.raises(CheckpointError, match='needs no conversion'):
        convert_checkpoint({'model': backbone})
    det = {f'backbone.{k}': v for k, v in backbone.items()}
    det['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(1)
    # Detection checkpoints convert (internimage/convert_det.py; the full
    # detectors are tested in tests/test_mmdet_configs.py).
    out = convert_checkpoint({'state_dict': det, 'meta': {}})
    assert out['meta']['internimage_kind'] == 'detection'
    assert out['state_dict'].keys() == det.keys()
    seg = {f'backbone.{k}': v for k, v in backbone.items()}
    seg['decode_head.conv_seg.weight'] = torch.zeros(1)
    out = convert_checkpoint({'state_dict': seg})  # internimage/convert_seg
    assert out['meta']['internimage_kind'] == 'segmentation'
    assert 'decode_head.conv_seg.weight' in out['state_dict']
    seg['decode_head.unknown.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError,
                       match=r'\(UperNet\).* decode_head.unknown.weight'):
        convert_checkpoint({'state_dict': seg})
    with pytest.raises(CheckpointError, match='no entry .model_ema.'):
        convert_checkpoint({'model': backbone}, key='model_ema')
    cls, _ = official_classifier('t', dtype=torch.float32)
    cls['levels.0.extra'] = torch.zeros(1)
    cls['unknown.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r'no known .* unknown.weight'):
        convert_checkpoint({'model': cls})
    # EMA weights, with DataParallel's 'module.' prefix.
    cls, _ = official_classifier('t', dtype=torch.float32)
    out = convert_checkpoint(
        {'model': {}, 'model_ema': {f'module.{k}': v for k, v in cls.items()}},
        key='model_ema')
    assert 'backbone.patch_embed.conv1.weight' in out['state_dict']


def test_head_errors():
    with pytest.raises(ValueError, match='num_classes must be positive'):
        MODELS.build(dict(type='InternImageClsHead', num_classes=0,
                          in_channels=8))
    head = MODELS.build(dict(type='InternImageClsHead', num_classes=3,
                             in_channels=16, use_clip_projector=True,
                             **TINY_CLIP))
    with pytest.raises(ValueError, match="last 2 backbone levels .* "
                       "out_indices"):
        head((torch.zeros(1, 16, 2, 2), ))


def test_image_demo_on_a_shipped_image(tmp_path, tool, capsys):
    """tools/image_demo.py classifies matplotlib's sample photograph with an
    official-format checkpoint (random weights: the format, the
    preprocessing and the output are checked, not the class)."""
    import numpy as np
    from official_format import OFFICIAL
    from PIL import Image
    demo = tool('image_demo')

    sd = official_state_dict(dtype=torch.float32, num_classes=1000,
                             **OFFICIAL['t'])
    ckpt = tmp_path / 'internimage_t_1k_224.pth'
    torch.save({'model': sd}, ckpt)
    seen = []
    from internimage import InternImage
    original = InternImage.forward

    def spy(self, x):
        seen.append(x.detach().clone())
        return original(self, x)

    InternImage.forward = spy
    try:
        demo.main([os.path.join(ROOT, 'configs/mmpretrain/'
                                'internimage-t_8xb128_in1k-224px.py'),
                   str(ckpt), '--topk', '3'])
    finally:
        InternImage.forward = original
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-4].endswith('grace_hopper.jpg:')
    scores = [float(line.split()[0]) for line in lines[-3:]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    # The backbone saw the image resized, centre-cropped, in RGB and
    # normalised with the ImageNet statistics, as the config says.
    img = Image.open(demo.sample_image()).convert('RGB')
    w, h = img.size
    scale = 224 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
    img = np.asarray(img.crop((left, top, left + 224, top + 224)),
                     dtype=np.float32)
    want = (img - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
    got = seen[0][0].permute(1, 2, 0).numpy()
    assert got.shape == want.shape
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.98
    assert abs(got.mean() - want.mean()) < 0.05
