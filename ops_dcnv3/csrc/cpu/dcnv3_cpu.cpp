// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// DCNv3 on the CPU: multi-threaded with at::parallel_for, deterministic
// (every output element is summed in one fixed order, whatever the thread
// count), fp64 / fp32 / fp16 / bf16 with fp32-or-better accumulation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../dcnv3_common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

namespace ops_dcnv3 {
namespace {

// Rough cost of one unit of work, for at::parallel_for's grain size: small
// problems stay on one thread, where the fork would cost more than it saves.
int64_t grain_for(int64_t cost_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, cost_per_item));
}

// The sampling taps of one (pixel, group): for each of the P points, its four
// bilinear neighbours as pointers to the group's D channels and weights.
// Per-thread scratch, sized once.
template <typename scalar_t, typename opmath_t>
struct Taps {
  std::vector<opmath_t> grid_x, grid_y;  // kernel_point() of each point
  std::vector<scalar_t> zeros;           // D zeros: stands for "outside"
  std::vector<const scalar_t*> ptr;      // 4P
  std::vector<int64_t> index;            // 4P, element offsets (backward)
  std::vector<opmath_t> weight, dx, dy;  // 4P
  std::vector<char> valid;               // 4P
  std::vector<int32_t> offset32;         // 4P, padded (AVX2 paths)
  std::vector<int32_t> valid32;          // 4P, padded (AVX2 backward)
  int count = 0;

  // grid_x/grid_y are zero-padded to a multiple of 8 points, so that the
  // AVX2 path can load them 8 at a time.
  explicit Taps(const Geometry& g)
      : grid_x((g.points + 7) / 8 * 8), grid_y((g.points + 7) / 8 * 8),
        zeros(g.group_channels),
        ptr(4 * g.points), index(4 * g.points),
        weight((g.points + 7) / 8 * 32),  // 4P, padded for the AVX2 path
        dx((g.points + 7) / 8 * 32), dy((g.points + 7) / 8 * 32),
        valid(4 * g.points), offset32((g.points + 7) / 8 * 32),
        valid32((g.points + 7) / 8 * 32) {
    for (int p = 0; p < g.points; ++p) {
      int kx, ky;
      kernel_point(g, p, kx, ky);
      grid_x[p] = static_cast<opmath_t>(kx);
      grid_y[p] = static_cast<opmath_t>(ky);
    }
  }

  // Forward: all 4P taps, branch-free; neighbours outside the image read
  // the zero row with weight 0 (so an Inf elsewhere in the input cannot turn
  // into NaN, as it would with a clamped index).
  void gather_dense(const Geometry& g, int i, int j, const scalar_t* in_g,
                    const scalar_t* off, const scalar_t* msk) {
    opmath_t cx, cy;
    centre_location(g, i, j, cx, cy);
    const opmath_t s = static_cast<opmath_t>(g.offset_scale);
    const opmath_t W = static_cast<opmath_t>(g.width);
    const opmath_t H = static_cast<opmath_t>(g.height);
    const int64_t row = int64_t(g.width) * g.channels;
    const scalar_t* const zero = zeros.data();
    const opmath_t* __restrict__ gx = grid_x.data();
    const opmath_t* __restrict__ gy = grid_y.data();
    const scalar_t** __restrict__ ptr_out = ptr.data();
    opmath_t* __restrict__ w_out = weight.data();
    for (int p = 0; p < g.points; ++p) {
      opmath_t x = cx + s * (gx[p] + static_cast<opmath_t>(off[2 * p]));
      opmath_t y = cy + s * (gy[p] + static_cast<opmath_t>(off[2 * p + 1]));
      const bool inside = x > opmath_t(-1) && y > opmath_t(-1) && x < W && y < H;
      const opmath_t m = inside ? static_cast<opmath_t>(msk[p]) : opmath_t(0);
      // Clamp so that the conversions below stay defined for points far out.
      x = inside ? x : opmath_t(0);
      y = inside ? y : opmath_t(0);
      const int x0 = floor_int(x), y0 = floor_int(y);
      const opmath_t lx = x - x0, ly = y - y0, hx = 1 - lx, hy = 1 - ly;
      const bool vx0 = inside && x0 >= 0, vx1 = inside && x0 + 1 < g.width;
      const bool vy0 = inside && y0 >= 0, vy1 = inside && y0 + 1 < g.height;
      const scalar_t* base = in_g + y0 * row + int64_t(x0) * g.channels;
      const int t = 4 * p;
      ptr_out[t] = vy0 && vx0 ? base : zero;
      ptr_out[t + 1] = vy0 && vx1 ? base + g.channels : zero;
      ptr_out[t + 2] = vy1 && vx0 ? base + row : zero;
      ptr_out[t + 3] = vy1 && vx1 ? base + row + g.channels : zero;
      w_out[t] = hy * hx * m;
      w_out[t + 1] = hy * lx * m;
      w_out[t + 2] = ly * hx * m;
      w_out[t + 3] = ly * lx * m;
    }
    count = 4 * g.points;
  }

