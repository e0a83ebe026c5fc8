# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""The DCNv3 Triton kernels (``docs/dcnv3_op.md`` says what they compute).

Layout: a *row* is one (output pixel, group) pair, ``r = q * G + g`` with
``q`` the flat output pixel. The group's ``D`` channels of the output (and of
the output gradient) for row ``r`` sit at ``r * D``, its ``2P`` offsets at
``r * 2P`` and its ``P`` mask values at ``r * P``, so a block of rows is one
contiguous stretch of each tensor. A program takes ``BLOCK_R`` rows and all
``D`` channels of each (``BLOCK_D`` = D rounded up to a power of two): the
sampling location, the bilinear weights and the mask of each point are
computed once per row and shared by the row's channels, which are loaded as
one contiguous vector per neighbour. Accumulation is fp32 (fp64 for fp64
tensors). The backward is one kernel: per point it gathers the four
neighbours once, reduces them against the output gradient for the offset and
mask gradients, and scatters the input gradient with atomic adds.
"""
import triton
import triton.language as tl


# Only builtins of triton.language here: its @jit-written library (tl.zeros,
# tl.sum, tl.max) runs under the interpreter only when TRITON_INTERPRET=1 was
# set before triton itself was imported, while these kernels need it set only
# before this module is imported. So tl.full for zeros, and tl.reduce with
# the library's own combine functions (what tl.sum and tl.max use), which the
# interpreter recognises and runs with numpy.
_SUM = tl.standard._sum_combine
_MAX = tl.standard._elementwise_max


@triton.jit
def _to_acc(x, FP64: tl.constexpr):
    """x in the accumulation precision: fp64 for fp64 tensors, else fp32."""
    if FP64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _rows(pid, rows, G, HO, WO, H, W, C, D: tl.constexpr, stride_h, stride_w,
          pad_h, pad_w, dil_h, dil_w, KH: tl.constexpr, KW: tl.constexpr,
          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """The block's rows, their validity, the address of their group's first
    channel in the input image, the kernel centre (x, y) of their pixel in
    input coordinates (integers), and the channel index d with its mask. Rows are decoded in int32 (the launcher
    keeps their count below 2**31); addresses are int64."""
    r32 = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    valid = r32 < rows
    g = r32 % G
    q = r32 // G
    j = q % WO
    t = q // WO
    i = t % HO
    n = t // HO
    r = r32.to(tl.int64)
    image = n.to(tl.int64) * H * W * C + g * D
    cx = j * stride_w - pad_w + (dil_w * (KW - 1)) // 2
    cy = i * stride_h - pad_h + (dil_h * (KH - 1)) // 2
    d = tl.arange(0, BLOCK_D)
    return r, valid, image, cx, cy, d, d < D


@triton.jit
def _point_grid(p, dil_h, dil_w, KH: tl.constexpr,
                KW: tl.constexpr, REMOVE_CENTER: tl.constexpr):
    """Offset (dx, dy) of point p from the kernel centre on the fixed grid;
    points run with the kernel's x index outer, the centre left out with
    REMOVE_CENTER."""
    CENTER: tl.constexpr = ((KW - 1) // 2) * KH + (KH - 1) // 2
    k = p
    if REMOVE_CENTER:
        k = tl.where(p >= CENTER, p + 1, p)
    dx = (k // KH) * dil_w - (dil_w * (KW - 1)) // 2
    dy = (k % KH) * dil_h - (dil_h * (KH - 1)) // 2
    return dx, dy


@triton.jit
def _bilinear(x, y, valid, H, W):
    """Bilinear neighbours of (x, y): the top-left one's (x0, y0), the
    fractions (lx, ly), and which of the four lie inside the image
    (neighbours outside count as zero)."""
    inside = valid & (x > -1) & (y > -1) & (x < W) & (y < H)
    # Points outside (or NaN) get a harmless location; their masks are off.
    xf = tl.floor(tl.where(inside, x, 0.0))
    yf = tl.floor(tl.where(inside, y, 0.0))
    lx = tl.where(inside, x, 0.0) - xf
    ly = tl.where(inside, y, 0.0) - yf
    x0 = xf.to(tl.int32)
    y0 = yf.to(tl.int32)
    top = inside & (y0 >= 0)
    bottom = inside & (y0 + 1 < H)
    left = x0 >= 0
    right = x0 + 1 < W
    return x0, y0, lx, ly, top & left, top & right, bottom & left, bottom & right


@triton.jit
def _mask_softmax_stats(msk, r, valid, P: tl.constexpr, FP64: tl.constexpr,
                        BLOCK_P: tl.constexpr):
    """Max and 1 / sum(exp(logit - max)) of each row's P mask logits."""
    pc = tl.arange(0, BLOCK_P)
    logits = _to_acc(tl.load(msk + r[:, None] * P + pc[None, :],
                             mask=valid[:, None] & (pc[None, :] < P), other=0.0),
                     FP64)
    logits = tl.where(pc[None, :] < P, logits, float('-inf'))
    top = tl.reduce(logits, 1, _MAX)
    total = tl.reduce(tl.exp(logits - top[:, None]), 1, _SUM)
    return top, 1.0 / total


