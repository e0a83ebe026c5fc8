# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Convert an official InternImage checkpoint for this project's models.

    python tools/convert_checkpoint.py OFFICIAL OUT.pth

OFFICIAL is an official checkpoint (``.pth``), or an official classifier in
the HuggingFace layout: its ``model.safetensors`` / ``pytorch_model.bin``, or
the folder holding it. The tool detects the checkpoint's kind (see
``internimage.convert.CHECKPOINT_KINDS``) and writes ``{'state_dict': ...,
'meta': ...}`` that ``mmengine.runner.load_checkpoint(model, 'OUT.pth',
strict=True)`` loads into the model of the matching config (classification:
the configs in ``configs/mmpretrain/``). Backbone-only checkpoints need no
conversion: use them with ``init_cfg=dict(type='Pretrained',
checkpoint=...)``.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from internimage.checkpoint import CheckpointError, read_checkpoint
from internimage.convert import (CHECKPOINT_KINDS, convert_checkpoint,
                                 read_class_map)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint (path or URL), '
                        '.safetensors file or HuggingFace model folder')
    parser.add_argument('dst', help='output path')
    parser.add_argument(
        '--key', help="entry holding the weights, e.g. 'model_ema' "
        "(default: 'state_dict', 'model' or 'module', whichever exists)")
    parser.add_argument('--kind', choices=list(CHECKPOINT_KINDS),
                        help='skip detection and convert as this kind')
    parser.add_argument(
        '--map-22k-to-1k', metavar='FILE',
        help='keep only these classifier rows (integers, one per line), e.g. '
        "the official meta_data/map22kto1k.txt to fine-tune a 22K model on "
        'ImageNet-1K as the official code does')
    parser.add_argument(
        '--trust-pickle', action='store_true',
        help='load a checkpoint that holds Python objects besides tensors '
        '(e.g. the training config); only for files you trust')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        rows = (read_class_map(args.map_22k_to_1k)
                if args.map_22k_to_1k else None)
        checkpoint = read_checkpoint(args.src, trust_pickle=args.trust_pickle)
        converted = convert_checkpoint(checkpoint, key=args.key,
                                       kind=args.kind, source=args.src,
                                       class_rows=rows)
    except (CheckpointError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    out_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(out_dir, exist_ok=True)
    torch.save(converted, args.dst)
    kind = converted['meta']['internimage_kind']
    print(f'{args.src}: {kind} checkpoint, {len(converted["state_dict"])} '
          f'tensors written to {args.dst}')


if __name__ == '__main__':
    main()