  // Backward: the same 4P taps with the bilinear weight (unmasked), its
  // derivatives and a validity flag; taps outside the image are skipped by
  // the caller, so they contribute exactly nothing.
  void gather_dense_grad(const Geometry& g, int i, int j, const scalar_t* off) {
    opmath_t cx, cy;
    centre_location(g, i, j, cx, cy);
    const opmath_t s = static_cast<opmath_t>(g.offset_scale);
    const opmath_t W = static_cast<opmath_t>(g.width);
    const opmath_t H = static_cast<opmath_t>(g.height);
    for (int p = 0; p < g.points; ++p) {
      opmath_t x = cx + s * (grid_x[p] + static_cast<opmath_t>(off[2 * p]));
      opmath_t y = cy + s * (grid_y[p] + static_cast<opmath_t>(off[2 * p + 1]));
      const bool inside = x > opmath_t(-1) && y > opmath_t(-1) && x < W && y < H;
      x = inside ? x : opmath_t(0);
      y = inside ? y : opmath_t(0);
      const int x0 = floor_int(x), y0 = floor_int(y);
      const opmath_t lx = x - x0, ly = y - y0, hx = 1 - lx, hy = 1 - ly;
      const bool vx0 = inside && x0 >= 0, vx1 = inside && x0 + 1 < g.width;
      const bool vy0 = inside && y0 >= 0, vy1 = inside && y0 + 1 < g.height;
      const int64_t base = (int64_t(y0) * g.width + x0) * g.channels;
      const int64_t row = int64_t(g.width) * g.channels;
      const int t = 4 * p;
      index[t] = base;
      index[t + 1] = base + g.channels;
      index[t + 2] = base + row;
      index[t + 3] = base + row + g.channels;
      valid[t] = vy0 && vx0;
      valid[t + 1] = vy0 && vx1;
      valid[t + 2] = vy1 && vx0;
      valid[t + 3] = vy1 && vx1;
      weight[t] = hy * hx;
      weight[t + 1] = hy * lx;
      weight[t + 2] = ly * hx;
      weight[t + 3] = ly * lx;
      dx[t] = -hy;
      dx[t + 1] = hy;
      dx[t + 2] = -ly;
      dx[t + 3] = ly;
      dy[t] = -hx;
      dy[t + 1] = -lx;
      dy[t + 2] = hx;
      dy[t + 3] = lx;
    }
    count = 4 * g.points;
  }
};

// out[0:D] = sum_t w[t] * ptr[t][0:D], in blocks of B channels kept in
// registers across all taps (a fixed-size loop the compiler vectorises).
template <int B, typename scalar_t, typename opmath_t>
__attribute__((noinline)) void weighted_sum(const scalar_t* const* ptr, const opmath_t* w,
                         int taps, int D, scalar_t* out) {
  int d0 = 0;
  for (; d0 + B <= D; d0 += B) {
    opmath_t acc[B] = {};
    for (int t = 0; t < taps; ++t) {
      const scalar_t* v = ptr[t] + d0;
      const opmath_t wt = w[t];
      for (int d = 0; d < B; ++d) acc[d] += wt * static_cast<opmath_t>(v[d]);
    }
    for (int d = 0; d < B; ++d) out[d0 + d] = static_cast<scalar_t>(acc[d]);
  }
  for (; d0 < D; ++d0) {
    opmath_t acc = 0;
    for (int t = 0; t < taps; ++t) acc += w[t] * static_cast<opmath_t>(ptr[t][d0]);
    out[d0] = static_cast<scalar_t>(acc);
  }
}

// Instruction-set dispatch: the fp32 forward has an AVX2 version, taken
// when the CPU has AVX2 (checked at run time, so the build stays portable).
// OPS_DCNV3_CPU_ISA=baseline forces the baseline code (the tests compare the
// two).
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DCNV3_HAVE_AVX2 1
#else
#define DCNV3_HAVE_AVX2 0
#endif

bool use_avx2() {
#if DCNV3_HAVE_AVX2
  static const bool supported = __builtin_cpu_supports("avx2");
  const char* isa = std::getenv("OPS_DCNV3_CPU_ISA");
  return supported && !(isa && std::strcmp(isa, "baseline") == 0);
#else
  return false;
#endif
}

#if DCNV3_HAVE_AVX2
#define DCNV3_TARGET_AVX2 __attribute__((target("avx2")))