@triton.jit
def _weights_setup(msk, r, valid, OFFSET_SCALE: tl.constexpr, P: tl.constexpr,
                   SOFTMAX: tl.constexpr, FP64: tl.constexpr,
                   BLOCK_P: tl.constexpr):
    """offset_scale in the accumulation precision and, with SOFTMAX, each
    row's softmax statistics (unused otherwise)."""
    scale = _to_acc(tl.full([], OFFSET_SCALE, tl.float64), FP64)
    top = scale
    inv_total = scale
    if SOFTMAX:
        top, inv_total = _mask_softmax_stats(msk, r, valid, P, FP64, BLOCK_P)
    return scale, top, inv_total


@triton.jit
def _sample(off, msk, r, valid, cx, cy, p, H, W, C, d, dil_h, dil_w, scale,
            top, inv_total, KH: tl.constexpr, KW: tl.constexpr,
            REMOVE_CENTER: tl.constexpr, SOFTMAX: tl.constexpr,
            FP64: tl.constexpr):
    """Point p of each row: its mask weight, the bilinear fractions (lx, ly)
    and their complements, which of the four neighbours are inside, and the
    columns of the top-left neighbour's channels (the others are at + C,
    + W * C and + (W + 1) * C)."""
    P: tl.constexpr = KH * KW - REMOVE_CENTER
    dx, dy = _point_grid(p, dil_h, dil_w, KH, KW, REMOVE_CENTER)
    ox = _to_acc(tl.load(off + r * (2 * P) + 2 * p, mask=valid, other=0.0), FP64)
    oy = _to_acc(tl.load(off + r * (2 * P) + 2 * p + 1, mask=valid, other=0.0), FP64)
    x = _to_acc(cx, FP64) + scale * (_to_acc(dx, FP64) + ox)
    y = _to_acc(cy, FP64) + scale * (_to_acc(dy, FP64) + oy)
    m = _to_acc(tl.load(msk + r * P + p, mask=valid, other=0.0), FP64)
    if SOFTMAX:
        m = tl.exp(m - top) * inv_total
    x0, y0, lx, ly, in00, in01, in10, in11 = _bilinear(x, y, valid, H, W)
    cols = (y0.to(tl.int64) * W + x0)[:, None] * C + d[None, :]
    return m, lx, ly, 1.0 - lx, 1.0 - ly, in00, in01, in10, in11, cols


@triton.jit
def _gather(base, cols, inside, dmask, weight, FP64: tl.constexpr):
    """weight * the neighbour's channels (zero where it is outside)."""
    v = tl.load(base[:, None] + cols, mask=inside[:, None] & dmask[None, :], other=0.0)
    return weight[:, None] * _to_acc(v, FP64)


@triton.jit
def _gather_scatter(base, gbase, cols, inside, dmask, go, mgo, weight,
                    FP64: tl.constexpr):
    """For the backward at one neighbour: grad_input += weight * mask *
    grad_out there (atomics: rows share neighbours), and return
    <grad_out, value> per row."""
    use = inside[:, None] & dmask[None, :]
    v = _to_acc(tl.load(base[:, None] + cols, mask=use, other=0.0), FP64)
    tl.atomic_add(gbase[:, None] + cols, weight[:, None] * mgo, mask=use, sem='relaxed')
    return tl.reduce(go * v, 1, _SUM)


# Sizes and hyper-parameters are plain runtime integers: no recompilation for
# each value of 1 or multiple of 16 (a model has many layer shapes). D, the
# channels per group, is a constant: every row's channels then start at a
# multiple of D, which lets the compiler vectorise their loads and stores.
_GEOMETRY = ['rows', 'H', 'W', 'HO', 'WO', 'G', 'stride_h', 'stride_w',
             'pad_h', 'pad_w', 'dil_h', 'dil_w']


