# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""End-to-end speed of InternImage-T against mmpretrain's ConvNeXt-T and Swin-T.

Builds, with random weights:

- this project's InternImage-T classifier (``configs/mmpretrain/
  internimage-t_8xb128_in1k-224px.py``), eager and with its backbone
  ``torch.compile``'d (``fullgraph=True``, so a graph break is an error;
  ``dynamic=False``, so each input shape gets a graph of its own;
  inference graphs with inductor's ``freezing``, PyTorch's setting for CPU
  inference, which folds the weights into the graph as constants, so it is
  for models whose weights no longer change; here it only affects timing;
  ``--no-freezing`` turns it off; under ``OMP_WAIT_POLICY=PASSIVE``
  with inductor's ``cpp.min_chunk_size`` raised, see ``--min-chunk-size``);
- the same model on the pure-PyTorch DCNv3 core (``core_op='DCNv3_pytorch'``);
- mmpretrain's ConvNeXt-T and Swin-T from mmpretrain's own model configs
  (``convnext/convnext-tiny_32xb128_in1k.py``,
  ``swin_transformer/swin-tiny_16xb64_in1k.py``),

and times, at 224 px, inference at batch 1 and 8 and a training step at
batch 8 (forward, cross-entropy, backward, AdamW step). With ``--detection``
it also times a detection-sized backbone forward (batch 1, 800x1344: the
Mask R-CNN test size 800x1333 padded to a multiple of 32).

Everything is timed in one run, interleaved in rounds (every round times
every cell once; each cell is the median over rounds), so that the ratios
hold on a shared, noisy machine. Ratios are against ConvNeXt-T in the same
column; the compiled row also shows its speedup over eager.

    OMP_WAIT_POLICY=PASSIVE python tools/benchmark_models.py --threads 2
    python tools/benchmark_models.py --models internimage-t convnext-t --rounds 3
    python tools/benchmark_models.py --detection --json out.json
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time

import torch
import torch._inductor.config
import torch.nn.functional as F

from benchmark_dcnv3 import add_malloc_argument, malloc_setting, time_once

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

INTERNIMAGE_CFG = osp.join(ROOT, 'configs', 'mmpretrain',
                           'internimage-t_8xb128_in1k-224px.py')
MMPRETRAIN_CFGS = {
    'convnext-t': 'convnext/convnext-tiny_32xb128_in1k.py',
    'swin-t': 'swin_transformer/swin-tiny_16xb64_in1k.py',
}
#: name -> (label in the table, how to build it)
MODELS = {
    'internimage-t': 'this project\'s InternImage-T',
    'internimage-t-compiled': 'InternImage-T, backbone torch.compile\'d',
    'internimage-t-pytorch': 'InternImage-T with the pure-PyTorch core',
    'convnext-t': 'mmpretrain ConvNeXt-T',
    'swin-t': 'mmpretrain Swin-T',
}
TASKS = {
    'infer1': ('inference, batch 1', 1, False),
    'infer8': ('inference, batch 8', 8, False),
    'train8': ('training step, batch 8', 8, True),
}
DETECTION_SIZE = (800, 1344)
BASELINE = 'convnext-t'
# Inductor runs a generated CPU kernel on several threads from 2 x
# cpp.min_chunk_size elements (512 by default). Under passive OpenMP waits
# every parallel region wakes a sleeping thread (~60 us on this project's
# 2-core host, the cost of ~100K elements of a fused LayerNorm), so small
# kernels are better left on one thread there.
PASSIVE_MIN_CHUNK_SIZE = 131072


def passive_waits():
    return os.environ.get('OMP_WAIT_POLICY', '').upper() == 'PASSIVE'


def mmpretrain_config(relative):
    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs', relative)
    if not osp.isfile(path):
        sys.exit(f'mmpretrain config not found: {path}')
    return path