// True when no element of x[0:n] is Inf or NaN.
DCNV3_TARGET_AVX2 bool all_finite_avx2(const float* x, int64_t n) {
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(),
                                          _CMP_NEQ_UQ));
  }
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) ok &= (x[i] - x[i] == 0.f);
  return ok;
}

// 4 vectors of 8 (one per neighbour k, lanes = points) -> 32 values in
// point-major order [p][k], the tap order of the baseline code.
DCNV3_TARGET_AVX2 inline void store_point_major(float* dst, __m256 k0,
                                                __m256 k1, __m256 k2,
                                                __m256 k3) {
  const __m256 t0 = _mm256_unpacklo_ps(k0, k1), t1 = _mm256_unpackhi_ps(k0, k1);
  const __m256 t2 = _mm256_unpacklo_ps(k2, k3), t3 = _mm256_unpackhi_ps(k2, k3);
  const __m256 p04 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 p15 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 p26 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 p37 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(p04, p15, 0x20));
  _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(p26, p37, 0x20));
  _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(p04, p15, 0x31));
  _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(p26, p37, 0x31));
}

// Forward of one (pixel, group), fp32, D a multiple of 8, finite input
// smaller than 2^31 elements: the taps of 8 points at a time in vector
// registers. A neighbour outside the image gets weight 0 and offset 0 (the
// input is finite, so 0 * value adds exactly what the baseline's zero row
// adds). Same operations (no FMA) and tap order as the baseline, so the
// output is bit-identical to it.
DCNV3_TARGET_AVX2 __attribute__((noinline)) void forward_group_avx2(
    const Geometry& g, float cx, float cy, const float* __restrict__ gx,
    const float* __restrict__ gy, const float* __restrict__ in_g,
    const float* __restrict__ off, const float* __restrict__ msk,
    int32_t* __restrict__ taps_off, float* __restrict__ taps_w,
    float* __restrict__ out) {
  const int P = g.points, D = g.group_channels;
  const int C = g.channels, row = g.width * g.channels;
  const __m256 s = _mm256_set1_ps(static_cast<float>(g.offset_scale));
  const __m256 vcx = _mm256_set1_ps(cx), vcy = _mm256_set1_ps(cy);
  const __m256 minus1 = _mm256_set1_ps(-1.f), one = _mm256_set1_ps(1.f);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 W = _mm256_set1_ps(static_cast<float>(g.width));
  const __m256 H = _mm256_set1_ps(static_cast<float>(g.height));
  const __m256i vC = _mm256_set1_epi32(C), vrow = _mm256_set1_epi32(row);
  alignas(32) float pad[16], mpad[8];
  for (int p0 = 0; p0 < P; p0 += 8) {
    const float *o = off + 2 * p0, *mk = msk + p0;
    if (P - p0 < 8) {  // the tail, zero-padded (padding points get weight 0)
      const int lanes = P - p0;
      for (int k = 0; k < 16; ++k) pad[k] = k < 2 * lanes ? o[k] : 0.f;
      for (int k = 0; k < 8; ++k) mpad[k] = k < lanes ? mk[k] : 0.f;
      o = pad;
      mk = mpad;
    }
    // (x0 y0 x1 y1 ...) -> x0..x7 and y0..y7
    const __m256 a = _mm256_loadu_ps(o), b = _mm256_loadu_ps(o + 8);
    const __m256 ox = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    const __m256 oy = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
    __m256 x = _mm256_add_ps(vcx, _mm256_mul_ps(s, _mm256_add_ps(_mm256_loadu_ps(gx + p0), ox)));
    __m256 y = _mm256_add_ps(vcy, _mm256_mul_ps(s, _mm256_add_ps(_mm256_loadu_ps(gy + p0), oy)));
    const __m256 inside = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(x, minus1, _CMP_GT_OQ), _mm256_cmp_ps(y, minus1, _CMP_GT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(x, W, _CMP_LT_OQ), _mm256_cmp_ps(y, H, _CMP_LT_OQ)));
    const __m256 m = _mm256_and_ps(_mm256_loadu_ps(mk), inside);
    x = _mm256_and_ps(x, inside);
    y = _mm256_and_ps(y, inside);
    const __m256 fx = _mm256_floor_ps(x), fy = _mm256_floor_ps(y);
    const __m256 lx = _mm256_sub_ps(x, fx), ly = _mm256_sub_ps(y, fy);
    const __m256 hx = _mm256_sub_ps(one, lx), hy = _mm256_sub_ps(one, ly);
    const __m256 vx0 = _mm256_cmp_ps(fx, zero, _CMP_GE_OQ);
    const __m256 vx1 = _mm256_cmp_ps(_mm256_add_ps(fx, one), W, _CMP_LT_OQ);
    const __m256 vy0 = _mm256_and_ps(inside, _mm256_cmp_ps(fy, zero, _CMP_GE_OQ));
    const __m256 vy1 = _mm256_and_ps(inside, _mm256_cmp_ps(_mm256_add_ps(fy, one), H, _CMP_LT_OQ));
    const __m256 v00 = _mm256_and_ps(vy0, vx0), v01 = _mm256_and_ps(vy0, vx1);
    const __m256 v10 = _mm256_and_ps(vy1, vx0), v11 = _mm256_and_ps(vy1, vx1);
    // Weights as the baseline computes them (hy * hx * m, ...), zeroed for
    // neighbours outside the image.
    store_point_major(
        taps_w + 4 * p0,
        _mm256_and_ps(v00, _mm256_mul_ps(_mm256_mul_ps(hy, hx), m)),
        _mm256_and_ps(v01, _mm256_mul_ps(_mm256_mul_ps(hy, lx), m)),
        _mm256_and_ps(v10, _mm256_mul_ps(_mm256_mul_ps(ly, hx), m)),
        _mm256_and_ps(v11, _mm256_mul_ps(_mm256_mul_ps(ly, lx), m)));
    // Element offsets of the four neighbours, 0 where outside.
    const __m256i base = _mm256_add_epi32(
        _mm256_mullo_epi32(_mm256_cvttps_epi32(fy), vrow),
        _mm256_mullo_epi32(_mm256_cvttps_epi32(fx), vC));
    const __m256i o01 = _mm256_add_epi32(base, vC), o10 = _mm256_add_epi32(base, vrow);
    const __m256i o11 = _mm256_add_epi32(o10, vC);
    store_point_major(
        reinterpret_cast<float*>(taps_off + 4 * p0),
        _mm256_and_ps(v00, _mm256_castsi256_ps(base)),
        _mm256_and_ps(v01, _mm256_castsi256_ps(o01)),
        _mm256_and_ps(v10, _mm256_castsi256_ps(o10)),
        _mm256_and_ps(v11, _mm256_castsi256_ps(o11)));
  }
  const int taps = 4 * P;
  int d0 = 0;
  for (; d0 + 16 <= D; d0 += 16) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int t = 0; t < taps; ++t) {
      const __m256 w = _mm256_set1_ps(taps_w[t]);
      const float* v = in_g + taps_off[t] + d0;
      acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(w, _mm256_loadu_ps(v)));
      acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(w, _mm256_loadu_ps(v + 8)));
    }
    _mm256_storeu_ps(out + d0, acc0);
    _mm256_storeu_ps(out + d0 + 8, acc1);
  }
  for (; d0 < D; d0 += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int t = 0; t < taps; ++t) {
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(taps_w[t]),
                                             _mm256_loadu_ps(in_g + taps_off[t] + d0)));
    }
    _mm256_storeu_ps(out + d0, acc);
  }
}
#endif

