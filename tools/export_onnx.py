# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Export an InternImage model to ONNX, in standard operators only, and check
the file in ONNX Runtime.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--shape H W]
        [--opset N] [--exporter {torchscript,dynamo}] [--batch N] [--whole]
        [--cfg-options KEY=VALUE ...]

What the graph computes follows the config's library (its default_scope):

- mmpretrain classifiers (``ImageClassifier``): the normalised image tensor
  (N, 3, H, W) -> the logits (N, num_classes), as mmdeploy's classifiers;
  the preprocessing (resize, crop, mean/std) stays outside the graph;
- mmseg segmentors (``EncoderDecoder``: UperNet, Mask2Former): the
  normalised image -> the segmentation logits (N, num_classes, H, W) of
  whole-image inference (``EncoderDecoder.encode_decode``);
- mmdet detectors: the backbone and neck (the tuple of FPN levels), or
  with ``--whole`` the whole detector through mmdeploy 1.3.1 (image -> dets
  (N, 100, 5), labels (N, 100), masks (N, 100, 28, 28) for Mask R-CNN), with
  the two changes it needs on torch >= 2.9 (:func:`mmdeploy_workarounds`);
  mmdeploy is installed by tools/setup_env.sh (``pip install --no-deps
  mmdeploy==1.3.1 aenum multiprocess dill``: it pins an old protobuf).

