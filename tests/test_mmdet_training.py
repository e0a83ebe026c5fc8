# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""One training iteration of each detector family (Mask R-CNN, Cascade Mask
R-CNN, DINO, CB-DINO) from the real configs, at a reduced image size and
with a tiny InternImage of the config's flavour: mmdet's DetDataPreprocessor
and data samples, the layer-decay optimizer, a real optimizer step."""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from official_format import TINY

import mmdet_plugin  # noqa: F401
from internimage.complexity import build_from_config
from mmdet.testing import demo_mm_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs', 'mmdet')


def tiny_config(name, flavour):
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, name + '.py'))
    arch = dict(TINY[flavour])
    backbone = cfg.model.backbone
    backbone.arch = arch
    for key in ('layer_scale', 'offset_scale', 'post_norm'):
        if key in arch:
            backbone[key] = arch[key]
    backbone.init_cfg = None
    backbone.with_cp = False
    channels = [arch['channels'] * 2**i for i in range(4)]
    cfg.model.neck.in_channels = (channels if cfg.model.neck.type == 'FPN'
                                  else channels[1:])
    train_cfg = cfg.model.train_cfg
    if 'rpn_proposal' in train_cfg:
        # fewer proposals and RoIs: the same code paths in less CPU time
        train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=64)
        rcnn = train_cfg.rcnn
        for stage in (rcnn if isinstance(rcnn, list) else [rcnn]):
            stage.sampler.num = 32
    paramwise = cfg.optim_wrapper.get('paramwise_cfg', {})
    if 'depths' in paramwise:
        paramwise.depths = arch['depths']
        paramwise.num_layers = sum(arch['depths'])
    return cfg


@pytest.mark.parametrize('name,flavour,with_mask', [
    ('mask-rcnn_internimage-t_fpn_1x_coco', 't', True),
    ('cascade-mask-rcnn_internimage-l_fpn_ms-3x_coco', 's', True),
    ('dino-4scale_internimage-t_layer-wise-lr_1x_coco', 't', False),
    ('dino-4scale_cb-internimage-h_o365-pre_coco', 'h', False),
])
def test_one_training_iteration(name, flavour, with_mask):
    torch.manual_seed(0)
    cfg = tiny_config(name, flavour)
    if 'dino' in name:
        # fewer queries: same code paths, less CPU time
        cfg.model.num_queries = 50
        cfg.model.dn_cfg.group_cfg.num_dn_queries = 10
    model = revert_sync_batchnorm(build_from_config(cfg, 'cpu'))
    model.init_weights()
    model.train()
    with DefaultScope.overwrite_default_scope('mmdet'):
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        data = demo_mm_inputs(batch_size=2, image_shapes=[(3, 96, 128),
                                                          (3, 128, 96)],
                              num_items=[3, 2], num_classes=80,
                              with_mask=with_mask)
    data = dict(inputs=[x.float().clamp(0, 255).byte()
                        for x in data['inputs']],
                data_samples=data['data_samples'])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = model.train_step(data, optim)
    assert all(torch.isfinite(torch.as_tensor(v)).all()
               for v in log.values())
    keys = set(log)
    if 'dino' in name:
        assert {'loss_cls', 'loss_bbox', 'loss_iou', 'dn_loss_cls'} <= keys
    else:
        assert {'loss_rpn_cls', 'loss_mask'} <= keys or \
            {'loss_rpn_cls', 's0.loss_mask'} <= keys
    changed = [n for n, p in model.named_parameters()
               if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith('backbone.') for n in changed)
    assert any(not n.startswith(('backbone.', 'neck.')) for n in changed)
    # The layer-decay constructor put the backbone's stem in group 0.
    groups = optim.optimizer.param_groups
    assert min(g['layer_id'] for g in groups if 'layer_id' in g) == 0 \
        or '0.1x' in name