template <typename scalar_t, int B>
void forward_kernel(const Geometry& g, const scalar_t* input,
                    const scalar_t* offset, const scalar_t* mask,
                    scalar_t* output) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t pixels = g.batch * g.h_out * g.w_out;
  const int64_t image = static_cast<int64_t>(g.height) * g.width * C;
#if DCNV3_HAVE_AVX2
  bool avx2 = false;
  if constexpr (std::is_same<scalar_t, float>::value) {
    avx2 = D % 8 == 0 && image < (int64_t(1) << 31) && use_avx2() &&
           all_finite_avx2(input, g.batch * image);
  }
#endif
  at::parallel_for(
      0, pixels, grain_for(int64_t(g.group) * P * (4 * D + 32)),
      [&](int64_t begin, int64_t end) {
        Taps<scalar_t, opmath_t> taps(g);
        for (int64_t q = begin; q < end; ++q) {
          const int64_t n = q / (int64_t(g.h_out) * g.w_out);
          const int i = static_cast<int>((q / g.w_out) % g.h_out);
          const int j = static_cast<int>(q % g.w_out);
          for (int grp = 0; grp < g.group; ++grp) {
            const int64_t k0 = (q * g.group + grp) * P;
            const scalar_t* in_g = input + n * image + grp * D;
            scalar_t* out = output + q * C + grp * D;
#if DCNV3_HAVE_AVX2
            if constexpr (std::is_same<scalar_t, float>::value) {
              if (avx2) {
                opmath_t cx, cy;
                centre_location(g, i, j, cx, cy);
                forward_group_avx2(g, cx, cy, taps.grid_x.data(),
                                   taps.grid_y.data(), in_g, offset + 2 * k0,
                                   mask + k0, taps.offset32.data(),
                                   taps.weight.data(), out);
                continue;
              }
            }
#endif
            taps.gather_dense(g, i, j, in_g, offset + 2 * k0, mask + k0);
            weighted_sum<B>(taps.ptr.data(), taps.weight.data(), taps.count,
                            D, out);
          }
        }
      });
}

