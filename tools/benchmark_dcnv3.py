# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Benchmark the DCNv3 op: the pure-PyTorch reference against the compiled
kernel, forward and forward+backward, at InternImage-T's stage shapes (224 px)
and a detection-sized shape. Both take mask logits and apply the softmax
(``mask_softmax=True``), as the DCNv3 module calls the op; ``--no-softmax``
times the official variant (mask already normalised).

Both variants are timed in the same run, interleaved in rounds (the median
over rounds is reported), so that the ratios hold on a shared, noisy machine.
Also prints the fraction of the memory-bandwidth floor each kernel reaches:
the bytes that must move (read input, offsets and mask once, write the output
once; for the backward, read those and the output gradient, write the three
gradients) over its time, against a measured copy bandwidth.

    python tools/benchmark_dcnv3.py                 # CPU, all threads
    python tools/benchmark_dcnv3.py --check         # exit 1 below the targets
    python tools/benchmark_dcnv3.py --device cuda   # GPU: see benchmark_gpu()

The targets (CPU): the kernel at least 12x the reference forward and 10x
forward+backward at every shape, and its forward+backward at most 3x its
forward.

On a GPU it times, per shape (InternImage-T's stages at batch 1 and 64, a
56x56x128 map at batch 64, a detection map) and dtype, the pure-PyTorch
reference, the Triton kernels, the CUDA C++ kernel (when built) and DCNv4's
op (when the ``DCNv4`` package is installed) with CUDA events.
"""
import argparse
import gc
import json
import platform
import statistics
import sys
import time

import torch

from ops_dcnv3 import KERNEL_DEVICES, dcnv3, dcnv3_core_pytorch

# (name, N, H, W, C, G): InternImage-T at 224 px, and a detection feature map.
SHAPES = [
    ('T stage 1', 1, 56, 56, 64, 4),
    ('T stage 2', 1, 28, 28, 128, 8),
    ('T stage 3', 1, 14, 14, 256, 16),
    ('T stage 4', 1, 7, 7, 512, 32),
    ('detection', 1, 200, 336, 64, 4),
]
TARGETS = {'forward': 12.0, 'forward+backward': 10.0}  # CPU kernel vs reference
MAX_BACKWARD_COST = 3.0  # CPU kernel: forward+backward / forward


def keep_freed_memory():
    """Have glibc's malloc keep the memory a call frees for the next call's
    tensors instead of handing it back to the kernel; returns what it set, for
    the header (None off glibc).

    PyTorch's CPU tensors come straight from malloc. With glibc's defaults,
    whether the buffers one call frees go back to the kernel (and the next
    call faults them in again, page by page) depends on where they happen to
    lie in the heap, which changes from one process to the next: the same CPU
    backward at InternImage-T's stage 1 took 1.2 ms in some processes and 2.5
    ms, with 611 page faults a call, in others. These are the settings that
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 give a
    whole program (or jemalloc or tcmalloc, preloaded, avoid the same).
    """
    if platform.libc_ver()[0] != 'glibc':
        return None
    import ctypes
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    mmap_threshold, trim_threshold = 32 << 20, 1 << 30  # 32 MB: glibc's most
    if not (libc.mallopt(m_mmap_threshold, mmap_threshold)
            and libc.mallopt(m_trim_threshold, trim_threshold)):
        return None
    return (f'glibc malloc keeps freed memory (mmap threshold {mmap_threshold >> 20} MB, '
            f'trim threshold {trim_threshold >> 30} GB)')


def add_malloc_argument(parser):
    parser.add_argument('--malloc-defaults', action='store_true',
                        help="leave glibc's malloc settings as they are (see "
                        'keep_freed_memory: freed buffers may then go back to the '
                        'kernel and be faulted in again, differently in each process)')


def malloc_setting(args):
    """Applies --malloc-defaults; returns the header's words for it."""
    kept = None if args.malloc_defaults else keep_freed_memory()
    return kept or 'malloc as the environment sets it'


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once(fn, device, min_time):
    """Mean seconds per call over at least min_time, with Python's cyclic
    garbage collector paused, as ``timeit`` does: a full collection that
    lands in a sample times the heap, not the code (134 ms once mmdet is
    imported, 4% of a 3-second loop of the op at InternImage-T's stage 3 on
    this project's host). It runs again between samples."""
    synchronize(device)
    collecting = gc.isenabled()
    gc.disable()
    try:
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                return elapsed / calls
    finally:
        if collecting:
            gc.enable()


def copy_bandwidth(device, rounds):
    """Bytes per second of a large device-to-device copy (read + write)."""
    n = 64 * 2**20  # 256 MB of fp32
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    times = [time_once(lambda: dst.copy_(src), device, 0.2) for _ in range(rounds)]
    return 2 * src.numel() * src.element_size() / statistics.median(times)