@triton.jit(do_not_specialize=_GEOMETRY)
def dcnv3_forward_kernel(
        inp, off, msk, out, rows, H, W, HO, WO, G, stride_h, stride_w,
        pad_h, pad_w, dil_h, dil_w, D: tl.constexpr, OFFSET_SCALE: tl.constexpr,
        KH: tl.constexpr, KW: tl.constexpr, REMOVE_CENTER: tl.constexpr,
        SOFTMAX: tl.constexpr, FP64: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    P: tl.constexpr = KH * KW - REMOVE_CENTER
    C = G * D
    r, valid, image, cx, cy, d, dmask = _rows(
        tl.program_id(0), rows, G, HO, WO, H, W, C, D, stride_h, stride_w, pad_h,
        pad_w, dil_h, dil_w, KH, KW, BLOCK_R, BLOCK_D)
    scale, top, inv_total = _weights_setup(msk, r, valid, OFFSET_SCALE, P, SOFTMAX,
                                           FP64, BLOCK_P)
    acc = _to_acc(tl.full([BLOCK_R, BLOCK_D], 0.0, tl.float32), FP64)
    base = inp + image
    for p in range(P):
        m, lx, ly, hx, hy, in00, in01, in10, in11, cols = _sample(
            off, msk, r, valid, cx, cy, p, H, W, C, d, dil_h, dil_w, scale, top,
            inv_total, KH, KW, REMOVE_CENTER, SOFTMAX, FP64)
        acc += _gather(base, cols, in00, dmask, m * hy * hx, FP64)
        acc += _gather(base, cols + C, in01, dmask, m * hy * lx, FP64)
        acc += _gather(base, cols + W * C, in10, dmask, m * ly * hx, FP64)
        acc += _gather(base, cols + (W + 1) * C, in11, dmask, m * ly * lx, FP64)
    tl.store(out + r[:, None] * D + d[None, :], acc.to(out.dtype.element_ty),
             mask=valid[:, None] & dmask[None, :])


@triton.jit(do_not_specialize=_GEOMETRY)
def dcnv3_backward_kernel(
        grad_out, inp, off, msk, grad_inp, grad_off, grad_msk, rows, H, W, HO,
        WO, G, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, D: tl.constexpr,
        OFFSET_SCALE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
        REMOVE_CENTER: tl.constexpr, SOFTMAX: tl.constexpr, FP64: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):
    """Gradients of input (atomic adds into an fp32/fp64 buffer), offset and
    mask (or, with SOFTMAX, of the mask logits) in one pass."""
    P: tl.constexpr = KH * KW - REMOVE_CENTER
    C = G * D
    r, valid, image, cx, cy, d, dmask = _rows(
        tl.program_id(0), rows, G, HO, WO, H, W, C, D, stride_h, stride_w, pad_h,
        pad_w, dil_h, dil_w, KH, KW, BLOCK_R, BLOCK_D)
    pc = tl.arange(0, BLOCK_P)
    scale, top, inv_total = _weights_setup(msk, r, valid, OFFSET_SCALE, P, SOFTMAX,
                                           FP64, BLOCK_P)
    go = _to_acc(tl.load(grad_out + r[:, None] * D + d[None, :],
                         mask=valid[:, None] & dmask[None, :], other=0.0), FP64)
    # The gradient with respect to each point's mask weight, and the weights.
    grad_m = _to_acc(tl.full([BLOCK_R, BLOCK_P], 0.0, tl.float32), FP64)
    weights = _to_acc(tl.full([BLOCK_R, BLOCK_P], 0.0, tl.float32), FP64)
    base = inp + image
    gbase = grad_inp + image
    for p in range(P):
        m, lx, ly, hx, hy, in00, in01, in10, in11, cols = _sample(
            off, msk, r, valid, cx, cy, p, H, W, C, d, dil_h, dil_w, scale, top,
            inv_total, KH, KW, REMOVE_CENTER, SOFTMAX, FP64)
        mgo = m[:, None] * go
        # Each neighbour's t = <grad_out, value>, then d/dmask = sum w * t,
        # d/dx = sum dw/dx * t, d/dy = sum dw/dy * t over the neighbours.
        t00 = _gather_scatter(base, gbase, cols, in00, dmask, go, mgo, hy * hx, FP64)
        t01 = _gather_scatter(base, gbase, cols + C, in01, dmask, go, mgo, hy * lx, FP64)
        t10 = _gather_scatter(base, gbase, cols + W * C, in10, dmask, go, mgo, ly * hx,
                              FP64)
        t11 = _gather_scatter(base, gbase, cols + (W + 1) * C, in11, dmask, go, mgo,
                              ly * lx, FP64)
        gm = hy * (hx * t00 + lx * t01) + ly * (hx * t10 + lx * t11)
        gx = hy * (t01 - t00) + ly * (t11 - t10)
        gy = hx * (t10 - t00) + lx * (t11 - t01)
        ms = m * scale
        dtype = grad_off.dtype.element_ty
        tl.store(grad_off + r * (2 * P) + 2 * p, (ms * gx).to(dtype), mask=valid)
        tl.store(grad_off + r * (2 * P) + 2 * p + 1, (ms * gy).to(dtype), mask=valid)
        grad_m = tl.where(pc[None, :] == p, gm[:, None], grad_m)
        weights = tl.where(pc[None, :] == p, m[:, None], weights)
    if SOFTMAX:
        # Through the softmax: d/dlogit_p = a_p * (d/da_p - sum_k a_k d/da_k).
        grad_m = weights * (grad_m - tl.reduce(weights * grad_m, 1, _SUM)[:, None])
    tl.store(grad_msk + r[:, None] * P + pc[None, :],
             grad_m.to(grad_msk.dtype.element_ty),
             mask=valid[:, None] & (pc[None, :] < P))