// sum_d a[d] * b[d], in a fixed order: B lanes, then a tree over the lanes
// (a short dependency chain, unlike a running sum).
template <int B, typename scalar_t, typename opmath_t>
inline opmath_t dot(const opmath_t* __restrict__ a,
                    const scalar_t* __restrict__ b, int D) {
  opmath_t part[B] = {};
  int d0 = 0;
  for (; d0 + B <= D; d0 += B) {
    for (int d = 0; d < B; ++d) {
      part[d] += a[d0 + d] * static_cast<opmath_t>(b[d0 + d]);
    }
  }
  for (int d = 0; d0 + d < D; ++d) {
    part[d] += a[d0 + d] * static_cast<opmath_t>(b[d0 + d]);
  }
  // Adjacent pairs first, (p0 + p1) + (p2 + p3) for B = 4: the order of
  // the AVX2 path's horizontal adds, so that both give the same bits.
  for (int width = 1; width < B; width *= 2) {
    for (int d = 0; d + width < B; d += 2 * width) part[d] += part[d + width];
  }
  return part[0];
}

// y[0:n] += a * x[0:n]; restrict lets the compiler vectorise it.
template <typename T>
inline void axpy(T* __restrict__ y, const T* __restrict__ x, T a, int n) {
  for (int d = 0; d < n; ++d) y[d] += a * x[d];
}

// The backward work of one (pixel, group), given its taps: scatter into the
// channels [d_begin, d_end) of grad_input and, when with_point_grads, the
// gradients of the group's P offsets and mask weights. Kept out of line with
// restrict pointers: inlined into the task loop it vectorises far worse.
template <typename scalar_t, typename opmath_t>
__attribute__((noinline)) void backward_taps(
    const int64_t* __restrict__ index, const char* __restrict__ valid,
    const opmath_t* __restrict__ weight, const opmath_t* __restrict__ wdx,
    const opmath_t* __restrict__ wdy, int P, const opmath_t* __restrict__ go,
    const scalar_t* __restrict__ in_g, opmath_t* __restrict__ gin_g,
    const scalar_t* __restrict__ mask, int D, int d_begin, int d_end,
    bool with_point_grads, opmath_t scale, scalar_t* __restrict__ grad_offset,
    scalar_t* __restrict__ grad_mask) {
  for (int p = 0; p < P; ++p) {
    const opmath_t m = static_cast<opmath_t>(mask[p]);
    opmath_t vm = 0, vx = 0, vy = 0;
    for (int t = 4 * p; t < 4 * p + 4; ++t) {
      if (!valid[t]) continue;
      axpy(gin_g + index[t] + d_begin, go + d_begin, weight[t] * m,
           d_end - d_begin);
      if (with_point_grads) {
        const opmath_t v = dot<4>(go, in_g + index[t], D);
        vm += weight[t] * v;
        vx += wdx[t] * v;
        vy += wdy[t] * v;
      }
    }
    if (with_point_grads) {
      grad_mask[p] = static_cast<scalar_t>(vm);
      grad_offset[2 * p] = static_cast<scalar_t>(m * scale * vx);
      grad_offset[2 * p + 1] = static_cast<scalar_t>(m * scale * vy);
    }
  }
}

