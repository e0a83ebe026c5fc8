# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""ONNX Runtime (CPU) against this project's PyTorch eager: the exported
InternImage-T classifier, and the DCNv3 op alone at T's stage shapes.

The model is exported by tools/export_onnx.py's code (TorchScript exporter,
standard operators: the op is GridSample + reshapes + a reduction) and both
runtimes are timed in the same run, interleaved in rounds (the median over
rounds is reported), with the same number of threads, so that the ratios
hold on a shared, noisy machine.

    python tools/benchmark_onnx.py [--config CONFIG] [--checkpoint CKPT]
        [--shape H W] [--batch N] [--threads N] [--rounds 5] [--json OUT]
"""
import argparse
import json
import os.path as osp
import statistics
import tempfile

import torch

# Sibling tools: found when this runs as a script (its folder is on the path).
from benchmark_dcnv3 import SHAPES, describe_machine, time_once
from export_onnx import export, exportable, load_model

from ops_dcnv3 import dcnv3

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
T_CONFIG = osp.join(ROOT, 'configs', 'mmpretrain',
                    'internimage-t_8xb128_in1k-224px.py')


class _Op(torch.nn.Module):
    def __init__(self, group, channels):
        super().__init__()
        self.args = (3, 3, 1, 1, 1, 1, 1, 1, group, channels // group, 1.0,
                     256, False)

    def forward(self, x, offset, mask):
        return dcnv3(x, offset, mask, *self.args, mask_softmax=True)


def _session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options,
                                providers=['CPUExecutionProvider'])


def _compare(name, size, module, inputs, path, args):
    """Interleaved medians of PyTorch eager and ONNX Runtime."""
    session = _session(path, torch.get_num_threads())
    names = [i.name for i in session.get_inputs()]
    feeds = {n: t.numpy() for n, t in zip(names, inputs)}

    def eager():
        with torch.inference_mode():
            module(*inputs)

    variants = {'pytorch': eager, 'onnxruntime': lambda: session.run(None, feeds)}
    for fn in variants.values():  # warm up
        fn()
    samples = {k: [] for k in variants}
    for _ in range(args.rounds):
        for key, fn in variants.items():
            samples[key].append(time_once(fn, torch.device('cpu'),
                                          args.min_time))
    eager_t = statistics.median(samples['pytorch'])
    ort_t = statistics.median(samples['onnxruntime'])
    return dict(what=name, size=size, pytorch_ms=eager_t * 1e3,
                onnxruntime_ms=ort_t * 1e3, ratio=ort_t / eager_t)


def benchmark(args, tmp):
    from mmengine.config import Config
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    if args.checkpoint:
        model = load_model(cfg, args.checkpoint)
    else:  # random weights: the speed does not depend on them
        from internimage.complexity import build_from_config
        cfg.model.backbone.pop('init_cfg', None)
        torch.manual_seed(0)
        model = build_from_config(cfg, 'cpu').eval()
    module = exportable(model, 'mmpretrain')
    h, w = args.shape
    image = torch.randn(args.batch, 3, h, w)
    path = osp.join(tmp, 'classifier.onnx')
    export(module, torch.randn(2, 3, h, w), path)
    rows = [_compare(f'{osp.basename(args.config)}', f'{args.batch}x3x{h}x{w}',
                     module, (image, ), path, args)]
    for name, n, sh, sw, c, g in SHAPES:
        op = _Op(g, c)
        gen = torch.Generator().manual_seed(0)
        inputs = (torch.randn(n, sh, sw, c, generator=gen),
                  torch.randn(n, sh, sw, g * 18, generator=gen),
                  torch.randn(n, sh, sw, g * 9, generator=gen))
        path = osp.join(tmp, 'op.onnx')
        torch.onnx.export(op, inputs, path, dynamo=False, opset_version=17,
                          input_names=['input', 'offset', 'mask'])
        rows.append(_compare(f'DCNv3 op, {name}',
                             f'{n}x{sh}x{sw}x{c} G{g}', op, inputs, path,
                             args))
    return rows


def main(argv=None):
    import warnings
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=T_CONFIG,
                        help='mmpretrain classifier config (default: T)')
    parser.add_argument('--checkpoint', help='default: random weights')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0,
                        help='threads of both runtimes (default: '
                        "torch's)")
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--min-time', type=float, default=1.0,
                        help='seconds per timing sample')
    parser.add_argument('--json', help='also write the rows to this file')
    args = parser.parse_args(argv)
    warnings.simplefilter('ignore')
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark(args, tmp)
    import onnxruntime
    print(f'CPU ({describe_machine(torch.device("cpu"))}), torch '
          f'{torch.__version__}, onnxruntime {onnxruntime.__version__}; '
          f'median of {args.rounds} interleaved rounds')
    print()
    print('| what | input | PyTorch eager ms | ONNX Runtime ms | '
          'ONNX Runtime / PyTorch |')
    print('|---|---|---:|---:|---:|')
    for r in rows:
        print(f"| {r['what']} | {r['size']} | {r['pytorch_ms']:.2f} | "
              f"{r['onnxruntime_ms']:.2f} | {r['ratio']:.2f}x |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=describe_machine(torch.device('cpu')),
                           rows=rows), f, indent=2)


if __name__ == '__main__':
    main()
