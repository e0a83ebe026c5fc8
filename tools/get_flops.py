# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Parameters and FLOPs of a config's model, counted as the paper does.

    python tools/get_flops.py CONFIG [--shape H [W]]

mmengine's FlopAnalyzer (multiply-adds) plus the DCNv3 core as the official
get_flops.py counts it (5 * H * W * K * C per DCNv3 layer). The model is built
on the meta device and counted part by part (internimage.complexity), so
that even InternImage-G needs little memory. The input is one image of the
config's test size (its CenterCrop) unless --shape is given.
"""
import argparse
import sys

from mmengine.config import Config, DictAction

from internimage.complexity import model_complexity


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input height and width (one value: square); '
                        "default: the config's test crop")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.shape and len(args.shape) not in (1, 2):
        sys.exit('error: --shape takes H or H W')
    shape = None
    if args.shape:
        shape = (args.shape[0], args.shape[-1])
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        result = model_complexity(cfg, shape)
    except ValueError as e:
        sys.exit(f'error: {e}')
    h, w = result['shape']
    line = '=' * 40
    print(line)
    print(f'Config: {args.config}')
    print(f'Input shape: (1, 3, {h}, {w})')
    print(f'Params: {result["params"] / 1e6:.2f} M ({result["params"]})')
    print(f'FLOPs: {result["flops"] / 1e9:.2f} G')
    for op, flops in sorted(result['flops_by_operator'].items(),
                            key=lambda kv: -kv[1]):
        print(f'  {op}: {flops / 1e9:.3f} G')
    print(line)
    print('FLOPs are multiply-adds; element-wise operations (activations, '
          'softmax, additions) are not counted, as in the paper.')


if __name__ == '__main__':
    main()
