# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Running this project's configs with mmengine 0.10 on torch >= 2.6.

What every entry point needs, the libraries' own APIs included:

- :func:`allow_mmengine_checkpoints`: lets ``torch.load(weights_only=True)``
  (torch >= 2.6's default, which mmengine's ``load_checkpoint`` uses) read
  the checkpoints mmengine's Runner writes, and nothing more. Every plugin
  (``mmcls_plugin``, ``mmdet_plugin``, ``mmseg_plugin``) calls it when it is
  imported, also through a config's ``custom_imports``, so that
  ``DetInferencer``, ``init_detector``, ``MMSegInferencer``, mmseg's
  ``init_model``, mmpretrain's ``get_model`` and ``inference_model`` read a
  checkpoint of ``tools/train.py``. It is idempotent.
- :func:`setup_cpu_distributed`: distributed runs without GPUs (gloo).
- :func:`library_of`, :func:`load_config`, :func:`build_runner`,
  :func:`apply_tta`: the config handling of ``tools/train.py`` and
  ``tools/test.py``, for mmdet, mmseg and mmpretrain configs alike
  (:func:`add_runner_args` and :func:`set_local_rank_env` are their shared
  command-line options).
- :func:`train_length`, :func:`fit_schedule`, :func:`draw_test_sample`,
  :func:`train_test_draw`: shortened runs, their metrics and picture (what
  ``tools/demo_det.py`` and ``tools/demo_seg.py`` share).
"""
import collections
import os
import os.path as osp
import pickle

import numpy as np
import torch

#: The default_scope of the configs these tools run.
LIBRARIES = ('mmdet', 'mmseg', 'mmpretrain')


# ---------------------------------------------------- checkpoint allow-list
def mmengine_checkpoint_globals() -> list:
    """What mmengine's Runner pickles into a checkpoint besides tensors and
    plain containers, as entries of ``torch.serialization.add_safe_globals``.

    - the message hub: mmengine ``HistoryBuffer`` objects, which hold numpy
      arrays and refer to their statistics methods (``HistoryBuffer.mean``,
      ...) through ``getattr``;
    - numpy scalars and arrays (the best score, logged values) and their
      dtypes;
    - the lr schedulers' ``collections.Counter`` of milestones
      (``MultiStepLR``).

    The ``getattr`` entry is :func:`history_buffer_method`, which gives only
    those methods, never an attribute of another object.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2 moved these to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (
        np.float64, np.float32, np.float16, np.int64, np.int32, np.int8,
        np.uint8, np.bool_)]
    return [HistoryBuffer, collections.Counter, np.ndarray, np.dtype,
            _reconstruct, scalar, *dtypes,
            (history_buffer_method, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    """Add :func:`mmengine_checkpoint_globals` to torch's allow-list of
    safe globals, so that checkpoints written by mmengine's Runner load with
    ``weights_only=True`` while any other pickled object is still refused.
    Idempotent; the plugins call it on import."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


def history_buffer_method(obj, name):
    """``getattr`` restricted to the public methods of mmengine's
    ``HistoryBuffer`` (what its pickled state refers to). Anything else
    raises ``pickle.UnpicklingError``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and not name.startswith('_') and callable(
            vars(HistoryBuffer).get(name)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}), which is not '
        'allowed: only the HistoryBuffer methods of mmengine checkpoints')


# ------------------------------------------------------------- distributed
def setup_cpu_distributed(cfg, launcher: str) -> None:
    """Distributed runs without a GPU: the gloo backend, and DDP without
    device ids. mmengine's defaults (nccl, ``torch.cuda.set_device``) need
    GPUs. Nothing changes with ``launcher='none'`` or when CUDA is there."""
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


# ------------------------------------------------------------------ configs
def library_of(cfg) -> str:
    """'mmdet', 'mmseg' or 'mmpretrain', from the config's default_scope;
    ValueError for another one."""
    scope = cfg.get('default_scope')
    if scope not in LIBRARIES:
        raise ValueError(
            f'config default_scope is {scope!r}; these tools run configs '
            f'whose default_scope is one of {sorted(LIBRARIES)}')
    return scope


def default_work_dir(config: str) -> str:
    """``./work_dirs/CONFIG_NAME``, as the libraries' tools."""
    return osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])


def load_config(args):
    """``args.config`` with the options of :func:`add_runner_args` applied;
    returns ``(cfg, library)``. Raises FileNotFoundError / ValueError naming
    the problem."""
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
    """mmengine's Runner (or the config's ``runner_type``) for ``cfg``, able
    to load Runner checkpoints and to run distributed on CPUs."""
    allow_mmengine_checkpoints()
    setup_cpu_distributed(cfg, cfg.get('launcher', 'none'))
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def apply_tta(cfg) -> None:
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