#if DCNV3_HAVE_AVX2
// gather_dense_grad for fp32, 8 points at a time: per tap its element offset
// (0 outside the image), bilinear weight and derivatives, and validity (all
// ones or 0), in the baseline's tap order and with its operations.
DCNV3_TARGET_AVX2 __attribute__((noinline)) void gather_grad_avx2(
    const Geometry& g, float cx, float cy, const float* __restrict__ gx,
    const float* __restrict__ gy, const float* __restrict__ off,
    int32_t* __restrict__ taps_off, float* __restrict__ taps_w,
    float* __restrict__ taps_dx, float* __restrict__ taps_dy,
    int32_t* __restrict__ taps_ok) {
  const int P = g.points;
  const __m256 s = _mm256_set1_ps(static_cast<float>(g.offset_scale));
  const __m256 vcx = _mm256_set1_ps(cx), vcy = _mm256_set1_ps(cy);
  const __m256 minus1 = _mm256_set1_ps(-1.f), one = _mm256_set1_ps(1.f);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 W = _mm256_set1_ps(static_cast<float>(g.width));
  const __m256 H = _mm256_set1_ps(static_cast<float>(g.height));
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256i vC = _mm256_set1_epi32(g.channels);
  const __m256i vrow = _mm256_set1_epi32(g.width * g.channels);
  alignas(32) float pad[16];
  for (int p0 = 0; p0 < P; p0 += 8) {
    const float* o = off + 2 * p0;
    if (P - p0 < 8) {
      for (int k = 0; k < 16; ++k) pad[k] = k < 2 * (P - p0) ? o[k] : 0.f;
      o = pad;
    }
    const __m256 a = _mm256_loadu_ps(o), b = _mm256_loadu_ps(o + 8);
    const __m256 ox = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    const __m256 oy = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
    __m256 x = _mm256_add_ps(vcx, _mm256_mul_ps(s, _mm256_add_ps(_mm256_loadu_ps(gx + p0), ox)));
    __m256 y = _mm256_add_ps(vcy, _mm256_mul_ps(s, _mm256_add_ps(_mm256_loadu_ps(gy + p0), oy)));
    const __m256 inside = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(x, minus1, _CMP_GT_OQ), _mm256_cmp_ps(y, minus1, _CMP_GT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(x, W, _CMP_LT_OQ), _mm256_cmp_ps(y, H, _CMP_LT_OQ)));
    x = _mm256_and_ps(x, inside);
    y = _mm256_and_ps(y, inside);
    const __m256 fx = _mm256_floor_ps(x), fy = _mm256_floor_ps(y);
    const __m256 lx = _mm256_sub_ps(x, fx), ly = _mm256_sub_ps(y, fy);
    const __m256 hx = _mm256_sub_ps(one, lx), hy = _mm256_sub_ps(one, ly);
    const __m256 vx0 = _mm256_cmp_ps(fx, zero, _CMP_GE_OQ);
    const __m256 vx1 = _mm256_cmp_ps(_mm256_add_ps(fx, one), W, _CMP_LT_OQ);
    const __m256 vy0 = _mm256_and_ps(inside, _mm256_cmp_ps(fy, zero, _CMP_GE_OQ));
    const __m256 vy1 = _mm256_and_ps(inside, _mm256_cmp_ps(_mm256_add_ps(fy, one), H, _CMP_LT_OQ));
    const __m256 v00 = _mm256_and_ps(vy0, vx0), v01 = _mm256_and_ps(vy0, vx1);
    const __m256 v10 = _mm256_and_ps(vy1, vx0), v11 = _mm256_and_ps(vy1, vx1);
    const int t = 4 * p0;
    store_point_major(taps_w + t, _mm256_mul_ps(hy, hx), _mm256_mul_ps(hy, lx),
                      _mm256_mul_ps(ly, hx), _mm256_mul_ps(ly, lx));
    store_point_major(taps_dx + t, _mm256_xor_ps(hy, sign), hy,
                      _mm256_xor_ps(ly, sign), ly);
    store_point_major(taps_dy + t, _mm256_xor_ps(hx, sign),
                      _mm256_xor_ps(lx, sign), hx, lx);
    store_point_major(reinterpret_cast<float*>(taps_ok + t), v00, v01, v10, v11);
    const __m256i base = _mm256_add_epi32(
        _mm256_mullo_epi32(_mm256_cvttps_epi32(fy), vrow),
        _mm256_mullo_epi32(_mm256_cvttps_epi32(fx), vC));
    const __m256i o10 = _mm256_add_epi32(base, vrow);
    store_point_major(reinterpret_cast<float*>(taps_off + t),
                      _mm256_and_ps(v00, _mm256_castsi256_ps(base)),
                      _mm256_and_ps(v01, _mm256_castsi256_ps(_mm256_add_epi32(base, vC))),
                      _mm256_and_ps(v10, _mm256_castsi256_ps(o10)),
                      _mm256_and_ps(v11, _mm256_castsi256_ps(_mm256_add_epi32(o10, vC))));
  }
}

