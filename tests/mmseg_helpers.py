# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Shared pieces of the mmseg tests: config paths, small versions of the
configs' models, the tiny data set."""
import copy
import os.path as osp

import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, 'configs', 'mmseg')
TINY_CONFIG = osp.join(CONFIG_DIR, 'upernet_internimage-t_tiny-ade20k.py')
#: Config file -> (paper params, paper FLOPs) of the official tables.
PAPER = {
    'upernet_internimage-t_8xb2-160k_ade20k-512x512.py': (59e6, 944e9),
    'upernet_internimage-s_8xb2-160k_ade20k-512x512.py': (80e6, 1017e9),
    'upernet_internimage-b_8xb2-160k_ade20k-512x512.py': (128e6, 1185e9),
    'upernet_internimage-l_8xb2-160k_ade20k-640x640.py': (256e6, 2526e9),
    'upernet_internimage-xl_8xb2-160k_ade20k-640x640.py': (368e6, 3142e9),
    'upernet_internimage-h_16xb1-160k_ade20k-896x896.py': (1.12e9, 3566e9),
    'mask2former_internimage-h_16xb1-80k_cocostuff2ade20k-896x896.py':
    (1.31e9, 4635e9),
}
#: A small InternImage (the T flavour: layer scale as the seg configs).
SMALL_ARCH = dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8])


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def shrink(cfg, arch=SMALL_ARCH, crop=(64, 64)):
    """The config with a small backbone (and head) and crop: same model
    types, data preprocessor and losses, a fraction of the compute."""
    cfg = copy.deepcopy(cfg)
    model = cfg.model
    model.backbone.pop('arch', None)
    model.backbone.update(arch, init_cfg=None, drop_path_rate=0.0)
    ins = [arch['channels'] * 2**i for i in range(len(arch['depths']))]
    model.data_preprocessor.size = crop
    paramwise = cfg.optim_wrapper.get('paramwise_cfg', {})
    if 'depths' in paramwise:  # the layer-decay constructor checks them
        paramwise.update(depths=list(arch['depths']),
                         num_layers=sum(arch['depths']))
    head = model.decode_head
    head.in_channels = ins
    if head.type == 'UPerHead':
        head.channels = 16
        model.auxiliary_head.in_channels = ins[2]
        model.auxiliary_head.channels = 8
        for h in (head, model.auxiliary_head):
            h.norm_cfg = dict(type='BN', requires_grad=True)
    else:  # Mask2Former: 32 channels, 4 heads, 10 queries, 2+2 layers
        dims, heads = 32, 4
        head.feat_channels = head.out_channels = dims
        head.num_queries = 10
        head.train_cfg.num_points = 256
        enc = head.pixel_decoder.encoder
        enc.num_layers = 2
        enc.layer_cfg.self_attn_cfg.update(embed_dims=dims, num_heads=heads)
        enc.layer_cfg.ffn_cfg.update(embed_dims=dims,
                                     feedforward_channels=2 * dims)
        head.pixel_decoder.positional_encoding.num_feats = dims // 2
        head.positional_encoding.num_feats = dims // 2
        dec = head.transformer_decoder
        dec.num_layers = 2
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            dec.layer_cfg[key].update(embed_dims=dims, num_heads=heads)
        dec.layer_cfg.ffn_cfg.update(embed_dims=dims,
                                     feedforward_channels=2 * dims)
    return cfg


def set_classes(cfg, num_classes):
    """Heads and losses for ``num_classes`` classes."""
    heads = [cfg.model.decode_head]
    if cfg.model.get('auxiliary_head'):
        heads.append(cfg.model.auxiliary_head)
    for head in heads:
        head.num_classes = num_classes
        if head.get('loss_cls', {}).get('class_weight'):
            head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    return cfg


def build(cfg, device='cpu'):
    from internimage.complexity import build_from_config
    torch.manual_seed(0)
    return build_from_config(cfg, device)


def small_pipeline(pipeline, crop=(64, 64)):
    """The config's training pipeline at the tiny images' scale."""
    pipeline = copy.deepcopy(pipeline)
    for step in pipeline:
        if step['type'] == 'RandomResize':
            step['scale'] = (128, 96)
        elif step['type'] == 'RandomCrop':
            step['crop_size'] = crop
    return pipeline


def tiny_cfg(tiny_data, work_dir, iters=30):
    """The tiny config with a small backbone (:data:`SMALL_ARCH`), the data
    in ``tiny_data``, ``iters`` iterations."""
    cfg = shrink(load(TINY_CONFIG.split('/')[-1]), crop=(64, 64))
    cfg.work_dir = str(work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = tiny_data
    cfg.train_dataloader.dataset.pipeline = small_pipeline(
        cfg.train_pipeline)
    cfg.train_cfg.update(max_iters=iters, val_interval=iters)
    cfg.optim_wrapper.optimizer.lr = 1e-3
    cfg.param_scheduler[-1].end = iters
    for scheduler in cfg.param_scheduler:  # short runs: within the length
        scheduler.end = min(scheduler.end, iters)
        scheduler.begin = min(scheduler.begin, iters - 1)
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = 5
    return cfg