# ------------------------------------------------------------ command line
def add_runner_args(parser, work_dir_help: str) -> None:
    """The options tools/train.py and tools/test.py share (those of the
    libraries' own tools): --work-dir, --cfg-options, --launcher,
    --local-rank."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int,
                        default=None)


def set_local_rank_env(local_rank) -> None:
    """The deprecated ``--local-rank`` of torch.distributed.launch."""
    if 'LOCAL_RANK' not in os.environ and local_rank is not None:
        os.environ['LOCAL_RANK'] = str(local_rank)


# --------------------------------------------------------------- short runs
def train_length(cfg) -> int:
    """The training length in the loop's unit: ``max_epochs`` or
    ``max_iters``."""
    loop = cfg.train_cfg
    return loop['max_epochs'] if 'max_epochs' in loop else loop['max_iters']


def fit_schedule(cfg, original_length: int) -> None:
    """After ``train_cfg.max_epochs`` (or ``max_iters``) changed from
    ``original_length``: validate and save a checkpoint once, at the end,
    clip the lr schedulers of the loop's unit to the new length and scale
    their milestones with it."""
    by_epoch = 'max_epochs' in cfg.train_cfg
    length = train_length(cfg)
    if length < 1:
        raise ValueError(f'the training length must be >= 1, got {length}')
    if 'val_interval' in cfg.train_cfg:
        cfg.train_cfg.val_interval = length
    cfg.default_hooks.checkpoint.interval = length
    for scheduler in cfg.get('param_scheduler') or []:
        if scheduler.get('by_epoch', True) != by_epoch:
            continue
        scheduler['end'] = min(scheduler.get('end', length), length)
        scheduler['begin'] = min(scheduler.get('begin', 0), length - 1)
        if 'milestones' in scheduler:
            scheduler['milestones'] = sorted({
                min(length, max(1, round(m * length / original_length)))
                for m in scheduler['milestones']})


def draw_test_sample(runner, out_file: str, index: int = 0, **kwargs):
    """Predict test sample ``index`` with the runner's model and save the
    library's drawing of its ground truth beside the prediction
    (``runner.visualizer.add_datasample``; ``kwargs`` go there, e.g.
    ``pred_score_thr``). Returns the sample's image path."""
    import mmcv
    from mmengine.dataset import pseudo_collate
    dataset = runner.test_dataloader.dataset
    data = pseudo_collate([dataset[index]])
    model = runner.model
    model.eval()
    with torch.no_grad():
        sample = model.test_step(data)[0]
    image = mmcv.imread(sample.img_path, channel_order='rgb')
    visualizer = runner.visualizer
    visualizer.dataset_meta = dataset.metainfo
    visualizer.add_datasample(osp.basename(sample.img_path), image, sample,
                              draw_gt=True, draw_pred=True, show=False,
                              out_file=out_file, **kwargs)
    return sample.img_path


def train_test_draw(cfg, data: str, **draw_kwargs) -> dict:
    """Train ``cfg`` with mmengine's Runner (no validation during training),
    test the trained model, draw
    the first test sample (:func:`draw_test_sample`) to
    ``WORK_DIR/prediction.png`` and write ``WORK_DIR/metrics.json``.
    Returns what the json holds: the test ``metrics``, the training
    ``length`` and its ``unit`` ('epochs' or 'iterations'), the seconds of
    training and in all, and the paths of the ``data``, ``checkpoint``,
    ``log``, ``prediction`` picture and drawn ``image``."""
    import json
    import time

    from mmengine.runner import Runner
    # No validation during training: the test after it evaluates.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.train()
    trained = time.time() - start
    metrics = runner.test()
    picture = osp.join(cfg.work_dir, 'prediction.png')
    image = draw_test_sample(runner, picture, **draw_kwargs)
    with open(osp.join(cfg.work_dir, 'last_checkpoint'),
              encoding='utf-8') as f:
        checkpoint = f.read().strip()
    summary = dict(
        metrics={k: float(v) for k, v in metrics.items()},
        length=train_length(cfg),
        unit='epochs' if 'max_epochs' in cfg.train_cfg else 'iterations',
        train_seconds=round(trained, 1),
        total_seconds=round(time.time() - start, 1),
        test_images=len(runner.test_dataloader.dataset),
        data=osp.abspath(data), checkpoint=osp.abspath(checkpoint),
        log=osp.abspath(runner.log_dir), prediction=osp.abspath(picture),
        image=osp.abspath(image), metrics_file=osp.abspath(
            osp.join(cfg.work_dir, 'metrics.json')))
    with open(summary['metrics_file'], 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2)
    return summary


def print_summary(tag: str, summary: dict, result: str) -> None:
    """The closing lines of a demo: ``result`` (its metrics in words), then
    where each output of :func:`train_test_draw` is."""
    print(f'[{tag}] ' + '=' * 60)
    print(f'[{tag}] trained {summary["length"]} {summary["unit"]} in '
          f'{summary["train_seconds"]:.0f} s, in all '
          f'{summary["total_seconds"]:.0f} s')
    print(f'[{tag}] {result} on {summary["test_images"]} test images')
    for key in ('data', 'checkpoint', 'log', 'metrics_file', 'prediction'):
        print(f'[{tag}] {key.split("_")[0] + ":":12s}{summary[key]}')
    print(f'[{tag}] (the picture: {osp.basename(summary["image"])}, ground '
          'truth | prediction)')
