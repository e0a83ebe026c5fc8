# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""DCNv3 in standard ONNX operators, for both of torch's ONNX exporters.

The op's forward is bilinear sampling with zero padding at P points per
output pixel and group, weighted and summed: ONNX ``GridSample`` (opset 16+,
``bilinear``/``linear`` mode, ``zeros`` padding, ``align_corners=0``) plus
reshapes, transposes, multiplications and one ``ReduceSum``, which ONNX
Runtime, TensorRT (>= 8.5) and OpenVINO implement. No custom ONNX domain and
no plugin. Both variants of the op are translated: the official semantics
(``mask`` holds the weights) and ``mask_softmax=True`` (``mask`` holds
logits; an ONNX ``Softmax`` over each group's points comes first).

One graph (:func:`build_graph`) serves both exporters:

- the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, which
  mmdeploy uses): ``import ops_dcnv3`` registers :func:`dcnv3_symbolic` for
  ``ops_dcnv3::dcnv3_forward`` from opset 16 on, needing only torch (not
  ``onnx``), so a plain export of a model that uses the op just works;
- the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's
  default) has no global registry for custom ops: pass the table,
  ``torch.onnx.export(model, args, f, dynamo=True,
  custom_translation_table=ops_dcnv3.onnx.custom_translation_table())``
  (:func:`dcnv3_onnxscript`, needs ``onnxscript``, which that exporter
  needs anyway). Without it the export stops at its step 3 with "No
  ONNX function found for <OpOverload(op='ops_dcnv3.dcnv3_forward', ...)>".
  (Registering the reference as a ``torch._decomp`` decomposition would
  make it work without the table, but fake tensors with symbolic shapes then
  run that decomposition instead of the op's fake kernel, also under
  ``torch.compile``, and it fails with ``remove_center``; importing
  onnxscript to fill torch's private ONNX registry would cost ~1 s at every
  ``import ops_dcnv3``.)