// backward_taps for fp32 with D a multiple of 8, AVX2: the grad_input
// scatter 8 channels wide, the four dot products of a point at once (a
// neighbour outside the image reads the gradient row instead and is then
// ignored). Same operations and order as backward_taps: bit-identical.
DCNV3_TARGET_AVX2 __attribute__((noinline)) void backward_taps_avx2(
    const int32_t* __restrict__ index, const int32_t* __restrict__ valid,
    const float* __restrict__ weight, const float* __restrict__ wdx,
    const float* __restrict__ wdy, int P, const float* __restrict__ go,
    const float* __restrict__ in_g, float* __restrict__ gin_g,
    const float* __restrict__ mask, int D, int d_begin, int d_end,
    bool with_point_grads, float scale, float* __restrict__ grad_offset,
    float* __restrict__ grad_mask) {
  const int n = d_end - d_begin;
  alignas(16) float v[4];
  for (int p = 0; p < P; ++p) {
    const float m = mask[p];
    for (int t = 4 * p; t < 4 * p + 4; ++t) {
      if (!valid[t]) continue;
      const float a = weight[t] * m;
      const __m256 av = _mm256_set1_ps(a);
      float* y = gin_g + index[t] + d_begin;
      const float* x = go + d_begin;
      int d = 0;
      for (; d + 8 <= n; d += 8) {
        _mm256_storeu_ps(y + d, _mm256_add_ps(_mm256_loadu_ps(y + d),
                                              _mm256_mul_ps(av, _mm256_loadu_ps(x + d))));
      }
      for (; d < n; ++d) y[d] += a * x[d];
    }
    if (!with_point_grads) continue;
    const float* src[4];
    for (int k = 0; k < 4; ++k) src[k] = valid[4 * p + k] ? in_g + index[4 * p + k] : go;
    __m128 acc0 = _mm_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int d0 = 0; d0 < D; d0 += 4) {
      const __m128 g4 = _mm_loadu_ps(go + d0);
      acc0 = _mm_add_ps(acc0, _mm_mul_ps(g4, _mm_loadu_ps(src[0] + d0)));
      acc1 = _mm_add_ps(acc1, _mm_mul_ps(g4, _mm_loadu_ps(src[1] + d0)));
      acc2 = _mm_add_ps(acc2, _mm_mul_ps(g4, _mm_loadu_ps(src[2] + d0)));
      acc3 = _mm_add_ps(acc3, _mm_mul_ps(g4, _mm_loadu_ps(src[3] + d0)));
    }
    _mm_store_ps(v, _mm_hadd_ps(_mm_hadd_ps(acc0, acc1), _mm_hadd_ps(acc2, acc3)));
    float vm = 0, vx = 0, vy = 0;
    for (int k = 0; k < 4; ++k) {
      const int t = 4 * p + k;
      if (!valid[t]) continue;
      vm += weight[t] * v[k];
      vx += wdx[t] * v[k];
      vy += wdy[t] * v[k];
    }
    grad_mask[p] = vm;
    grad_offset[2 * p] = m * scale * vx;
    grad_offset[2 * p + 1] = m * scale * vy;
  }
}
#endif

// The backward pass, in one sweep. Each task owns one (image, group, channel
// slice) of grad_input and walks the output pixels in order: tasks never
// write the same element and every sum has a fixed order, whatever the
// number of threads. The task holding a group's first slice also computes
// the gradients of that group's offsets and mask (a gather over all D
// channels, read-only).
template <typename scalar_t, typename opmath_t, int B>
void backward_kernel(const Geometry& g, const scalar_t* grad_out,
                     const scalar_t* input, const scalar_t* offset,
                     const scalar_t* mask, opmath_t* grad_input,
                     scalar_t* grad_offset, scalar_t* grad_mask) {
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t image = static_cast<int64_t>(g.height) * g.width * C;
  const opmath_t scale = static_cast<opmath_t>(g.offset_scale);
  // Split a group's channels (in blocks of 8) only when images x groups
  // alone cannot keep the threads busy.
  const int64_t tasks_wanted = 2 * at::get_num_threads();
  int slices = 1;
  while (g.batch * g.group * slices < tasks_wanted && D / (slices * 2) >= 8) {
    slices *= 2;
  }
  const int slice = (D + slices - 1) / slices;
#if DCNV3_HAVE_AVX2
  const bool avx2 = std::is_same<scalar_t, float>::value && D % 8 == 0 &&
                    image < (int64_t(1) << 31) && use_avx2();
#endif
  at::parallel_for(
      0, g.batch * g.group * slices, 1, [&](int64_t begin, int64_t end) {
        Taps<scalar_t, opmath_t> taps(g);
        std::vector<opmath_t> go(D);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / (int64_t(g.group) * slices);
          const int grp = static_cast<int>((task / slices) % g.group);
          const int part = static_cast<int>(task % slices);
          const int d_begin = part * slice;
          const int d_end = std::min(D, d_begin + slice);
          const scalar_t* in_g = input + n * image + grp * D;
          opmath_t* gin_g = grad_input + n * image + grp * D;
          for (int i = 0; i < g.h_out; ++i) {
            for (int j = 0; j < g.w_out; ++j) {
              const int64_t q = (n * g.h_out + i) * g.w_out + j;
              const int64_t k0 = (q * g.group + grp) * P;
              const scalar_t* go_q = grad_out + q * C + grp * D;
              for (int d = 0; d < D; ++d) go[d] = static_cast<opmath_t>(go_q[d]);
#if DCNV3_HAVE_AVX2
              if constexpr (std::is_same<scalar_t, float>::value) {
                if (avx2) {
                  opmath_t cx, cy;
                  centre_location(g, i, j, cx, cy);
                  gather_grad_avx2(g, cx, cy, taps.grid_x.data(),
                                   taps.grid_y.data(), offset + 2 * k0,
                                   taps.offset32.data(), taps.weight.data(),
                                   taps.dx.data(), taps.dy.data(),
                                   taps.valid32.data());
                  backward_taps_avx2(taps.offset32.data(), taps.valid32.data(),
                                     taps.weight.data(), taps.dx.data(),
                                     taps.dy.data(), P, go.data(), in_g, gin_g,
                                     mask + k0, D, d_begin, d_end, part == 0,
                                     scale, grad_offset + 2 * k0,
                                     grad_mask + k0);
                  continue;
                }
              }
#endif
              taps.gather_dense_grad(g, i, j, offset + 2 * k0);
              backward_taps(taps.index.data(), taps.valid.data(),
                            taps.weight.data(), taps.dx.data(), taps.dy.data(),
                            P, go.data(), in_g, gin_g, mask + k0, D, d_begin,
                            d_end, part == 0, scale, grad_offset + 2 * k0,
                            grad_mask + k0);
            }
          }
        }
      });
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "DCNv3 (CPU kernel): ", name,
              " must be a CPU tensor, got ", t.device());
}

