# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""What tools/train.py, tools/test.py and tools/image_demo.py share: the
library of a config, the checkpoint allow-list, CPU distributed runs and
test-time augmentation, for mmdet, mmseg and mmpretrain configs alike."""
import os
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: The default_scope of the configs these tools run.
LIBRARIES = ('mmdet', 'mmseg', 'mmpretrain')


def library_of(cfg) -> str:
    """'mmdet', 'mmseg' or 'mmpretrain', from the config's default_scope."""
    scope = cfg.get('default_scope')
    if scope not in LIBRARIES:
        raise ValueError(
            f'config default_scope is {scope!r}; these tools run configs '
            f'whose default_scope is one of {sorted(LIBRARIES)}')
    return scope


def add_runner_args(parser, work_dir_help):
    """The options tools/train.py and tools/test.py share."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int,
                        default=None)


def load_config(args):
    """``args.config`` with the shared options applied; returns ``(cfg,
    library)``. Raises FileNotFoundError / ValueError naming the problem."""
    from mmengine.config import Config
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    library = library_of(cfg)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = default_work_dir(args.config)
    return cfg, library


def build_runner(cfg):
    """mmengine's Runner (or the config's ``runner_type``) for ``cfg``,
    able to load Runner checkpoints and to run distributed on CPUs."""
    allow_mmengine_checkpoints()
    setup_cpu_distributed(cfg, cfg.launcher)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def allow_mmengine_checkpoints():
    """Let ``torch.load(weights_only=True)`` (torch >= 2.6's default) read
    the checkpoints mmengine's Runner writes.

    Besides tensors they hold the message hub (mmengine ``HistoryBuffer``
    objects with numpy arrays and references to its statistics methods),
    numpy scalars (the best score) and the lr schedulers'
    ``collections.Counter`` of milestones. These
    classes, and nothing else, are added to torch's allow-list of safe
    globals, so that resuming and loading work while arbitrary pickled
    objects are still refused.
    """
    import collections

    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    # MultiStepLR keeps its milestones in a Counter.
    safe = [HistoryBuffer, collections.Counter, np.ndarray, np.dtype]
    try:  # numpy >= 2 moved these to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import _reconstruct, scalar
    safe += [_reconstruct, scalar]
    safe += [type(np.dtype(t)) for t in (
        np.float64, np.float32, np.float16, np.int64, np.int32, np.int8,
        np.uint8, np.bool_)]
    # HistoryBuffer pickles its statistics methods (HistoryBuffer.min, ...)
    # as getattr(HistoryBuffer, 'min'). The builtin getattr would give the
    # pickle any attribute of any allowed object; this one gives only those.
    safe.append((_history_buffer_method, 'builtins.getattr'))
    torch.serialization.add_safe_globals(safe)


def _history_buffer_method(obj, name):
    """``getattr`` restricted to the public methods of mmengine's
    HistoryBuffer (what its pickled state refers to)."""
    import pickle
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and not name.startswith('_') and callable(
            vars(HistoryBuffer).get(name)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}), which is not '
        'allowed: only the HistoryBuffer methods of mmengine checkpoints')


def setup_cpu_distributed(cfg, launcher: str):
    """Distributed runs without a GPU: the gloo backend, and DDP without
    device ids. mmengine's defaults (nccl, ``torch.cuda.set_device``) need
    GPUs."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def apply_tta(cfg):
    """Test-time augmentation as mmdet's and mmseg's test.py do: the test
    pipeline becomes ``tta_pipeline`` and the model is wrapped in
    ``tta_model``."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise ValueError(f'--tta needs {" and ".join(missing)} in the '
                         'config')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def default_work_dir(config: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])


def set_local_rank_env(local_rank):
    """The deprecated ``--local-rank`` of torch.distributed.launch."""
    if 'LOCAL_RANK' not in os.environ and local_rank is not None:
        os.environ['LOCAL_RANK'] = str(local_rank)