def bytes_moved(n, h, w, c, g, points, elem):
    feature = n * h * w * c
    offset, mask = n * h * w * g * points * 2, n * h * w * g * points
    forward = feature + offset + mask + feature
    backward = (feature + feature + offset + mask) + (feature + offset + mask)
    return forward * elem, (forward + backward) * elem


def benchmark(args):
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type not in KERNEL_DEVICES:
        sys.exit(f'no compiled DCNv3 kernel for {device.type}: '
                 f'ops_dcnv3.KERNEL_DEVICES = {sorted(KERNEL_DEVICES)}')
    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth(device, args.rounds)
    rows = []
    for name, n, h, w, c, g in SHAPES:
        points = 9
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, h, w, c, generator=gen).to(device, dtype)
        off = torch.randn(n, h, w, g * points * 2, generator=gen).to(device, dtype)
        mask = (torch.randn(n, h, w, g * points, generator=gen) if args.softmax
                else torch.rand(n, h, w, g * points, generator=gen)).to(device, dtype)
        grad = torch.randn(n, h, w, c, generator=gen).to(device, dtype)
        params = (3, 3, 1, 1, 1, 1, 1, 1, g, c // g, 1.0)
        leaves = [t.clone().requires_grad_() for t in (x, off, mask)]

        def kernel():
            return dcnv3(*leaves, *params, 256, False, mask_softmax=args.softmax)

        def reference():
            return dcnv3_core_pytorch(*leaves, *params, False,
                                      mask_softmax=args.softmax)

        def forward(fn):
            def run():
                with torch.no_grad():
                    fn()
            return run

        def forward_backward(fn):
            return lambda: torch.autograd.grad(fn(), leaves, grad)

        variants = {
            ('forward', 'reference'): forward(reference),
            ('forward', 'kernel'): forward(kernel),
            ('forward+backward', 'reference'): forward_backward(reference),
            ('forward+backward', 'kernel'): forward_backward(kernel),
        }
        for fn in variants.values():  # warm up
            fn()
        samples = {k: [] for k in variants}
        for _ in range(args.rounds):  # interleaved: every round times all four
            for key, fn in variants.items():
                samples[key].append(time_once(fn, device, args.min_time))
        fwd_bytes, fb_bytes = bytes_moved(n, h, w, c, g, points, x.element_size())
        kernel_forward = statistics.median(samples[('forward', 'kernel')])
        for mode, floor_bytes in (('forward', fwd_bytes), ('forward+backward', fb_bytes)):
            ref_t = statistics.median(samples[(mode, 'reference')])
            ker_t = statistics.median(samples[(mode, 'kernel')])
            rows.append(dict(shape=name, size=f'{n}x{h}x{w}x{c} G{g}', mode=mode,
                             reference_ms=ref_t * 1e3, kernel_ms=ker_t * 1e3,
                             speedup=ref_t / ker_t,
                             of_forward=ker_t / kernel_forward,
                             bandwidth_fraction=floor_bytes / ker_t / bandwidth))
    return rows, bandwidth


def describe_machine(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32',
                        choices=['float32', 'float64', 'float16', 'bfloat16'])
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (default: torch.get_num_threads())')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--min-time', type=float, default=0.2,
                        help='seconds per timing sample')
    parser.add_argument('--no-softmax', dest='softmax', action='store_false',
                        help='time the official variant (mask already normalised) '
                        'instead of the fused mask softmax')
    parser.add_argument('--json', help='also write the rows to this file')
    parser.add_argument('--check', action='store_true',
                        help='exit 1 when a CPU speedup is below its target '
                        f'({TARGETS}) or forward+backward costs more than '
                        f'{MAX_BACKWARD_COST}x the forward')
    add_malloc_argument(parser)
    add_gpu_arguments(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda':
        sys.exit(gpu_main(args, device))
    malloc = malloc_setting(args)
    rows, bandwidth = benchmark(args)
    print(f'DCNv3 {args.dtype} on {args.device} ({describe_machine(device)}), '
          f'torch {torch.__version__}; copy bandwidth {bandwidth / 1e9:.1f} GB/s; '
          f'median of {args.rounds} interleaved rounds; '
          f'{"mask softmax fused" if args.softmax else "mask as given"}; {malloc}')
    print()
    print('| shape | size | pass | reference ms | kernel ms | speedup | '
          'kernel / its forward | of bandwidth floor |')
    print('|---|---|---|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f"| {r['shape']} | {r['size']} | {r['mode']} | {r['reference_ms']:.3f} | "
              f"{r['kernel_ms']:.3f} | {r['speedup']:.1f}x | {r['of_forward']:.2f}x | "
              f"{100 * r['bandwidth_fraction']:.1f}% |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=args.device, dtype=args.dtype, mask_softmax=args.softmax,
                           machine=describe_machine(device),
                           copy_bandwidth=bandwidth, rows=rows), f, indent=2)
    if args.check and device.type == 'cpu':
        short = [r for r in rows if r['speedup'] < TARGETS[r['mode']]]
        for r in short:
            print(f"below target: {r['shape']} {r['mode']} {r['speedup']:.1f}x "
                  f"< {TARGETS[r['mode']]}x")
        costly = [r for r in rows if r['of_forward'] > MAX_BACKWARD_COST]
        for r in costly:
            print(f"above target: {r['shape']} forward+backward costs "
                  f"{r['of_forward']:.2f}x the forward > {MAX_BACKWARD_COST}x")
        sys.exit(1 if short or costly else 0)