at::Tensor dcnv3_forward_cpu(const at::Tensor& input_, const at::Tensor& offset_,
                             const at::Tensor& mask_, int64_t kernel_h,
                             int64_t kernel_w, int64_t stride_h,
                             int64_t stride_w, int64_t pad_h, int64_t pad_w,
                             int64_t dilation_h, int64_t dilation_w,
                             int64_t group, int64_t group_channels,
                             double offset_scale, int64_t /*im2col_step*/,
                             bool remove_center, bool mask_softmax) {
  check_cpu(input_, "input");
  const Geometry g = make_geometry(
      input_, offset_, mask_, kernel_h, kernel_w, stride_h, stride_w, pad_h,
      pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
      remove_center);
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  // Stopgap until the kernel fuses it: the softmax runs before the kernel.
  const at::Tensor mask = mask_softmax ? softmax_points(mask_, g).contiguous()
                                       : mask_.contiguous();
  at::Tensor output =
      at::empty({g.batch, g.h_out, g.w_out, g.channels}, input.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward_cpu", [&] {
        // Channel blocks of 16 when the group is that wide, else 8.
        auto run = [&](auto block) {
          forward_kernel<scalar_t, decltype(block)::value>(
              g, input.const_data_ptr<scalar_t>(),
              offset.const_data_ptr<scalar_t>(),
              mask.const_data_ptr<scalar_t>(),
              output.mutable_data_ptr<scalar_t>());
        };
        if (g.group_channels % 16 == 0) {
          run(std::integral_constant<int, 16>());
        } else {
          run(std::integral_constant<int, 8>());
        }
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_,
    const at::Tensor& offset_, const at::Tensor& mask_, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t /*im2col_step*/,
    bool remove_center, bool mask_softmax) {
  check_cpu(input_, "input");
  const Geometry g = make_geometry(
      input_, offset_, mask_, kernel_h, kernel_w, stride_h, stride_w, pad_h,
      pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
      remove_center);
  check_grad_output(grad_output_, input_, g);
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = mask_softmax ? softmax_points(mask_, g).contiguous()
                                       : mask_.contiguous();
  const at::Tensor grad_output =
      grad_output_.to(input.scalar_type()).contiguous();
  const auto opmath = at::toOpMathType(input.scalar_type());
  at::Tensor grad_input = at::zeros(input.sizes(), input.options().dtype(opmath));
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = at::zeros_like(mask);
  if (grad_output.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_backward_cpu",
        [&] {
          using opmath_t = at::opmath_type<scalar_t>;
          auto run = [&](auto block) {
            backward_kernel<scalar_t, opmath_t, decltype(block)::value>(
                g, grad_output.const_data_ptr<scalar_t>(),
                input.const_data_ptr<scalar_t>(),
                offset.const_data_ptr<scalar_t>(),
                mask.const_data_ptr<scalar_t>(),
                grad_input.mutable_data_ptr<opmath_t>(),
                grad_offset.mutable_data_ptr<scalar_t>(),
                grad_mask.mutable_data_ptr<scalar_t>());
          };
          if (g.group_channels >= 16) {
            run(std::integral_constant<int, 16>());
          } else {
            run(std::integral_constant<int, 8>());
          }
        });
  }
  if (mask_softmax) grad_mask = softmax_points_backward(grad_mask, mask_, g);
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3_forward", &dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3_backward_cpu);
}

}  // namespace ops_dcnv3
