# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Export an InternImage model to ONNX, in standard operators only, and check
the file in ONNX Runtime.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
        [--opset N] [--exporter {torchscript,dynamo}] [--batch N]
        [--cfg-options KEY=VALUE ...]

What the graph computes follows the config's library (its default_scope):

- mmpretrain classifiers (``ImageClassifier``): the normalised image tensor
  (N, 3, H, W) -> the logits (N, num_classes), as mmdeploy's classifiers;
  the preprocessing (resize, crop, mean/std) stays outside the graph;
- mmseg segmentors (``EncoderDecoder``: UperNet, Mask2Former): the
  normalised image -> the segmentation logits (N, num_classes, H, W) of
  whole-image inference (``EncoderDecoder.encode_decode``);
- mmdet detectors: the backbone and neck only (the tuple of FPN levels);
  the detection heads' post-processing is not exported (see README).

Batch, height and width are dynamic axes. The file is checked with
``onnx.checker``, run once in ONNX Runtime (CPU) on a random input of
another batch size, and the largest difference from PyTorch is printed.
CHECKPOINT is one that ``mmengine.runner.load_checkpoint`` loads strictly
into the config's model: written by tools/convert_checkpoint.py from an
official checkpoint, or by tools/train.py. Needs the ``deploy`` extra
(``pip install .[deploy]``: onnx, onnxruntime, onnxscript).
"""
import argparse
import os.path as osp
import sys
import warnings

import numpy as np
import torch
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from internimage.checkpoint import CheckpointError  # noqa: E402
from internimage.complexity import build_from_config  # noqa: E402
from internimage.complexity import test_shape as config_test_shape  # noqa: E402
from mm_common import allow_mmengine_checkpoints, library_of  # noqa: E402

#: What each library's models export as.
KINDS = {
    'mmpretrain': 'classifier logits',
    'mmseg': 'segmentation logits',
    'mmdet': 'backbone + neck features',
}


class ExportError(ValueError):
    """A config, checkpoint or model that this tool cannot export."""


# ----------------------------------------------------------- the graphs
class ClassifierLogits(nn.Module):
    """mmpretrain ``ImageClassifier``: image -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        return self.model(inputs, mode='tensor')


class SegmentorLogits(nn.Module):
    """mmseg ``EncoderDecoder``: image -> segmentation logits at the image's
    size (whole-image inference; padding and resizing back to the original
    image stay outside, with the preprocessing)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        size = inputs.shape[2:]
        return self.model.encode_decode(
            inputs, [dict(img_shape=size, pad_shape=size)])


class Features(nn.Module):
    """Backbone (+ neck): image -> tuple of feature maps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        return tuple(self.model.extract_feat(inputs))


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that exports for any input size.

    Both of torch's exporters turn adaptive pooling to an output larger than
    1x1 into an ``AveragePool`` whose kernel is fixed by the example input
    (the TorchScript one refuses a dynamic size; the dynamo one silently
    gives wrong values at other sizes). While exporting, this computes the
    same bins (rows ``floor(i*H/out)`` to ``ceil((i+1)*H/out)``, likewise
    columns) as two matrix products with averaging matrices built from the
    input's size; otherwise it is PyTorch's own pooling.
    """

    def forward(self, x):
        if not torch.onnx.is_in_onnx_export():
            return super().forward(x)
        out_h, out_w = ((self.output_size, ) * 2 if isinstance(
            self.output_size, int) else self.output_size)
        rows = self._bins(x.shape[-2], out_h or x.shape[-2], x)
        cols = self._bins(x.shape[-1], out_w or x.shape[-1], x)
        return rows @ x @ cols.transpose(0, 1)

    @staticmethod
    def _bins(size, out, like):
        """(out, size) matrix whose row i averages bin i."""
        i = torch.arange(out, device=like.device)
        start = torch.div(i * size, out, rounding_mode='floor')
        end = torch.div((i + 1) * size + out - 1, out, rounding_mode='floor')
        j = torch.arange(size, device=like.device)
        inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])
        return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def exportable(model, library):
    """Wrap an OpenMMLab model into the module whose graph is exported, in
    eval mode (torch.onnx.export restores the wrapper's mode to the whole
    model afterwards). Adaptive average pools to more than 1x1 (UperNet's
    pyramid pooling) become :class:`AdaptiveAvgPool2d`."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.AdaptiveAvgPool2d and child.output_size not in (
                    1, (1, 1)):
                setattr(module, name, AdaptiveAvgPool2d(child.output_size))
    return _wrap(model, library).eval()


def _wrap(model, library):
    name = type(model).__name__
    if library == 'mmpretrain':
        if not hasattr(model, 'head') or not hasattr(model, 'extract_feat'):
            raise ExportError(
                f'mmpretrain model {name} is not a classifier with a head '
                '(ImageClassifier); only classifiers are exported')
        return ClassifierLogits(model)
    if library == 'mmseg':
        if not hasattr(model, 'encode_decode'):
            raise ExportError(
                f'mmseg model {name} has no encode_decode(); only '
                'EncoderDecoder segmentors (UperNet, Mask2Former) are '
                'exported')
        return SegmentorLogits(model)
    if library == 'mmdet':
        if not hasattr(model, 'extract_feat'):
            raise ExportError(f'mmdet model {name} has no extract_feat()')
        return Features(model)
    raise ExportError(f'unsupported library {library!r}')


def output_names(module, inputs):
    with torch.no_grad():
        out = module(inputs)
    if isinstance(out, torch.Tensor):
        return ['logits']
    return [f'feat{i}' for i in range(len(out))]


