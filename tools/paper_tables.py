# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Our params, FLOPs (and, with checkpoints, accuracy) beside the paper's.

    python tools/paper_tables.py [--models NAME ...] [--checkpoint-dir DIR]

For every model of the metafiles that ``model-index.yml`` imports, builds
the config's model on the meta device, counts its parameters and FLOPs (as
tools/get_flops.py) and prints them beside the metafile's paper numbers with
the difference. With ``--checkpoint-dir``, also evaluates the checkpoint
found there for each model (``NAME.pth`` in this project's format, or the
official file named as in the metafile's ``Converted From``, converted on the
fly) with the config's test set and puts the metric beside the paper's.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile

import torch
import yaml
from mmengine.config import Config, DictAction

from internimage.checkpoint import read_checkpoint
from internimage.complexity import model_complexity
from internimage.convert import convert_checkpoint

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model-index', default=osp.join(ROOT,
                                                          'model-index.yml'))
    parser.add_argument('--models', nargs='+',
                        help='only these models (metafile names)')
    parser.add_argument('--checkpoint-dir',
                        help='evaluate the checkpoints found here')
    parser.add_argument('--work-dir', help='for evaluation logs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of every config (e.g. the '
                        'test data root) for evaluation')
    return parser.parse_args(argv)


def load_models(index_path):
    """The metafile entries listed by a model index, with absolute config
    paths."""
    base = osp.dirname(osp.abspath(index_path))
    with open(index_path, encoding='utf-8') as f:
        index = yaml.safe_load(f)
    models = []
    for metafile in index.get('Import', []):
        with open(osp.join(base, metafile), encoding='utf-8') as f:
            meta = yaml.safe_load(f)
        for model in meta.get('Models', []):
            model = dict(model, Config=osp.join(base, model['Config']))
            models.append(model)
    return models


def paper_metric(model):
    """(metric name, value) of the first result; ('-', '-') without one."""
    if not model.get('Results'):
        return '-', '-'
    metrics = model['Results'][0]['Metrics']
    name = next(iter(metrics))
    return name, metrics[name]


def find_checkpoint(model, directory):
    """``(path, official)`` of the model's checkpoint in ``directory``."""
    ours = osp.join(directory, model['Name'] + '.pth')
    if osp.isfile(ours):
        return ours, False
    url = model.get('Converted From', {}).get('Weights')
    if url:
        official = osp.join(directory, osp.basename(url))
        if osp.isfile(official):
            return official, True
    return None, False


def evaluate(model, checkpoint, official, cfg_options, work_dir):
    """Top-1 (or the config's first metric) of ``checkpoint``."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(model['Config'])
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.custom_hooks = []  # evaluate the weights as given, not an EMA copy
    cfg.model.pop('init_cfg', None)
    cfg.work_dir = osp.join(work_dir, model['Name'])
    with tempfile.TemporaryDirectory() as tmp:
        if official:
            converted = convert_checkpoint(read_checkpoint(checkpoint),
                                           source=checkpoint)
            checkpoint = osp.join(tmp, 'converted.pth')
            torch.save(converted, checkpoint)
        cfg.load_from = checkpoint
        metrics = Runner.from_cfg(cfg).test()
    for key in ('accuracy/top1', 'coco/bbox_mAP', 'mIoU'):
        if key in metrics:
            # mmdet's CocoMetric gives fractions, the paper percents.
            return metrics[key] * (100 if key.startswith('coco/') else 1)
    return next(iter(metrics.values()))


def fmt_diff(ours, paper, percent=False):
    if percent:
        return f'{(ours - paper) / paper * 100:+.1f}%'
    return f'{ours - paper:+.2f}'


def main(argv=None):
    args = parse_args(argv)
    models = load_models(args.model_index)
    if args.models:
        unknown = sorted(set(args.models) - {m['Name'] for m in models})
        if unknown:
            sys.exit(f'error: no model named {unknown} in {args.model_index}')
        models = [m for m in models if m['Name'] in args.models]
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='paper_tables_')
    header = ('Model', 'Input', 'Params(M)', 'paper', 'diff', 'FLOPs(G)',
              'paper', 'diff', 'Metric', 'paper', 'ours')
    rows = []
    for model in models:
        cfg = Config.fromfile(model['Config'])
        result = model_complexity(cfg)
        meta = model['Metadata']
        params, flops = result['params'] / 1e6, result['flops'] / 1e9
        # Detectors may lack published numbers (DINO's FLOPs): '-'.
        paper_params = meta.get('Parameters')
        paper_flops = meta.get('FLOPs')
        metric, paper_value = paper_metric(model)
        measured = '-'
        if args.checkpoint_dir:
            path, official = find_checkpoint(model, args.checkpoint_dir)
            measured = 'no checkpoint'
            if path:
                value = evaluate(model, path, official, args.cfg_options,
                                 work_dir)
                measured = f'{value:.2f}'
        h, w = result['shape']
        pp = paper_params / 1e6 if paper_params else None
        pf = paper_flops / 1e9 if paper_flops else None
        rows.append((model['Name'], f'{h}x{w}', f'{params:.2f}',
                     f'{pp:.2f}' if pp else '-',
                     fmt_diff(params, pp) if pp else '-', f'{flops:.2f}',
                     f'{pf:.1f}' if pf else '-',
                     fmt_diff(flops, pf, percent=True) if pf else '-',
                     metric, f'{paper_value}', measured))
        print(' | '.join(rows[-1]), file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in rows + [header])
              for i in range(len(header))]
    for i, row in enumerate([header] + rows):
        print('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) +
              ' |')
        if i == 0:
            print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    if not args.work_dir and os.path.isdir(work_dir) and not os.listdir(
            work_dir):
        os.rmdir(work_dir)


if __name__ == '__main__':
    main()