Half-precision inputs are computed in float32 (``Cast``), as the kernels do.
"""
import numpy as np
import torch

from .reference import kernel_points

#: The op's qualified name (schema in ``csrc/dcnv3.cpp``).
OP_NAME = 'ops_dcnv3::dcnv3_forward'
#: The first opset with ``GridSample``.
MIN_OPSET = 16

# ONNX TensorProto data types used here.
_FLOAT, _FLOAT16, _DOUBLE, _BFLOAT16 = 1, 10, 11, 16
_NUMPY = {_FLOAT: np.float32, _DOUBLE: np.float64}


def build_graph(b, input, offset, mask, kernel_h, kernel_w, stride_h,
                stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                group_channels, offset_scale, remove_center, mask_softmax,
                dtype, opset):
    """Emit the DCNv3 forward through builder ``b`` and return its output.

    ``b`` offers ``b.op(op_type, *inputs, **attributes)`` and
    ``b.const(numpy_array)``; the exporters' adapters below implement it.
    ``dtype`` is the ONNX data type of the inputs, ``opset`` the target
    opset (``GridSample``'s mode is ``bilinear`` before 20, ``linear``
    from 20). Shapes: see ``docs/dcnv3_op.md``; N, H, W and the output size
    are taken from the tensors at run time, so every one of them may be a
    dynamic axis.
    """
    if dtype not in (_FLOAT, _DOUBLE, _FLOAT16, _BFLOAT16):
        raise TypeError(f'DCNv3 ONNX export: unsupported input data type '
                        f'{dtype} (ONNX enum); float32, float64, float16 '
                        'and bfloat16 are supported')
    compute = dtype if dtype in _NUMPY else _FLOAT
    npdt = _NUMPY[compute]
    if compute != dtype:
        input, offset, mask = (b.op('Cast', t, to=compute)
                               for t in (input, offset, mask))
    ints = lambda *v: b.const(np.array(v, np.int64))  # noqa: E731
    zero, one, two = (b.const(np.array(v, np.int64)) for v in (0, 1, 2))
    reals = lambda v: b.const(np.asarray(v, npdt))  # noqa: E731
    px, py = (t.numpy() for t in kernel_points(
        kernel_h, kernel_w, dilation_h, dilation_w, bool(remove_center)))
    points = len(px)

    # Values, one image per (n, g): (N*G, D, H, W).
    # (Shape's start/end attributes would be shorter, but the TorchScript
    # exporter's shape inference ignores them and then crashes.)
    shape_in, shape_out = b.op('Shape', input), b.op('Shape', offset)
    size_hw = b.op('Gather', shape_in, ints(1, 2))
    values = b.op('Reshape', input, ints(0, 0, 0, group, -1))
    values = b.op('Transpose', values, perm=[0, 3, 4, 1, 2])
    values = b.op('Reshape', values,
                  b.op('Concat', ints(-1, group_channels), size_hw, axis=0))

    # GridSample coordinates (align_corners=0: pixel i sits at (2i+1)/size-1)
    #   gx = (2 * (j*stride_w - pad_w + cx + s*(px + offset_x)) + 1) / W - 1
    # written as offset * (2s / [W, H]) + bias, where the bias (1, Ho, Wo,
    # 1, P, 2) holds the output pixel and the fixed kernel point.
    out_h = b.op('Gather', shape_out, ints(1))
    out_w = b.op('Gather', shape_out, ints(2))
    rows = b.op('Cast', b.op('Range', zero, b.op('Gather', shape_out, one),
                             one), to=compute)
    cols = b.op('Cast', b.op('Range', zero, b.op('Gather', shape_out, two),
                             one), to=compute)
    cx = (dilation_w * (kernel_w - 1)) // 2
    cy = (dilation_h * (kernel_h - 1)) // 2
    kernel_xy = np.stack([2 * (cx - pad_w + offset_scale * px) + 1,
                          2 * (cy - pad_h + offset_scale * py) + 1], -1)
    bias = b.op('Add', b.op('Mul', b.op('Reshape', cols, ints(1, 1, -1, 1, 1, 1)),
                            reals([2.0 * stride_w, 0.0])),
                b.op('Mul', b.op('Reshape', rows, ints(1, -1, 1, 1, 1, 1)),
                     reals([0.0, 2.0 * stride_h])))
    bias = b.op('Add', bias, reals(kernel_xy.reshape(1, 1, 1, 1, points, 2)))
    size_wh = b.op('Cast', b.op('Gather', shape_in, ints(2, 1)), to=compute)
    inv_wh = b.op('Reciprocal', size_wh)
    bias = b.op('Sub', b.op('Mul', bias, inv_wh), reals(1.0))
    grid = b.op('Reshape', offset, ints(0, 0, 0, group, -1, 2))
    grid = b.op('Add', b.op('Mul', grid,
                            b.op('Mul', inv_wh, reals(2.0 * offset_scale))),
                bias)
    # (N, Ho, Wo, G, P, 2) -> (N*G, Ho*Wo, P, 2)
    out_hw = b.op('Mul', out_h, out_w)
    grid = b.op('Transpose', grid, perm=[0, 3, 1, 2, 4, 5])
    grid = b.op('Reshape', grid,
                b.op('Concat', ints(-1), out_hw, ints(points, 2), axis=0))
    sampled = b.op('GridSample', values, grid, align_corners=0,
                   mode='bilinear' if opset < 20 else 'linear',
                   padding_mode='zeros')  # (N*G, D, Ho*Wo, P)

    # Weights (N*G, 1, Ho*Wo, P), softmaxed over the points if asked.
    weights = b.op('Reshape', mask, ints(0, 0, 0, group, -1))
    if mask_softmax:
        weights = b.op('Softmax', weights, axis=-1)
    weights = b.op('Transpose', weights, perm=[0, 3, 1, 2, 4])
    weights = b.op('Reshape', weights,
                   b.op('Concat', ints(-1, 1), out_hw, ints(points), axis=0))

    out = b.op('ReduceSum', b.op('Mul', sampled, weights), ints(3),
               keepdims=0)  # (N*G, D, Ho*Wo)
    out = b.op('Reshape', out, b.op('Concat', ints(-1, group, group_channels),
                                    out_h, out_w, axis=0))
    out = b.op('Transpose', out, perm=[0, 3, 4, 1, 2])  # (N, Ho, Wo, G, D)
    out = b.op('Reshape', out, ints(0, 0, 0, -1))
    if compute != dtype:
        out = b.op('Cast', out, to=dtype)
    return out


# ------------------------------------------------------ TorchScript exporter
class _TorchScriptBuilder:
    """:func:`build_graph`'s builder on a TorchScript ``GraphContext``."""

    _SUFFIX = {bool: 'i', int: 'i', float: 'f', str: 's'}

    def __init__(self, g):
        self.g = g

    def op(self, op_type, *inputs, **attrs):
        named = {}
        for name, value in attrs.items():
            kind = type(value[0] if isinstance(value, list) else value)
            named[f'{name}_{self._SUFFIX[kind]}'] = value
        return self.g.op(op_type, *inputs, **named)

    def const(self, array):
        return self.g.op('Constant', value_t=torch.from_numpy(np.array(array)))


