# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""FLOPs and parameters as the InternImage paper counts them.

FLOPs are mmengine's :class:`~mmengine.analysis.FlopAnalyzer` counts
(multiply-adds of convs, linears and matmuls, plus norms and pooling) with
the DCNv3 core added as the official ``get_flops.py`` does: ``5 * H * W * K *
C`` per DCNv3 call (K = kernel_h * kernel_w, H x W its output).

Models too large for memory are built on the meta device and counted part
by part (:func:`count_flops`): each part that the model's forward calls is
materialised on the CPU with dummy weights and traced on its own, identical
parts (same structure and input shapes) once.
"""
import copy
import warnings
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from torch import nn

#: The compiled DCNv3 op as it appears in jit traces.
DCNV3_OP = 'ops_dcnv3::dcnv3_forward'


def dcnv3_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """The official count of a DCNv3 core: 5 * N * H * W * K * C."""
    n, h, w, c = get_shape(outputs[0])
    kernel_h, kernel_w = inputs[3].toIValue(), inputs[4].toIValue()
    return 5 * n * h * w * kernel_h * kernel_w * c


def _no_flops(inputs: List[Any], outputs: List[Any]) -> int:
    return 0


def flop_analyzer(model: nn.Module, inputs: Tuple,
                  ignored_ops: Sequence[str] = ()) -> FlopAnalyzer:
    """A FlopAnalyzer that counts the DCNv3 core, without its warnings about
    element-wise operators (which the paper does not count either).
    ``ignored_ops`` (e.g. ``'aten::einsum'``) are not counted."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**{DCNV3_OP: dcnv3_flop_jit})
    # A handle that counts nothing: set_op_handle(op=None) does not override
    # a handle mmengine already has (einsum, matmul, ...).
    analyzer.set_op_handle(**{op: _no_flops for op in ignored_ops})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def count_params(model: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------- by parts
def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _signature(obj):
    """Hashable description of the shapes (not values) of an argument."""
    if isinstance(obj, torch.Tensor):
        return ('T', tuple(obj.shape), str(obj.dtype))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_signature(o) for o in obj))
    if isinstance(obj, dict):
        return ('D', tuple((k, _signature(v)) for k, v in sorted(obj.items())))
    return ('V', repr(obj))


