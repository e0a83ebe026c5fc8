# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""ONNX export in standard operators, checked in ONNX Runtime: the DCNv3 op
alone (both exporters, both variants), whole classifiers and segmentors
through tools/export_onnx.py, always run at a batch and size other than the
ones exported with."""
import functools
import importlib
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from official_format import OFFICIAL, TINY, official_state_dict, reference_logits


def _require(name):
    """The deploy extra's packages: CI installs them, so a missing one fails
    there instead of skipping."""
    if os.environ.get('CI'):
        return importlib.import_module(name)
    return pytest.importorskip(
        name, reason='needs the deploy extra: pip install .[deploy]')


onnx = _require('onnx')
ort = _require('onnxruntime')
_require('onnxscript')

import ops_dcnv3  # noqa: E402
from ops_dcnv3.onnx import custom_translation_table  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
T_CONFIG = osp.join(ROOT, 'configs', 'mmpretrain',
                    'internimage-t_8xb128_in1k-224px.py')
#: rtol of the issue: the largest difference relative to the largest output.
REL = 1e-4


def rel_error(got, want):
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() /
                 np.abs(want).max())


def run_ort(path, feeds):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, feeds)


# ------------------------------------------------------------- the op
#: (kernel, stride, pad, dilation, group, group_channels, offset_scale,
#: remove_center)
GEOMETRIES = {
    'k3': (3, 1, 1, 1, 4, 8, 1.0, False),
    'k5-s2-d2-rc': (5, 2, 1, 2, 2, 16, 2.0, True),
}


class Op(torch.nn.Module):
    def __init__(self, geometry, mask_softmax):
        super().__init__()
        k, s, p, d, g, c, scale, rc = GEOMETRIES[geometry]
        self.args = (k, k, s, s, p, p, d, d, g, c, scale, 64, rc)
        self.mask_softmax = mask_softmax

    def forward(self, input, offset, mask):
        return ops_dcnv3.dcnv3(input, offset, mask, *self.args,
                               mask_softmax=self.mask_softmax)

    def inputs(self, n, h, w, dtype=torch.float32, seed=0):
        k, _, s, _, p, _, d, _, g, c, _, _, rc = self.args
        ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
        wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1
        points = k * k - int(rc)
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(n, h, w, g * c, generator=gen, dtype=dtype),
                3 * torch.randn(n, ho, wo, g * points * 2, generator=gen,
                                dtype=dtype),
                torch.randn(n, ho, wo, g * points, generator=gen,
                            dtype=dtype))


NAMES = ['input', 'offset', 'mask']


def export_op(op, path, exporter, opset=None):
    args = op.inputs(2, 9, 11)
    if exporter == 'torchscript':
        axes = {name: {0: 'n', 1: f'{name}_h', 2: f'{name}_w'}
                for name in NAMES + ['output']}
        torch.onnx.export(op, args, path, dynamo=False, opset_version=opset,
                          input_names=NAMES, output_names=['output'],
                          dynamic_axes=axes)
    else:
        dim = torch.export.Dim.DYNAMIC
        torch.onnx.export(op, args, path, dynamo=True, opset_version=opset,
                          input_names=NAMES, output_names=['output'],
                          dynamic_shapes=({0: dim, 1: dim, 2: dim}, ) * 3,
                          custom_translation_table=custom_translation_table())


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('exporter,mask_softmax,geometry,opset', [
    ('torchscript', False, 'k3', 16),
    ('torchscript', True, 'k5-s2-d2-rc', 20),
    ('torchscript', False, 'k5-s2-d2-rc', 17),
    ('torchscript', True, 'k3', 18),
    ('dynamo', False, 'k5-s2-d2-rc', None),
    ('dynamo', True, 'k3', 18),
])
def test_op_in_standard_operators(exporter, mask_softmax, geometry, opset,
                                  tmp_path):
    op = Op(geometry, mask_softmax)
    path = str(tmp_path / 'op.onnx')
    export_op(op, path, exporter, opset)
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path)
    assert {n.domain for n in model.graph.node} <= {''}
    types = {n.op_type for n in model.graph.node}
    assert 'GridSample' in types and ('Softmax' in types) == mask_softmax
    version = model.opset_import[0].version
    grid_sample = next(n for n in model.graph.node if n.op_type == 'GridSample')
    mode = {a.name: a.s for a in grid_sample.attribute}['mode']
    assert mode == (b'bilinear' if version < 20 else b'linear')
    # another batch and size than exported with
    args = op.inputs(3, 13, 8, seed=1)
    got, = run_ort(path, {k: v.numpy() for k, v in zip(NAMES, args)})
    assert rel_error(got, op(*args)) < REL


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_half_precision_is_computed_in_float32(tmp_path):
    op = Op('k3', True)
    path = str(tmp_path / 'op.onnx')
    args = op.inputs(2, 6, 7, dtype=torch.float16)
    torch.onnx.export(op, args, path, dynamo=False, opset_version=17,
                      input_names=NAMES)
    casts = [n for n in onnx.load(path).graph.node if n.op_type == 'Cast']
    assert {a.i for n in casts for a in n.attribute} == {
        onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    got, = run_ort(path, {k: v.numpy() for k, v in zip(NAMES, args)})
    assert got.dtype == np.float16
    want = op(*(t.float() for t in args))  # the op's own fp32 math
    assert rel_error(got, want) < 2e-3  # fp16 output rounding


def test_dynamo_without_the_table_names_the_op(tmp_path):
    with pytest.raises(Exception, match=r'ops_dcnv3\.dcnv3_forward'):
        torch.onnx.export(Op('k3', False), Op('k3', False).inputs(1, 5, 5),
                          str(tmp_path / 'op.onnx'), dynamo=True)


def test_import_needs_no_onnx_package():
    """``import ops_dcnv3`` registers the TorchScript symbolic with torch
    alone (the export itself then needs ``onnx``, as every export does)."""
    code = textwrap.dedent('''
        import sys
        for name in ('onnx', 'onnxscript', 'onnxruntime'):
            sys.modules[name] = None  # importing them now fails
        import ops_dcnv3
        from torch.onnx._internal.torchscript_exporter import registration
        assert ops_dcnv3.onnx._registered
        assert registration.registry.is_registered_op(
            'ops_dcnv3::dcnv3_forward', 16)
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == 'ok', out.stderr[-2000:]


# ------------------------------------------------------- whole models
@pytest.fixture
def export_tool(tool):
    return tool('export_onnx')


def test_adaptive_pool_bins_are_pytorchs(export_tool):
    pool = export_tool.AdaptiveAvgPool2d
    for size, out in ((7, 6), (2, 6), (13, 3), (64, 1), (6, 6)):
        x = torch.randn(2, 3, size, size + 3)
        rows = pool._bins(size, out, x)
        cols = pool._bins(size + 3, out, x)
        torch.testing.assert_close(rows @ x @ cols.T,
                                   torch.nn.functional.adaptive_avg_pool2d(
                                       x, out))


def _write_config(path, base, **arch):
    path.write_text(textwrap.dedent(f'''
        _base_ = [{base!r}]
        model = dict(backbone=dict(arch=dict(_delete_=True, **{arch!r})),
                     head=dict(num_classes=10,
                               in_channels={arch['channels'] * 8}))
    '''))
    return str(path)


def test_official_classifier_converted_and_exported_gives_official_logits(
        tmp_path, tool, export_tool, capsys):
    sd = official_state_dict(dtype=torch.float32, num_classes=10, **TINY['t'])
    src, ckpt = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'model': sd}, src)
    tool('convert_checkpoint').main([str(src), str(ckpt)])
    config = _write_config(tmp_path / 'tiny_t.py', T_CONFIG, **TINY['t'])
    out = str(tmp_path / 'tiny_t.onnx')
    export_tool.main([config, str(ckpt), out, '--shape', '64', '64'])
    printed = capsys.readouterr().out
    assert 'classifier logits of ImageClassifier' in printed
    assert 'largest difference' in printed
    x = torch.randn(3, 3, 96, 64)
    got, = run_ort(out, {'input': x.numpy()})
    assert got.shape == (3, 10)
    assert rel_error(got, reference_logits(sd, x, **TINY['t'])) < REL


def _random_checkpoint(config, path):
    """A checkpoint of the config's model with non-zero offsets and masks
    (they start at zero), as train.py would write it."""
    from mmengine.config import Config
    from internimage.complexity import build_from_config
    cfg = Config.fromfile(config)
    cfg.model.backbone.pop('init_cfg', None)
    torch.manual_seed(0)
    model = build_from_config(cfg, 'cpu')
    for name, p in model.named_parameters():
        if '.dcn.offset' in name or '.dcn.mask' in name:
            torch.nn.init.normal_(p, std=0.05)
    torch.save({'state_dict': model.state_dict()}, path)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('exporter', [
    'torchscript', pytest.param('dynamo', marks=pytest.mark.slow)])
def test_internimage_t_classifier(exporter, tmp_path, export_tool):
    """The whole InternImage-T classifier (30 M parameters)."""
    assert OFFICIAL['t']['depths'] == [4, 4, 18, 4]
    ckpt = str(tmp_path / 't.pth')
    _random_checkpoint(T_CONFIG, ckpt)
    from mmengine.config import Config
    model = export_tool.load_model(Config.fromfile(T_CONFIG), ckpt)
    module = export_tool.exportable(model, 'mmpretrain')
    out = str(tmp_path / 't.onnx')
    export_tool.export(module, torch.randn(2, 3, 64, 64), out,
                       exporter=exporter)
    _, rel = export_tool.check(out, module, torch.randn(3, 3, 96, 64))
    assert rel < REL


def _segmentor(name):
    from mmseg_helpers import build, load, set_classes, shrink
    if name == 'upernet':
        cfg = shrink(load('upernet_internimage-t_8xb2-160k_ade20k-512x512.py'))
    else:
        cfg = shrink(load('mask2former_internimage-h_16xb1-80k_'
                          'cocostuff2ade20k-896x896.py'), arch=TINY['h'])
    model = build(set_classes(cfg, 5)).eval()
    for name, p in model.named_parameters():
        if '.dcn.offset' in name or '.dcn.mask' in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('name', ['upernet', 'mask2former'])
def test_segmentor_logits(name, tmp_path, export_tool):
    module = export_tool.exportable(_segmentor(name), 'mmseg')
    out = str(tmp_path / f'{name}.onnx')
    export_tool.export(module, torch.randn(2, 3, 64, 64), out)
    for shape in ((3, 3, 96, 64), (1, 3, 64, 128)):
        x = torch.randn(*shape)
        got, = run_ort(out, {'input': x.numpy()})
        assert got.shape == (shape[0], 5) + shape[2:]
        with torch.no_grad():
            want = module(x)
        assert rel_error(got, want) < REL


# --------------------------------------------------------- bad input
def test_bad_input_gets_a_clear_error(tmp_path, export_tool):
    out = str(tmp_path / 'x.onnx')
    with pytest.raises(SystemExit, match='checkpoint not found: nowhere.pth'):
        export_tool.main([T_CONFIG, 'nowhere.pth', out])
    with pytest.raises(SystemExit, match='config file not found'):
        export_tool.main(['nowhere.py', 'nowhere.pth', out])
    with pytest.raises(SystemExit, match='from opset 16'):
        export_tool.main([T_CONFIG, 'nowhere.pth', out, '--opset', '13'])
    other = tmp_path / 'other.py'
    other.write_text("default_scope = 'mmaction'\nmodel = dict(type='X')\n")
    with pytest.raises(SystemExit, match="default_scope is 'mmaction'"):
        export_tool.main([str(other), 'nowhere.pth', out])
    with pytest.raises(SystemExit, match='--whole is for mmdet detectors'):
        export_tool.main([T_CONFIG, 'nowhere.pth', out, '--whole'])
    wrong = tmp_path / 'wrong.pth'
    torch.save({'model': official_state_dict(num_classes=10, **TINY['t'])},
               wrong)
    with pytest.raises(SystemExit,
                       match='needs `python tools/convert_checkpoint.py`'):
        export_tool.main([T_CONFIG, str(wrong), out])


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_detector_backbone_and_neck(tmp_path, export_tool):
    """mmdet detectors export their backbone + FPN (the whole Mask R-CNN
    needs mmdeploy, see README)."""
    from mmengine.config import Config
    from internimage.complexity import build_from_config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mmdet',
                                   'mask-rcnn_internimage-t_fpn_tiny-coco.py'))
    arch = dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8])
    cfg.model.backbone.update(arch=arch, init_cfg=None)
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    torch.manual_seed(0)
    model = build_from_config(cfg, 'cpu').eval()
    module = export_tool.exportable(model, 'mmdet')
    out = str(tmp_path / 'det.onnx')
    names = export_tool.export(module, torch.randn(2, 3, 64, 64), out)
    assert names == [f'feat{i}' for i in range(5)]  # FPN levels P2-P6
    x = torch.randn(3, 3, 96, 128)
    got = run_ort(out, {'input': x.numpy()})
    with torch.no_grad():
        want = module(x)
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        assert rel_error(g, w) < REL


@pytest.mark.filterwarnings('ignore')
def test_whole_detector_through_mmdeploy(tmp_path, export_tool, capsys):
    """Mask R-CNN (small T backbone) through mmdeploy with the workarounds
    it needs on this torch: standard operators only, dynamic batch and size,
    and the best detections as mmdeploy's PyTorch forward gives them."""
    _require('mmdeploy')
    config = tmp_path / 'mask_rcnn_small.py'
    base = osp.join(ROOT, 'configs', 'mmdet',
                    'mask-rcnn_internimage-t_fpn_tiny-coco.py')
    arch = dict(channels=16, depths=[1, 1, 2, 1], groups=[1, 2, 4, 8])
    config.write_text(textwrap.dedent(f'''
        _base_ = [{base!r}]
        model = dict(backbone=dict(arch=dict(_delete_=True, **{arch!r}),
                                   init_cfg=None),
                     neck=dict(in_channels=[16, 32, 64, 128]))
    '''))
    ckpt = str(tmp_path / 'det.pth')
    _random_checkpoint(str(config), ckpt)
    out = str(tmp_path / 'det.onnx')
    export_tool.main([str(config), ckpt, out, '--whole', '--shape', '96',
                      '128'])
    printed = capsys.readouterr().out
    assert 'the whole MaskRCNN through mmdeploy' in printed
    ranked, rel = re.search(r'over the (\d+) best .* \(([-\de.+]+) of the',
                            printed).groups()
    assert int(ranked) >= 3 and float(rel) < REL
    onnx.checker.check_model(out, full_check=True)
    assert {n.domain for n in onnx.load(out).graph.node} <= {''}
    dets, labels, masks = run_ort(
        out, {'input': np.random.randn(2, 3, 64, 96).astype(np.float32)})
    assert dets.shape == (2, 100, 5) and labels.shape == (2, 100)
    assert masks.shape == (2, 100, 28, 28)
    # the workarounds lasted for the export only
    assert not isinstance(torch.onnx.export, functools.partial)
    assert not hasattr(torch.onnx.symbolic_opset9, '_cast_Long')