Batch, height and width are dynamic axes. The file is checked with
``onnx.checker``, run once in ONNX Runtime (CPU) on a random input of
another batch size (``--whole``: on an image of another size, against
mmdeploy's own PyTorch forward), and the largest difference from PyTorch is
printed.
CHECKPOINT is one that ``mmengine.runner.load_checkpoint`` loads strictly
into the config's model: written by tools/convert_checkpoint.py from an
official checkpoint, or by tools/train.py. Needs the ``deploy`` extra
(``pip install .[deploy]``: onnx, onnxruntime, onnxscript).
"""
import argparse
import contextlib
import copy
import functools
import os
import os.path as osp
import sys
import warnings

import numpy as np
import torch
from torch import nn

from internimage.checkpoint import CheckpointError
from internimage.complexity import build_from_config
from internimage.complexity import test_shape as config_test_shape
from internimage.runner import allow_mmengine_checkpoints, library_of

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


def _check_standard(out_file):
    """``onnx.checker``, and only operators of the standard domain."""
    import onnx
    onnx.checker.check_model(out_file, full_check=True)
    model = onnx.load(out_file, load_external_data=False)
    custom = sorted({f'{n.domain}::{n.op_type}' for n in model.graph.node
                     if n.domain not in ('', 'ai.onnx')})
    if custom:
        raise ExportError(f'{out_file}: non-standard operators {custom}')


def _largest_difference(got, want):
    """Largest absolute difference of ONNX Runtime's outputs from
    PyTorch's, and it relative to the largest PyTorch output."""
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    worst_abs = worst_rel = 0.0
    for g, w in zip(got, want):
        w = w.numpy()
        if g.shape != w.shape:
            raise ExportError(f'ONNX Runtime output of shape {g.shape}, '
                              f'PyTorch {w.shape}')
        diff = float(np.abs(g.astype(np.float64) - w).max())
        worst_abs = max(worst_abs, diff)
        worst_rel = max(worst_rel, diff / max(float(np.abs(w).max()), 1e-12))
    return worst_abs, worst_rel


def check(out_file, module, inputs):
    """``onnx.checker`` and one ONNX Runtime run; returns ``(abs, rel)``
    (see :func:`_largest_difference`). Raises ExportError on a non-standard
    operator."""
    import onnxruntime as ort
    _check_standard(out_file)
    session = ort.InferenceSession(out_file,
                                   providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': inputs.numpy()})
    with torch.no_grad():
        want = module(inputs)
    return _largest_difference(got, want)


# ------------------------------------------------ whole detectors: mmdeploy
#: mmdeploy's deploy config for Mask R-CNN-like detectors on ONNX Runtime
#: with dynamic shapes (its instance-seg_onnxruntime_dynamic.py; the wheel
#: ships no configs), at an opset with GridSample.
MMDEPLOY_CFG = dict(
    onnx_config=dict(
        type='onnx', export_params=True, keep_initializers_as_inputs=False,
        opset_version=17, save_file='end2end.onnx', input_names=['input'],
        output_names=['dets', 'labels', 'masks'], input_shape=None,
        optimize=True,
        dynamic_axes=dict(
            input={0: 'batch', 2: 'height', 3: 'width'},
            dets={0: 'batch', 1: 'num_dets'},
            labels={0: 'batch', 1: 'num_dets'},
            masks={0: 'batch', 1: 'num_dets', 2: 'height', 3: 'width'})),
    codebase_config=dict(
        type='mmdet', task='ObjectDetection', model_type='end2end',
        post_processing=dict(
            score_threshold=0.05, confidence_threshold=0.005,
            iou_threshold=0.5, max_output_boxes_per_class=200,
            pre_top_k=5000, keep_top_k=100, background_label_id=-1,
            export_postprocess_mask=False)),
    backend_config=dict(type='onnxruntime'))


@contextlib.contextmanager
def mmdeploy_workarounds():
    """What mmdeploy 1.3.1 (Dec 2023) needs on torch >= 2.9, for the
    duration of an export only:

    - its ``torch.onnx.export`` call takes torch's default exporter, dynamo
      since 2.9, which fails on its inputs ("Detected mismatch between the
      structure of `inputs` and `dynamic_shapes`"): the TorchScript one is
      selected;
    - its RoIAlign symbolic imports ``torch.onnx.symbolic_opset9.
      _cast_Long``, which torch removed: a Cast to int64 stands in.
    """
    import torch.onnx.symbolic_opset9 as opset9
    export_fn = torch.onnx.export
    had_cast = hasattr(opset9, '_cast_Long')
    torch.onnx.export = functools.partial(export_fn, dynamo=False)
    if not had_cast:
        opset9._cast_Long = lambda g, x, non_blocking: g.op('Cast', x, to_i=7)
    try:
        yield
    finally:
        torch.onnx.export = export_fn
        if not had_cast:
            del opset9._cast_Long


def export_detector(config, checkpoint, out_file, shape, opset=None):
    """The whole detector through mmdeploy, checked in ONNX Runtime on an
    image of another size against mmdeploy's PyTorch forward (its heads'
    post-processing); returns ``(names, abs, rel, detections compared)``."""
    import cv2
    import onnxruntime as ort
    from mmengine.config import Config
    try:
        from mmdeploy.apis import build_task_processor, torch2onnx
        from mmdeploy.core import RewriterContext, patch_model
        from mmdeploy.utils import IR
    except ImportError as e:
        raise ExportError(f'--whole needs mmdeploy ({e}): pip install '
                          '--no-deps mmdeploy==1.3.1 aenum multiprocess '
                          'dill') from e
    import ops_dcnv3.onnx  # noqa: F401  (registers the TorchScript symbolic)
    deploy_cfg = Config(copy.deepcopy(MMDEPLOY_CFG))
    deploy_cfg.onnx_config.opset_version = opset or 17
    work_dir = osp.dirname(osp.abspath(out_file))
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate((shape, (shape[0] * 3 // 4, shape[1] + 32))):
        images.append(osp.join(work_dir, f'.export_image{i}.png'))
        cv2.imwrite(images[-1], rng.integers(0, 255, (h, w, 3), np.uint8))
    with warnings.catch_warnings(), mmdeploy_workarounds():
        warnings.simplefilter('ignore')
        torch2onnx(images[0], work_dir, osp.basename(out_file), deploy_cfg,
                   config, checkpoint, device='cpu')
    processor = build_task_processor(Config.fromfile(config), deploy_cfg,
                                     'cpu')
    model = processor.build_pytorch_model(checkpoint)
    data, inputs = processor.create_input(
        images[1], None, data_preprocessor=model.data_preprocessor)
    inputs = inputs[0] if isinstance(inputs, list) else inputs
    patched = patch_model(model, cfg=deploy_cfg, backend='onnxruntime',
                          ir=IR.ONNX)
    with RewriterContext(cfg=deploy_cfg, backend='onnxruntime', ir=IR.ONNX,
                         opset=deploy_cfg.onnx_config.opset_version), \
            torch.no_grad():
        want = patched(inputs, data_samples=data['data_samples'],
                       mode='predict')
    for image in images:
        os.remove(image)
    _check_standard(out_file)
    session = ort.InferenceSession(out_file,
                                   providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': inputs.numpy()})
    # Detections of (nearly) equal score, common with untrained weights,
    # come in either order from the two runtimes' NMS and TopK: compare the
    # ones ranked above the first near-tie.
    scores = want[0][0, :, 4]
    ties = torch.nonzero(scores[:-1] - scores[1:] < 1e-4)
    ranked = int(ties[0]) if len(ties) else len(scores)
    got = [g[:, :ranked] for g in got]
    want = [w[:, :ranked] for w in want]
    return (list(deploy_cfg.onnx_config.output_names),
            *_largest_difference(got, want), ranked)


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
    parser.add_argument('--whole', action='store_true',
                        help='mmdet: the whole detector through mmdeploy '
                        '(default: backbone + neck)')
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
        if args.whole:
            return main_whole(args, cfg, library, (height, width))
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


def main_whole(args, cfg, library, shape):
    if library != 'mmdet':
        raise ExportError(f'--whole is for mmdet detectors; this is a '
                          f'{library} config')
    if args.cfg_options:
        raise ExportError('--whole reads the config file as it is: no '
                          '--cfg-options')
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    names, worst_abs, worst_rel, compared = export_detector(
        args.config, args.checkpoint, args.out, shape, args.opset)
    print(f'{args.out}: the whole {cfg.model.type} through mmdeploy, input '
          f'(batch, 3, height, width), outputs {names}, exported at '
          f'1x3x{shape[0]}x{shape[1]}')
    print('ONNX Runtime vs mmdeploy\'s PyTorch forward on an image of '
          f'another size, over the {compared} best detections (those above '
          'the first near-tie of scores): '
          f'largest difference {worst_abs:.3g} ({worst_rel:.3g} of the '
          'largest output)')


if __name__ == '__main__':
    main()
