# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Training and testing through mmseg's own data pipeline, data
preprocessor, losses, metric and mmengine's Runner, on the tiny set."""
import copy
import math

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmseg_helpers import build, load, shrink, small_pipeline, tiny_cfg
from official_format import TINY

import mmseg_plugin  # noqa: F401
from mmseg.registry import DATASETS


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory, tool):
    return tool('make_tiny_ade20k').make_tiny_ade20k(
        str(tmp_path_factory.mktemp('tiny_ade20k')), num_train=8, num_val=2)


@pytest.mark.parametrize('name, arch', [
    ('upernet_internimage-t_8xb2-160k_ade20k-512x512.py', None),
    ('mask2former_internimage-h_16xb1-80k_cocostuff2ade20k-896x896.py',
     TINY['h']),
])
def test_one_training_iteration(name, arch, tiny_data):
    """The real config (150 ADE20K classes, its losses, optimizer
    constructor and data preprocessor) with a small backbone and crop."""
    cfg = load(name)
    cfg = shrink(cfg, arch=arch) if arch else shrink(cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(dict(
            cfg.train_dataloader.dataset, data_root=tiny_data,
            pipeline=small_pipeline(cfg.train_pipeline)))
        model = build(cfg)
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    data = pseudo_collate([dataset[0], dataset[1]])
    # the data preprocessor pads the crops to the config's size
    batch = model.data_preprocessor(copy.deepcopy(data), training=True)
    assert batch['inputs'].shape == (2, 3, 64, 64)
    assert batch['data_samples'][0].gt_sem_seg.data.shape == (1, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    losses = model.train_step(data, optim_wrapper)
    assert losses and all(math.isfinite(v.item()) for v in losses.values())
    if name.startswith('mask2former'):
        assert {'decode.loss_cls', 'decode.loss_mask',
                'decode.loss_dice'} <= set(losses)
    else:
        assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    changed = [k for k, v in model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    assert any(k.startswith('decode_head.') for k in changed)


def test_short_run_learns_and_reports_miou(tiny_data, tmp_path, capsys):
    runner = Runner.from_cfg(tiny_cfg(tiny_data, tmp_path, iters=60))
    runner.train()
    losses, _ = runner.message_hub.get_scalar('train/loss').data
    assert losses[-5:].mean() < 0.95 * losses[:5].mean(), losses
    metrics = runner.test()
    assert 0 <= metrics['mIoU'] <= 100
    out = capsys.readouterr().out
    assert 'per class results' in out
    for name in ('wall', 'building', 'sky', 'floor', 'tree'):
        assert name in out


def test_train_py_and_test_py_tta_on_a_segmentation_config(
        tiny_data, tmp_path, tool):
    """tools/train.py and tools/test.py serve mmseg configs: train 6
    iterations, then test the checkpoint with --tta (the config's
    tta_pipeline, 3 scales x 2 flips, in mmseg's SegTTAModel) and --out."""
    cfg = tiny_cfg(tiny_data, tmp_path / 'train', iters=6)
    config = tmp_path / 'tiny.py'
    cfg.dump(str(config))
    tool('train').main([str(config), '--work-dir', str(tmp_path / 'train')])
    checkpoint = tmp_path / 'train' / 'iter_6.pth'
    assert checkpoint.is_file()

    from mmseg.models import SegTTAModel
    seen = []
    original = SegTTAModel.test_step

    def test_step(self, data):
        seen.append(len(data['inputs']))
        return original(self, data)

    SegTTAModel.test_step = test_step
    try:
        metrics = tool('test').main([
            str(config), str(checkpoint), '--tta', '--work-dir',
            str(tmp_path / 'test'), '--out', str(tmp_path / 'preds')])
    finally:
        SegTTAModel.test_step = original
    assert 'mIoU' in metrics
    assert seen and all(n == 6 for n in seen)  # 3 scales x 2 flips
    assert len(list((tmp_path / 'preds').glob('*.png'))) == 2

