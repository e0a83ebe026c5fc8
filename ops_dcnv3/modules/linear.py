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
tensors, no hooks on the modules (hooks would not fire), no CPU autocast
(which casts ``F.linear``'s inputs and would not cast these), and not while
tracing, scripting or exporting (``torch.jit``, ONNX, ``torch.export``:
those see ``F.linear``, which they know how to count and export).
``torch.compile`` of an inference graph keeps the oneDNN op (inductor has a
lowering for it and fuses the elementwise ops around it); a compiled graph
that needs gradients gets ``F.linear``. Everywhere else it calls the
modules.

Where a gradient is asked for (eager training), the oneDNN op has no
autograd formula of its own: :class:`_OneDNNLinear` gives it one. Its
forward and its input gradient (``grad_out @ weight``) run on oneDNN, the
weight gradient (``grad_out^T @ x``) on the BLAS as ``F.linear``'s backward
does (oneDNN would need the two large operands transposed); the activation
stays a module of its own, whose backward needs its input. On this project's
host that made a layer's three GEMMs 1.3-1.5x faster at InternImage-T's
shapes (a throwaway script; ``tools/benchmark_models.py`` times whole
training steps). Under ``create_graph=True`` the input
gradient is an ordinary matmul, so that second derivatives are those of
``F.linear``.
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


def _route(x, fc, act):
    """How :func:`linear` runs for these arguments: ``'inference'`` (oneDNN,
    activation fused), ``'training'`` (oneDNN with autograd, activation
    after it) or None (the modules)."""
    if not (_LINEAR_POINTWISE is not None
            and x.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.bfloat16)
            and fc.weight.dtype == x.dtype
            and x.is_contiguous()
            and _no_hooks(fc)
            and not torch.is_autocast_enabled('cpu')
            and not torch.jit.is_scripting()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_exporting()
            and not torch.onnx.is_in_onnx_export()):
        return None
    if not (torch.is_grad_enabled()
            and (x.requires_grad or fc.weight.requires_grad
                 or (fc.bias is not None and fc.bias.requires_grad))):
        return 'inference' if _fusable_activation(act) is not None else None
    if torch.compiler.is_compiling():
        return None
    return 'training'


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight^T + bias`` on oneDNN, with its gradients (see the module
    docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _LINEAR_POINTWISE(x, weight, bias, 'none', [], '')

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():
                # create_graph=True: ops that autograd can differentiate
                # again, so that second derivatives are right.
                grad_x = grad.matmul(weight)
            else:
                grad_x = _LINEAR_POINTWISE(grad, weight.t().contiguous(), None,
                                           'none', [], '')
        flat = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_weight = flat.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat.sum(0)
        return grad_x, grad_weight, grad_bias


def uses_onednn(x, fc, act=None):
    """Whether :func:`linear` takes the oneDNN route for these arguments."""
    return _route(x, fc, act) is not None


def linear(x, fc, act=None):
    """``act(fc(x))`` (``fc(x)`` when ``act`` is None) for an ``nn.Linear``
    ``fc`` and an activation module ``act``; on oneDNN where
    :func:`uses_onednn` allows (in one pass for inference), else through the
    modules."""
    route = _route(x, fc, act)
    if route == 'inference':
        attr, algorithm = _fusable_activation(act)
        return _LINEAR_POINTWISE(x, fc.weight, fc.bias, attr, [], algorithm)
    y = _OneDNNLinear.apply(x, fc.weight, fc.bias) if route == 'training' else fc(x)
    return y if act is None else act(y)


__all__ = ['linear', 'uses_onednn']
