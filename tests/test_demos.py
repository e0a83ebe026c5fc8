# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""tools/demo_det.py and tools/demo_seg.py: the same options (--data,
--work-dir, --config, --cfg-options) and the same outputs (a metrics json,
a ground truth | prediction picture, the summary lines). Small models here;
the full demos, as `make demo` runs them, are marked slow."""
import json
import os

import pytest
from mmdet_helpers import small_config
from mmseg_helpers import tiny_cfg
from PIL import Image


def check_outputs(summary, work, out, image_size):
    """What both demos write and print."""
    with open(work / 'metrics.json') as f:
        assert json.load(f) == summary
    for key in ('data', 'checkpoint', 'log', 'prediction'):
        assert f'{key}:' in out, key
    assert (work / 'prediction.png').is_file()
    assert summary['prediction'] == str(work / 'prediction.png')
    assert os.path.isfile(summary['checkpoint'])
    # ground truth | prediction, side by side
    w, h = image_size
    assert Image.open(work / 'prediction.png').size == (2 * w, h)


def test_demo_det_small(tmp_path, tool, capsys):
    data = tool('make_tiny_coco').make_tiny_coco(
        str(tmp_path / 'data'), num_train=2, num_val=1, size=64)
    config = tmp_path / 'small.py'
    small_config().dump(str(config))
    work = tmp_path / 'work'
    summary = tool('demo_det').main([
        '--data', data, '--work-dir', str(work), '--config', str(config),
        '--cfg-options', 'train_cfg.max_epochs=1'])
    out = capsys.readouterr().out
    assert summary['length'] == 1 and summary['unit'] == 'epochs'
    assert summary['checkpoint'].endswith('epoch_1.pth')
    assert 0 <= summary['metrics']['coco/bbox_mAP'] <= 1
    assert 'box mAP' in out and 'mask mAP' in out
    check_outputs(summary, work, out, (64, 64))


def test_demo_seg_small_writes_its_data(tmp_path, tool, capsys):
    """Also: the demo writes the set with tools/make_tiny_ade20k.py."""
    config = tmp_path / 'small.py'
    tiny_cfg('unused', 'unused', iters=6).dump(str(config))
    work = tmp_path / 'work'
    summary = tool('demo_seg').main([
        '--data', str(tmp_path / 'data'), '--work-dir', str(work),
        '--config', str(config), '--cfg-options', 'train_cfg.max_iters=2'])
    out = capsys.readouterr().out
    assert (tmp_path / 'data' / 'images' / 'validation').is_dir()
    assert summary['length'] == 2 and summary['unit'] == 'iterations'
    assert summary['checkpoint'].endswith('iter_2.pth')
    assert 0 <= summary['metrics']['mIoU'] <= 100
    assert 'per class results' in out and 'mIoU' in out
    check_outputs(summary, work, out, (128, 96))


def test_fit_schedule_follows_the_length():
    from mmengine.config import Config

    from internimage.runner import fit_schedule, train_length
    cfg = small_config()
    before = train_length(cfg)
    cfg.merge_from_dict({'train_cfg.max_epochs': 5})
    fit_schedule(cfg, before)
    assert cfg.default_hooks.checkpoint.interval == 5
    assert cfg.train_cfg.val_interval == 5
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0]
    assert step.end == 5 and step.milestones == [4]  # 8 of 10 epochs
    warmup = [s for s in cfg.param_scheduler if s.type == 'LinearLR'][0]
    assert warmup.end == 30  # by iteration: untouched
    cfg = Config(dict(train_cfg=dict(max_iters=0),
                      default_hooks=dict(checkpoint=dict(interval=1))))
    with pytest.raises(ValueError, match='length must be >= 1'):
        fit_schedule(cfg, 40)


@pytest.mark.slow
def test_demo_det(tmp_path, tool, capsys):
    """tools/demo_det.py as `make demo` runs it: the real InternImage-T Mask
    R-CNN, 10 epochs (~6 min)."""
    work = tmp_path / 'work'
    summary = tool('demo_det').main([
        '--work-dir', str(work), '--data', str(tmp_path / 'data')])
    out = capsys.readouterr().out
    assert summary['metrics']['coco/bbox_mAP'] > 0.1, out
    check_outputs(summary, work, out, (128, 128))


@pytest.mark.slow
def test_demo_seg(tmp_path, tool, capsys):
    """tools/demo_seg.py as `make demo` runs it: the real InternImage-T
    UperNet, 40 iterations (~2 min)."""
    work = tmp_path / 'work'
    summary = tool('demo_seg').main([
        '--work-dir', str(work), '--data', str(tmp_path / 'data')])
    out = capsys.readouterr().out
    assert summary['metrics']['mIoU'] > 30, out
    check_outputs(summary, work, out, (128, 96))
