# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""``nn.Linear`` (and the activation after it) for CPU inference on oneDNN.

On the CPU, ``F.linear`` with a bias runs as ``addmm``: a pass that copies
the broadcast bias into the output, then the BLAS GEMM (MKL in PyTorch's
x86 wheels), then the activation as a pass of its own. oneDNN's linear
primitive (``torch.ops.mkldnn._linear_pointwise``, the op inductor emits for
frozen CPU graphs) adds the bias and applies GELU, ReLU or SiLU inside the
GEMM: one pass over the output instead of three. On the 2-core AMD EPYC host
of this project it also ran the GEMMs of InternImage-T about 2x faster than
MKL (``tools/benchmark_models.py`` shows the whole model).

:func:`linear` takes that route only where it gives the same answer as the
modules (up to the GEMM's rounding) and nothing is lost: fp32 or bf16 CPU
tensors, no gradient asked for (the oneDNN op has no autograd formula), no
hooks on the modules (hooks would not fire), and not while tracing,
scripting or exporting (``torch.jit``, ONNX, ``torch.export``: those see
``F.linear``, which they know how to count and export). ``torch.compile``
of an inference graph keeps the oneDNN op (inductor has a lowering for it
and fuses the elementwise ops around it); a graph that needs gradients gets
``F.linear``. Everywhere else it calls the modules.
"""
import torch
from torch import nn

# oneDNN's name for each activation module it can fuse, with its arguments
# (GELU's 'none' is the exact, erf form of nn.GELU()).
_ACTIVATIONS = {
    nn.GELU: ('gelu', 'none'),
    nn.ReLU: ('relu', ''),
    nn.SiLU: ('swish', ''),
}


def _onednn_linear():
    op = getattr(torch.ops.mkldnn, '_linear_pointwise', None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    return op


_LINEAR_POINTWISE = _onednn_linear()


def _no_hooks(module):
    return not (module._forward_hooks or module._forward_pre_hooks)


def _fusable_activation(act):
    """oneDNN's (attr, algorithm) for ``act``, or None."""
    if act is None:
        return 'none', ''
    spec = _ACTIVATIONS.get(type(act))
    if spec is None or not _no_hooks(act):
        return None
    if isinstance(act, nn.GELU) and act.approximate != 'none':
        return 'gelu', act.approximate
    return spec


def _onednn_activation(x, fc, act):
    """oneDNN's (attr, algorithm) for ``act`` where :func:`linear` takes
    the oneDNN route for these arguments, else None."""
    if not (_LINEAR_POINTWISE is not None
            and x.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.bfloat16)
            and fc.weight.dtype == x.dtype
            and x.is_contiguous()
            and not (torch.is_grad_enabled()
                     and (x.requires_grad or fc.weight.requires_grad))
            and _no_hooks(fc)
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_exporting()
            and not torch.onnx.is_in_onnx_export()):
        return None
    return _fusable_activation(act)


def uses_onednn(x, fc, act=None):
    """Whether :func:`linear` takes the oneDNN route for these arguments."""
    return _onednn_activation(x, fc, act) is not None


def linear(x, fc, act=None):
    """``act(fc(x))`` (``fc(x)`` when ``act`` is None) for an ``nn.Linear``
    ``fc`` and an activation module ``act``; on oneDNN in one pass where
    :func:`uses_onednn` allows, else through the modules."""
    spec = _onednn_activation(x, fc, act)
    if spec is None:
        y = fc(x)
        return y if act is None else act(y)
    return _LINEAR_POINTWISE(x, fc.weight, fc.bias, spec[0], [], spec[1])


__all__ = ['linear', 'uses_onednn']
