# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""A few mmpretrain training iterations on a tiny image folder."""
import os

import numpy as np
import torch
from mmcls_helpers import tiny_classifier_cfg, write_image_folder
from mmengine.runner import Runner


def test_training_reduces_the_loss(tmp_path, tool):
    data = tmp_path / 'data'
    write_image_folder(str(data))
    cfg = tiny_classifier_cfg(data, tmp_path / 'work', epochs=8)
    cfg.model.backbone.with_cp = True
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.optim_wrapper.paramwise_cfg = dict(decay_style='classification',
                                           layer_decay_rate=0.9,
                                           offset_lr_scale=0.1)
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, end=3,
                                by_epoch=False)]

    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = np.array(runner.message_hub.get_scalar('train/loss').data[0])
    assert len(losses) == 8 * 3
    assert losses[-6:].mean() < 0.8 * losses[:6].mean(), losses
    # The checkpoint has the EMA weights and loads back strictly.
    ckpt = torch.load(os.path.join(cfg.work_dir, 'epoch_8.pth'),
                      weights_only=False)
    assert 'ema_state_dict' in ckpt
    runner.model.load_state_dict(ckpt['state_dict'], strict=True)

    # tools/test.py serves mmpretrain configs and reads this checkpoint with
    # torch's weights_only loading (its allow-list of Runner objects).
    cfg.custom_hooks = []  # the trained weights, not the young EMA copy
    config = tmp_path / 'tiny_cls.py'
    cfg.dump(str(config))
    metrics = tool('test').main([
        str(config), os.path.join(cfg.work_dir, 'epoch_8.pth'), '--work-dir',
        str(tmp_path / 'test')])
    assert 0 <= metrics['accuracy/top1'] <= 100  # 8 epochs: not a skill test