#: TorchScript scalar type names -> ONNX data types (an unknown type is
#: taken for float32; build_graph refuses the ones it cannot compute).
_SCALAR_TYPES = {'Float': _FLOAT, 'Double': _DOUBLE, 'Half': _FLOAT16,
                 'BFloat16': _BFLOAT16}


def dcnv3_symbolic(g, input, offset, mask, kernel_h, kernel_w, stride_h,
                   stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                   group_channels, offset_scale, im2col_step, remove_center,
                   mask_softmax=None):
    """TorchScript-exporter symbolic of ``ops_dcnv3::dcnv3_forward``."""
    from torch.onnx import symbolic_helper as sh
    ints = [sh._get_const(v, 'i', name) for v, name in (
        (kernel_h, 'kernel_h'), (kernel_w, 'kernel_w'),
        (stride_h, 'stride_h'), (stride_w, 'stride_w'), (pad_h, 'pad_h'),
        (pad_w, 'pad_w'), (dilation_h, 'dilation_h'),
        (dilation_w, 'dilation_w'), (group, 'group'),
        (group_channels, 'group_channels'))]
    scale = sh._get_const(offset_scale, 'f', 'offset_scale')
    center = sh._get_const(remove_center, 'b', 'remove_center')
    softmax = (False if mask_softmax is None or sh._is_none(mask_softmax)
               else sh._get_const(mask_softmax, 'b', 'mask_softmax'))
    dtype = _SCALAR_TYPES.get(input.type().scalarType(), _FLOAT)
    return build_graph(_TorchScriptBuilder(g), input, offset, mask, *ints,
                       scale, bool(center), bool(softmax), dtype, g.opset)


# ----------------------------------------------------------- dynamo exporter
class _OnnxScriptBuilder:
    """:func:`build_graph`'s builder on onnxscript's ops (traced by the
    dynamo exporter, which converts the opset-18 nodes to the target
    opset)."""

    def __init__(self):
        import onnx_ir as ir
        from onnxscript import opset18
        self.opset, self.ir = opset18, ir

    def op(self, op_type, *inputs, **attrs):
        return getattr(self.opset, op_type)(*inputs, **attrs)

    def const(self, array):
        return self.opset.Constant(value=self.ir.tensor(np.array(array)))


def dcnv3_onnxscript(input, offset, mask, kernel_h: int, kernel_w: int,
                     stride_h: int, stride_w: int, pad_h: int, pad_w: int,
                     dilation_h: int, dilation_w: int, group: int,
                     group_channels: int, offset_scale: float,
                     im2col_step: int, remove_center: bool,
                     mask_softmax: bool = False):
    """Dynamo-exporter translation of ``ops_dcnv3::dcnv3_forward``."""
    return build_graph(_OnnxScriptBuilder(), input, offset, mask, kernel_h,
                       kernel_w, stride_h, stride_w, pad_h, pad_w,
                       dilation_h, dilation_w, group, group_channels,
                       offset_scale, bool(remove_center), bool(mask_softmax),
                       int(input.dtype), 18)


def custom_translation_table():
    """``{op: translation}`` for ``torch.onnx.export(..., dynamo=True,
    custom_translation_table=...)``."""
    return {torch.ops.ops_dcnv3.dcnv3_forward.default: dcnv3_onnxscript}


# ---------------------------------------------------------------- register
_registered = False


def register():
    """Register :func:`dcnv3_symbolic` with the TorchScript exporter
    (idempotent; ``import ops_dcnv3`` calls it once the compiled op is
    loaded). The dynamo exporter takes :func:`custom_translation_table`."""
    global _registered
    if _registered or not hasattr(torch.ops.ops_dcnv3, 'dcnv3_forward'):
        return
    from torch.onnx import register_custom_op_symbolic
    register_custom_op_symbolic(OP_NAME, dcnv3_symbolic, MIN_OPSET)
    _registered = True


register()