# --- GPU ------------------------------------------------------------------
# (name, N, H, W, C, G) at 3x3: InternImage-T's stages at batch 1 and 64, a
# 56x56x128 map (the DCNv4 comparison point) and a detection map.
GPU_SHAPES = [
    (f'T stage {i + 1}', n, h, h, c, c // 16)
    for n in (1, 64) for i, (h, c) in enumerate(((56, 64), (28, 128), (14, 256), (7, 512)))
] + [('56x56x128', 64, 56, 56, 128, 8), ('detection', 2, 200, 336, 64, 4)]
GPU_BACKENDS = ('pytorch', 'triton', 'cuda', 'dcnv4')
# The targets: Triton forward+backward >= 3x the pure-PyTorch path at
# every shape; fp16 forward within 1.5x of DCNv4 at 56x56x128, batch 64.
GPU_TARGETS = {'fb_speedup': 3.0, 'dcnv4_ratio': 1.5}


def add_gpu_arguments(parser):
    gpu = parser.add_argument_group('GPU (--device cuda)')
    gpu.add_argument('--dtypes', nargs='+', default=['float32', 'float16', 'bfloat16'],
                     choices=['float32', 'float64', 'float16', 'bfloat16'])
    gpu.add_argument('--backends', nargs='+', default=list(GPU_BACKENDS),
                     choices=GPU_BACKENDS,
                     help='pytorch: the reference; triton, cuda: ops_dcnv3 kernels; '
                     'dcnv4: DCNv4Function (skipped when not installed)')
    gpu.add_argument('--shapes', nargs='+', help='only these shape names (default: all)')


def time_cuda(fn, min_time):
    """Milliseconds per call: CUDA events around a loop of calls lasting at
    least min_time (so that launch gaps, not syncs, separate the calls)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls = 1
    while True:
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        elapsed = start.elapsed_time(end)
        if elapsed >= min_time * 1e3 or calls >= 1 << 14:
            return elapsed / calls
        calls = max(calls * 2, int(calls * min_time * 1e3 / max(elapsed, 1e-3)))


def gpu_variants(backends, n, h, w, c, g, dtype, device):
    """{backend: (forward, forward+backward)} callables for one shape."""
    from ops_dcnv3.ops import COMPILED_DEVICES, triton_ops
    points = 9
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, w, c, generator=gen).to(device, dtype)
    off = torch.randn(n, h, w, g * points * 2, generator=gen).to(device, dtype)
    mask = torch.rand(n, h, w, g * points, generator=gen).to(device, dtype)
    grad = torch.randn(n, h, w, c, generator=gen).to(device, dtype)
    params = (3, 3, 1, 1, 1, 1, 1, 1, g, c // g, 1.0)
    ops = {'pytorch': lambda *t: dcnv3_core_pytorch(*t, *params, False)}
    if 'triton' in backends:
        forward_op = triton_ops()[0]
        ops['triton'] = lambda *t: forward_op(*t, *params, 256, False)
    if 'cuda' in backends and 'cuda' in COMPILED_DEVICES:
        ops['cuda'] = lambda *t: torch.ops.ops_dcnv3.dcnv3_forward(*t, *params, 256, False)
    leaves = {k: [t.clone().requires_grad_() for t in (x, off, mask)] for k in ops}
    if 'dcnv4' in backends:
        try:
            from DCNv4.functions import DCNv4Function
        except ImportError:
            pass
        else:
            # DCNv4 takes offsets and mask in one tensor: per group, P
            # (x, y) offsets then P mask values, padded to a multiple of 8.
            width = -(-g * points * 3 // 8) * 8
            om = torch.randn(n, h, w, width, generator=gen).to(device, dtype)
            leaves['dcnv4'] = [x.clone().requires_grad_(), om.requires_grad_()]
            ops['dcnv4'] = lambda x, om: DCNv4Function.apply(
                x, om, 3, 3, 1, 1, 1, 1, 1, 1, g, c // g, 1.0, 256, False)

    def pair(op, ins):
        def forward():
            with torch.no_grad():
                op(*ins)
        return forward, lambda: torch.autograd.grad(op(*ins), ins, grad)
    return {k: pair(op, leaves[k]) for k, op in ops.items() if k in backends}


def gpu_main(args, device):
    torch.cuda.set_device(device)
    bandwidth = copy_bandwidth(device, args.rounds)
    shapes = [s for s in GPU_SHAPES if not args.shapes or s[0] in args.shapes]
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for name, n, h, w, c, g in shapes:
            variants = gpu_variants(args.backends, n, h, w, c, g, dtype, device)
            for fns in variants.values():  # warm up: compiles, autotunes
                for fn in fns:
                    fn()
            torch.cuda.synchronize(device)
            samples = {(k, m): [] for k in variants for m in range(2)}
            for _ in range(args.rounds):  # interleaved
                for k, fns in variants.items():
                    for m, fn in enumerate(fns):
                        samples[(k, m)].append(time_cuda(fn, args.min_time))
            fwd_bytes, fb_bytes = bytes_moved(n, h, w, c, g, 9, dtype.itemsize)
            for m, mode in enumerate(('forward', 'forward+backward')):
                ms = {k: statistics.median(samples[(k, m)]) for k in variants}
                row = dict(shape=name, size=f'{n}x{h}x{w}x{c} G{g}', dtype=dtype_name,
                           mode=mode, ms=ms)
                if 'triton' in ms:
                    row['bandwidth_fraction'] = ((fwd_bytes, fb_bytes)[m] / ms['triton']
                                                 * 1e3 / bandwidth)
                rows.append(row)
                torch.cuda.empty_cache()
            print(f'{dtype_name} {name} done', file=sys.stderr, flush=True)
    print(f'DCNv3 on {describe_machine(device)} ({device}), torch {torch.__version__}; '
          f'copy bandwidth {bandwidth / 1e9:.0f} GB/s; median of {args.rounds} '
          f'interleaved rounds, CUDA events; 3x3 kernel, stride 1, pad 1')
    print()
    names = [b for b in GPU_BACKENDS if any(b in r['ms'] for r in rows)]
    print('| shape | size | dtype | pass | ' + ' | '.join(f'{b} ms' for b in names)
          + ' | triton vs pytorch | triton / dcnv4 | triton of bandwidth floor |')
    print('|---|---|---|---|' + '---:|' * (len(names) + 3))
    for r in rows:
        ms = r['ms']
        cells = [f"{ms[b]:.3f}" if b in ms else '-' for b in names]
        speed = (f"{ms['pytorch'] / ms['triton']:.1f}x" if {'pytorch', 'triton'} <= ms.keys()
                 else '-')
        ratio = f"{ms['triton'] / ms['dcnv4']:.2f}" if {'dcnv4', 'triton'} <= ms.keys() else '-'
        frac = f"{100 * r['bandwidth_fraction']:.0f}%" if 'bandwidth_fraction' in r else '-'
        print(f"| {r['shape']} | {r['size']} | {r['dtype']} | {r['mode']} | "
              + ' | '.join(cells) + f' | {speed} | {ratio} | {frac} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=str(device), machine=describe_machine(device),
                           copy_bandwidth=bandwidth, rows=rows), f, indent=2)
    if not args.check:
        return 0
    short = []
    for r in rows:
        ms = r['ms']
        if (r['mode'] == 'forward+backward' and {'pytorch', 'triton'} <= ms.keys()
                and ms['pytorch'] / ms['triton'] < GPU_TARGETS['fb_speedup']):
            short.append(f"{r['shape']} {r['size']} {r['dtype']}: forward+backward "
                         f"{ms['pytorch'] / ms['triton']:.1f}x the pure-PyTorch path")
        if (r['shape'] == '56x56x128' and r['dtype'] == 'float16' and r['mode'] == 'forward'
                and {'dcnv4', 'triton'} <= ms.keys()
                and ms['triton'] / ms['dcnv4'] > GPU_TARGETS['dcnv4_ratio']):
            short.append(f"56x56x128 fp16 forward: {ms['triton'] / ms['dcnv4']:.2f}x DCNv4's time")
    for line in short:
        print(f'below target: {line}')
    return 1 if short else 0


if __name__ == '__main__':
    main()