# ----------------------------------------------------------- the export
def export(module, inputs, out_file, opset=None, exporter='torchscript'):
    """Export ``module(inputs)`` to ``out_file`` with dynamic batch, height
    and width; returns the output names."""
    import ops_dcnv3.onnx  # noqa: F401  (registers the TorchScript symbolic)
    names = output_names(module, inputs)
    big = sum(p.numel() * p.element_size()
              for p in module.parameters()) > 1.8 * 2**30
    if exporter == 'torchscript':
        axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
        axes.update({n: {0: 'batch'} for n in names})
        with warnings.catch_warnings():
            # the deprecation notice, and tracer warnings about shape checks
            # in Python (which are constants for a given model)
            warnings.simplefilter('ignore')
            torch.onnx.export(module, (inputs, ), out_file, dynamo=False,
                              opset_version=opset or 17,
                              input_names=['input'], output_names=names,
                              dynamic_axes=axes)
    elif exporter == 'dynamo':
        dim = torch.export.Dim.DYNAMIC
        torch.onnx.export(
            module, (inputs, ), out_file, dynamo=True, opset_version=opset,
            input_names=['input'], output_names=names,
            dynamic_shapes=({0: dim, 2: dim, 3: dim}, ),
            custom_translation_table=ops_dcnv3.onnx.custom_translation_table(),
            external_data=big, verbose=False)
    else:
        raise ExportError(f'unknown exporter {exporter!r}')
    return names


def check(out_file, module, inputs):
    """``onnx.checker`` and one ONNX Runtime run; returns ``(abs, rel)``,
    the largest absolute difference from PyTorch and it relative to the
    largest PyTorch output. Raises ExportError on a non-standard operator."""
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(out_file, full_check=True)
    model = onnx.load(out_file, load_external_data=False)
    custom = sorted({f'{n.domain}::{n.op_type}' for n in model.graph.node
                     if n.domain not in ('', 'ai.onnx')})
    if custom:
        raise ExportError(f'{out_file}: non-standard operators {custom}')
    session = ort.InferenceSession(out_file,
                                   providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': inputs.numpy()})
    with torch.no_grad():
        want = module(inputs)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    worst_abs = worst_rel = 0.0
    for g, w in zip(got, want):
        w = w.numpy()
        if g.shape != w.shape:
            raise ExportError(f'ONNX Runtime output of shape {g.shape}, '
                              f'PyTorch {w.shape}')
        diff = float(np.abs(g - w).max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.abs(w).max()), 1e-12))
    return worst_abs, worst_rel


# ------------------------------------------------------------ the tool
def example_shape(cfg):
    """(H, W) to export at: a segmentor's crop size, else the test size of
    the config's pipeline, else 224 x 224."""
    size = cfg.model.get('data_preprocessor', {}).get('size')
    if size:
        return tuple(size)
    try:
        return config_test_shape(cfg)
    except ValueError:
        return 224, 224


def load_model(cfg, checkpoint):
    """The config's model with the checkpoint loaded strictly, in eval
    mode on the CPU."""
    from mmengine.runner import load_checkpoint
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    cfg.model.pop('init_cfg', None)
    if cfg.model.get('backbone'):
        cfg.model.backbone.pop('init_cfg', None)
    model = build_from_config(cfg, device='cpu')
    allow_mmengine_checkpoints()
    try:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                        logger='silent')
    except RuntimeError as e:
        raise CheckpointError(
            f'{checkpoint} does not fit the model of the config (an official '
            'checkpoint needs `python tools/convert_checkpoint.py` first): '
            f'{str(e)[:600]}') from e
    return model.eval()


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmpretrain, mmseg or mmdet config')
    parser.add_argument('checkpoint', help='checkpoint of the config')
    parser.add_argument('out', help='the ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="example input size (dynamic anyway); default: "
                        "a segmentor's crop size, else the config's test "
                        "size, else 224 224")
    parser.add_argument('--batch', type=int, default=2,
                        help='example batch size (dynamic anyway)')
    parser.add_argument('--opset', type=int, default=None,
                        help='ONNX opset (>= 16, the first with GridSample); '
                        'default: 17 for torchscript, torch\'s for dynamo')
    parser.add_argument('--exporter', choices=['torchscript', 'dynamo'],
                        default='torchscript',
                        help="torch.onnx's exporter (dynamo=False or True)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    try:
        if not osp.isfile(args.config):
            raise FileNotFoundError(f'config file not found: {args.config}')
        if args.opset is not None and args.opset < 16:
            raise ExportError(f'--opset {args.opset}: DCNv3 needs GridSample, '
                              'which ONNX has from opset 16')
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        library = library_of(cfg)
        height, width = args.shape or example_shape(cfg)
        model = load_model(cfg, args.checkpoint)
        module = exportable(model, library)
        torch.manual_seed(0)
        inputs = torch.randn(args.batch, 3, height, width)
        names = export(module, inputs, args.out, args.opset, args.exporter)
        check_inputs = torch.randn(args.batch + 1, 3, height, width)
        worst_abs, worst_rel = check(args.out, module, check_inputs)
    except (CheckpointError, ExportError, FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(f'{args.out}: {KINDS[library]} of {type(model).__name__}, '
          f'input (batch, 3, height, width), outputs {names}, exported at '
          f'{args.batch}x3x{height}x{width} with the {args.exporter} exporter')
    print(f'ONNX Runtime vs PyTorch at batch {args.batch + 1}: largest '
          f'difference {worst_abs:.3g} ({worst_rel:.3g} of the largest '
          'output)')


if __name__ == '__main__':
    main()