def _dummy(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        return torch.randn(t.shape, dtype=t.dtype)
    return torch.zeros(t.shape, dtype=t.dtype)


def _materialise(module: nn.Module) -> nn.Module:
    """A CPU copy of ``module`` with small random weights (values do not
    change the count, they only have to be finite)."""
    if any(p.is_meta for p in module.parameters()) or any(
            b.is_meta for b in module.buffers()):
        module = copy.deepcopy(module).to_empty(device='cpu')
    else:
        module = copy.deepcopy(module).cpu()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.fill_(1.0 if name.endswith('running_var') else 0.0)
            else:
                b.zero_()
    return module.eval()


class _Calls:
    """Every module call of one forward pass, with its arguments."""

    def __init__(self, model: nn.Module, inputs: Tuple):
        self.calls: List[Tuple[str, tuple, dict]] = []
        names = {m: n for n, m in model.named_modules()}
        handles = [
            m.register_forward_pre_hook(self._hook(names[m]), with_kwargs=True)
            for m in names
        ]
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # On the meta device ops_dcnv3 uses its reference (shapes
                # only) and says so.
                warnings.filterwarnings('ignore', 'ops_dcnv3: no compiled')
                model(*inputs)
        finally:
            for h in handles:
                h.remove()
        self.called = {name for name, _, _ in self.calls}

    def _hook(self, name):
        def hook(module, args, kwargs):
            self.calls.append((name, args, kwargs))
        return hook

    def parent(self, name: str) -> Optional[str]:
        """The nearest called ancestor of ``name`` ('' is the model)."""
        parts = name.split('.')
        for i in range(len(parts) - 1, 0, -1):
            candidate = '.'.join(parts[:i])
            if candidate in self.called:
                return candidate
        return '' if name else None

    def children_calls(self, name: str):
        return [(n, a, k) for n, a, k in self.calls
                if n != name and self.parent(n) == name]


#: Modules whose forward does nothing that FlopAnalyzer counts besides
#: calling submodules (a DCNv3 module, which runs its core itself, is not
#: one). Only these are split; add a library's containers here to count its
#: large models by parts.
SPLIT_TYPES = {
    'Sequential', 'InternImage', 'InternImageLevel', 'InternImageLayer',
    'MLPLayer', 'StemLayer', 'DownsampleLayer', 'ImageClassifier',
    'InternImageClsHead'
}


def _splittable(module: nn.Module, name: str, calls: _Calls) -> bool:
    """Whether the module can be counted as the sum of its submodule calls:
    a type of :data:`SPLIT_TYPES` none of whose parameters is used by its
    own code (the nearest called module holding each parameter is strictly
    below it)."""
    if type(module).__name__ not in SPLIT_TYPES:
        return False
    prefix = f'{name}.' if name else ''
    for sub_name, sub in module.named_modules():
        if not any(True for _ in sub.parameters(recurse=False)):
            continue
        full = prefix + sub_name if sub_name else name
        owner = full if full in calls.called else calls.parent(full)
        if owner == name:
            return False
    return True


def count_flops(model: nn.Module, inputs: Tuple,
                max_params: Optional[int] = 10_000_000,
                ignored_ops: Sequence[str] = ()) -> Dict[str, int]:
    """FLOPs of ``model(*inputs)``, the DCNv3 core included.

    A model on the CPU (or a GPU) with ``max_params=None`` is traced whole.
    Otherwise (and always on the meta device) a module with more than
    ``max_params`` parameters whose forward only calls submodules is split
    into those calls, recursively; each remaining part is materialised on the
    CPU with dummy weights and traced with dummy inputs of the recorded
    shapes. Tests check that both ways give the same count.
    ``ignored_ops`` are left out, see :func:`flop_analyzer`.

    Returns:
        dict: ``total`` and the per-operator counts (``linear``, ``conv``,
        ``dcnv3_forward``, ...).
    """
    model = model.eval()
    meta = any(p.is_meta for p in model.parameters())
    if max_params is None and not meta:
        analyzer = flop_analyzer(model, inputs, ignored_ops)
        return dict(analyzer.by_operator(), total=analyzer.total())
    if meta:
        inputs = _map_tensors(inputs, lambda t: t.to('meta'))
    calls = _Calls(model, inputs)
    modules = dict(model.named_modules())
    cache: Dict[Any, Counter] = {}

    def trace(name, args, kwargs) -> Counter:
        module = modules[name]
        key = (repr(module), _signature(args), _signature(kwargs),
               tuple((n, tuple(p.shape))
                     for n, p in module.named_parameters()))
        if key in cache:
            return cache[key]
        small = max_params is not None and count_params(module) <= max_params
        if not small and _splittable(module, name, calls) and \
                calls.children_calls(name):
            total = Counter()
            for child in calls.children_calls(name):
                total += trace(*child)
        else:
            part = _materialise(module)
            args = _map_tensors(args, _dummy)
            kwargs = _map_tensors(kwargs, _dummy)
            if kwargs:
                raise NotImplementedError(
                    f'count_flops: {name or type(module).__name__} is called '
                    'with keyword arguments, which tracing cannot pass')
            total = Counter(
                flop_analyzer(part, args, ignored_ops).by_operator())
            del part
        cache[key] = total
        return total

    total = trace('', tuple(inputs), {})
    return dict(total, total=sum(total.values()))


# ------------------------------------------------------------ from configs
def build_from_config(cfg, device: str = 'meta') -> nn.Module:
    """Build ``cfg.model`` (an mmengine Config of any OpenMMLab 2.0 library:
    its ``default_scope`` and ``custom_imports`` are honoured) on
    ``device``; 'meta' allocates nothing."""
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        # mmpretrain configs keep it at the top level (its Runner moves it)
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    scope = cfg.get('default_scope', 'mmengine')
    with DefaultScope.overwrite_default_scope(scope), torch.device(device):
        return MODELS.build(model_cfg)


def test_shape(cfg) -> Tuple[int, int]:
    """(H, W) of the config's test images: its CenterCrop, else its fixed
    Resize scale."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get(
        'pipeline', [])
    for step in reversed(pipeline):
        if step.get('type') == 'CenterCrop':
            size = step['crop_size']
            return (size, size) if isinstance(size, int) else (size[1],
                                                               size[0])
    for step in reversed(pipeline):
        if step.get('type') == 'Resize' and 'scale' in step:
            w, h = step['scale']
            return h, w
    raise ValueError('cannot tell the input size from the test pipeline; '
                     'give the shape explicitly')


#: Per-library complexity functions, by config ``default_scope``: see
#: :func:`register_complexity`.
COMPLEXITY_FUNCTIONS: Dict[str, Callable] = {}


def register_complexity(scope: str, fn: Optional[Callable] = None):
    """Make :func:`model_complexity` use ``fn(cfg, shape, device,
    max_params)`` for configs whose ``default_scope`` is ``scope`` (e.g. a
    detector whose forward needs data samples, not a bare tensor). ``fn``
    returns the same dict as :func:`model_complexity`. Usable as a
    decorator."""
    def register(fn):
        COMPLEXITY_FUNCTIONS[scope] = fn
        return fn
    return register(fn) if fn is not None else register


def model_complexity(cfg, shape: Optional[Tuple[int, int]] = None,
                     device: str = 'meta',
                     max_params: Optional[int] = 10_000_000) -> dict:
    """Parameters and FLOPs of ``cfg.model`` for one (1, 3, H, W) image.

    The config's ``custom_imports`` are imported first, so that a plugin
    can :func:`register_complexity` its library's way of counting.

    Returns:
        dict: ``params``, ``flops`` (total), ``flops_by_operator`` and
        ``shape``.
    """
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    fn = COMPLEXITY_FUNCTIONS.get(cfg.get('default_scope'))
    if fn is not None:
        return fn(cfg, shape, device, max_params)
    shape = tuple(shape) if shape else test_shape(cfg)
    model = build_from_config(cfg, device)
    flops = count_flops(model, (torch.randn(1, 3, *shape), ), max_params)
    total = flops.pop('total')
    return dict(params=count_params(model), flops=total,
                flops_by_operator=flops, shape=shape)