def build(name, compile_options=None):
    """The classifier ``name`` (random weights), in train mode;
    ``compile_options`` are inductor's, for the compiled model."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as REGISTRY
    from mmpretrain.utils import register_all_modules

    import mmcls_plugin  # noqa: F401  (registers InternImage)
    register_all_modules(init_default_scope=False)
    if name.startswith('internimage-t'):
        cfg = Config.fromfile(INTERNIMAGE_CFG).model
        cfg.backbone.core_op = ('DCNv3_pytorch' if name.endswith('pytorch')
                                else 'DCNv3')
    else:
        cfg = Config.fromfile(mmpretrain_config(MMPRETRAIN_CFGS[name])).model
    cfg.pop('train_cfg', None)  # batch augments need labels; not timed here
    model = REGISTRY.build(cfg)  # PyTorch's default initialisation
    if name.endswith('compiled'):
        # dynamic=False: one graph specialised to each input shape, as a
        # deployment at a fixed size gets. With the default (automatic
        # dynamic shapes) the backbone, once it has seen the batch-8 and
        # the detection inputs, recompiles with dynamic sizes, and from then
        # on every call runs that graph, batch 1 included: 1.00-1.08x faster
        # than eager where its own graph was 1.36x.
        model.backbone = torch.compile(model.backbone, fullgraph=True, dynamic=False,
                                       options=compile_options)
    return model


def step_fn(model, batch, train, size=(224, 224)):
    """One timed call: inference (no grad) or a training step."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=gen)
    # Cells share their model, so each call sets the mode it times.
    if not train:

        def infer():
            model.train(False)
            with torch.no_grad():
                model(images, mode='tensor')
        return infer
    labels = torch.randint(0, 1000, (batch, ), generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        model.train(True)
        optimizer.zero_grad(set_to_none=True)
        logits = model(images, mode='tensor')
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
    return train_step


def backbone_fn(model, size):
    """A detection-sized forward of the backbone alone (all levels)."""
    backbone = model.backbone
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))

    def run():
        backbone.train(False)
        with torch.no_grad():
            backbone(images)
    return run


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    # Applies to graphs compiled without grad (inference) only.
    torch._inductor.config.freezing = args.freezing
    cells = {}  # (model, task) -> callable
    warmup = {}
    options = ({'cpp.min_chunk_size': args.min_chunk_size}
               if args.min_chunk_size else None)
    for name in args.models:
        model = build(name, options)
        for task in args.tasks:
            _, batch, train = TASKS[task]
            cells[(name, task)] = step_fn(model, batch, train)
        if args.detection and name in ('internimage-t', 'internimage-t-compiled',
                                       'convnext-t'):
            cells[(name, 'det')] = backbone_fn(model, DETECTION_SIZE)
    for key, fn in cells.items():  # warm-up (and compilation)
        start = time.perf_counter()
        fn()
        fn()
        warmup[key] = time.perf_counter() - start
        print(f'warm-up {key[0]} {key[1]}: {warmup[key]:.1f} s', file=sys.stderr,
              flush=True)
    samples = {key: [] for key in cells}
    for r in range(args.rounds):
        for key, fn in cells.items():
            samples[key].append(time_once(fn, torch.device('cpu'), args.min_time))
        print(f'round {r + 1}/{args.rounds} done', file=sys.stderr, flush=True)
    return {key: statistics.median(v) for key, v in samples.items()}, samples, warmup


def fmt(seconds):
    return f'{seconds * 1e3:.0f} ms' if seconds < 10 else f'{seconds:.1f} s'


def table(medians, args):
    cols = list(args.tasks) + (['det'] if args.detection else [])
    heads = [TASKS[t][0] if t in TASKS else
             f'backbone forward, 1x3x{DETECTION_SIZE[0]}x{DETECTION_SIZE[1]}'
             for t in cols]
    lines = ['| model | ' + ' | '.join(heads) + ' |',
             '|---|' + '---:|' * len(cols)]
    for name in args.models:
        row = []
        for t in cols:
            if (name, t) not in medians:
                row.append('')
                continue
            v = medians[(name, t)]
            notes = []
            if name != BASELINE and (BASELINE, t) in medians:
                notes.append(f'{v / medians[(BASELINE, t)]:.2f}x ConvNeXt-T')
            if name.endswith('compiled') and ('internimage-t', t) in medians:
                notes.append(f'{medians[("internimage-t", t)] / v:.2f}x faster '
                             'than eager')
            row.append(fmt(v) + (f' ({", ".join(notes)})' if notes else ''))
        lines.append(f'| {MODELS[name]} | ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(MODELS),
                        choices=list(MODELS))
    parser.add_argument('--tasks', nargs='+', default=list(TASKS),
                        choices=list(TASKS))
    parser.add_argument('--detection', action='store_true',
                        help='also time a detection-sized backbone forward')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (default: torch.get_num_threads())')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--min-time', type=float, default=1.0,
                        help='seconds per timing sample')
    parser.add_argument('--no-freezing', dest='freezing', action='store_false',
                        help="compile inference without inductor's freezing")
    parser.add_argument('--min-chunk-size', type=int, default=None,
                        help="inductor's cpp.min_chunk_size for the compiled model "
                        f'(default: {PASSIVE_MIN_CHUNK_SIZE} under OMP_WAIT_POLICY=PASSIVE, '
                        "else inductor's own; 0: inductor's own)")
    parser.add_argument('--json', help='also write medians and samples here')
    add_malloc_argument(parser)
    args = parser.parse_args()
    if args.min_chunk_size is None:
        args.min_chunk_size = PASSIVE_MIN_CHUNK_SIZE if passive_waits() else 0
    malloc = malloc_setting(args)
    medians, samples, warmup = run(args)
    print(f'{platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} torch threads, torch {torch.__version__}, '
          f'OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "unset")}, fp32, '
          f'median of {args.rounds} interleaved rounds; inductor freezing '
          f'{"on" if args.freezing else "off"} for compiled inference, '
          f'cpp.min_chunk_size {args.min_chunk_size or "default"}; {malloc}')
    print()
    print(table(medians, args))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(threads=torch.get_num_threads(), rounds=args.rounds,
                           medians={f'{m}/{t}': v for (m, t), v in medians.items()},
                           samples={f'{m}/{t}': v for (m, t), v in samples.items()},
                           warmup={f'{m}/{t}': v for (m, t), v in warmup.items()}),
                      f, indent=2)


if __name__ == '__main__':
    main()
