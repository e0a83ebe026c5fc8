// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// The AVX2 versions of the CPU kernel's three inner pieces, for fp32 with
// group_channels a multiple of 8 (see dcnv3_cpu.h). Each function carries
// its own target attribute, so the rest of the build stays portable and
// the caller picks these only where the CPU has AVX2. Every piece does the
// operations of its portable twin in dcnv3_cpu.cpp, in the same order and
// without FMA: the results are bit-identical.
#include "dcnv3_cpu.h"

#if DCNV3_HAVE_AVX2
#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace ops_dcnv3 {
namespace cpu {
namespace {

// `at` where `ok`, else -1 (the index of a tap outside the image).
DCNV3_TARGET_AVX2 inline __m256i or_outside(__m256 ok, __m256i at) {
  return _mm256_castps_si256(_mm256_blendv_ps(
      _mm256_castsi256_ps(_mm256_set1_epi32(-1)), _mm256_castsi256_ps(at), ok));
}

// Writes the first `count` lanes of v (none for count <= 0, all 8 from 8
// on) to dst, with plain stores of 32, 16, 8 and 4 bytes. Not a masked
// store: on an AVX2-only AMD EPYC (stop 26's host) vmaskmovps took about
// half of softmax_gradients_avx2's perf samples at 9 points a group.
DCNV3_TARGET_AVX2 inline void store_first(float* dst, __m256 v, int count) {
  if (count >= 8) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  __m128 part = _mm256_castps256_ps128(v);
  if (count >= 4) {
    _mm_storeu_ps(dst, part);
    part = _mm256_extractf128_ps(v, 1);
    dst += 4;
    count -= 4;
  }
  if (count >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), part);
    part = _mm_movehl_ps(part, part);
    dst += 2;
    count -= 2;
  }
  if (count >= 1) _mm_store_ss(dst, part);
}

}  // namespace

DCNV3_TARGET_AVX2 bool cpu_has_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2");
  return supported;
}

// exp_avx2 is softmax_exp (dcnv3_cpu.h) on 8 lanes, operation for operation.
// A NaN passes the clamp (max returns its second operand when one is NaN)
// and every step after it; its conversion to an integer, unlike C++'s, is
// defined (0x80000000), and the product with that scale stays NaN.
DCNV3_TARGET_AVX2 inline __m256 exp_avx2(__m256 x) {
  using namespace expf_poly;
  x = _mm256_max_ps(_mm256_set1_ps(kMin), x);
  const __m256 n = _mm256_floor_ps(
      _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(kLn2Hi)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(kLn2Lo)));
  __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(kP0), r), _mm256_set1_ps(kP1));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(kP2));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(kP3));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(kP4));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(kP5));
  y = _mm256_add_ps(_mm256_mul_ps(y, _mm256_mul_ps(r, r)), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

// The sum of the 8 lanes in lane_tree's order, in every lane.
DCNV3_TARGET_AVX2 inline __m256 lane_tree_avx2(__m256 v) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(v, v), _mm256_hadd_ps(v, v));
  return _mm256_broadcastss_ps(
      _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

// Rows r[0..7] of an 8x8 block become its columns.
DCNV3_TARGET_AVX2 inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Eight groups at a time, one group a lane: a group's max, sum and
// division are then plain vector operations, with no horizontal step, and
// no lane is idle (per group, InternImage's 9 points took two vectors, the
// second with one live lane, and each group waited on its own chain of
// horizontal max, exponentials, horizontal sum and division). The logits
// are gathered point by point into `work` (point-major, 8 lanes a point),
// the exponentials replace them there (two points a vector in AVX-512,
// where the caller allows it), and the weights go back group-major
// through 8x8 transposes, whole vectors a group: the last block of a
// group's points spills into the next group's first ones, so the blocks go
// last first and the next group's first block writes them again.
DCNV3_TARGET_AVX2 void softmax_avx2(const float* __restrict__ logits, int groups,
                                    int P, float* __restrict__ work,
                                    float* __restrict__ out, bool exps_avx512) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i at = _mm256_mullo_epi32(lane, _mm256_set1_epi32(P));
  for (int g0 = 0; g0 < groups; g0 += 8) {
    const int live = std::min(8, groups - g0);
    const __m256 in_use =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(live), lane));
    const float* l = logits + g0 * P;
    __m256 top = _mm256_setzero_ps();
    for (int p = 0; p < P; ++p) {
      const __m256 v =
          _mm256_mask_i32gather_ps(_mm256_setzero_ps(), l + p, at, in_use, 4);
      _mm256_storeu_ps(work + 8 * p, v);
      // max(v, top) is v > top ? v : top, the portable comparison.
      top = p == 0 ? v : _mm256_max_ps(v, top);
    }
    // The exponentials, then their sum in lane_tree's 8 parts (p % 8) and
    // order.
    if (exps_avx512) {
      alignas(32) float tops[8];
      _mm256_store_ps(tops, top);
      softmax_exps_avx512(work, P, tops);
    } else {
      for (int p = 0; p < P; ++p) {
        _mm256_storeu_ps(work + 8 * p,
                         exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(work + 8 * p), top)));
      }
    }
    __m256 part[kLanes];
    for (int k = 0; k < kLanes; ++k) part[k] = _mm256_setzero_ps();
    for (int p = 0; p < P; ++p) {
      part[p % kLanes] = _mm256_add_ps(part[p % kLanes], _mm256_loadu_ps(work + 8 * p));
    }
    for (int width = 1; width < kLanes; width *= 2) {
      for (int d = 0; d + width < kLanes; d += 2 * width) {
        part[d] = _mm256_add_ps(part[d], part[d + width]);
      }
    }
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.f), part[0]);
    for (int p0 = (P - 1) / 8 * 8; p0 >= 0; p0 -= 8) {
      __m256 r[8];
      for (int k = 0; k < 8; ++k) {
        r[k] = p0 + k < P ? _mm256_mul_ps(_mm256_loadu_ps(work + 8 * (p0 + k)), inv)
                          : _mm256_setzero_ps();
      }
      transpose8(r);
      for (int k = 0; k < live; ++k) _mm256_storeu_ps(out + (g0 + k) * P + p0, r[k]);
    }
  }
}

DCNV3_TARGET_AVX2 void gather_avx2(const Geometry& g, float cx, float cy,
                                   const float* __restrict__ gx,
                                   const float* __restrict__ gy,
                                   const float* __restrict__ off, int n,
                                   const Taps<float, int32_t>& taps,
                                   bool derivatives,
                                   const float* __restrict__ mask) {
  const int S = taps.stride;
  const __m256 s = _mm256_set1_ps(static_cast<float>(g.offset_scale));
  const __m256 vcx = _mm256_set1_ps(cx), vcy = _mm256_set1_ps(cy);
  const __m256 minus1 = _mm256_set1_ps(-1.f), one = _mm256_set1_ps(1.f);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 W = _mm256_set1_ps(static_cast<float>(g.width));
  const __m256 H = _mm256_set1_ps(static_cast<float>(g.height));
  const __m256i vC = _mm256_set1_epi32(g.channels);
  const __m256i vrow = _mm256_set1_epi32(g.width * g.channels);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int p0 = 0; p0 < n; p0 += 8) {
    const float* o = off + 2 * p0;
    // (x0 y0 x1 y1 ...) -> x0..x7 and y0..y7; past the last point, zeros
    // (masked loads: nothing beyond the offsets is read).
    __m256 a, b;
    if (n - p0 >= 8) {
      a = _mm256_loadu_ps(o);
      b = _mm256_loadu_ps(o + 8);
    } else {
      const __m256i floats = _mm256_set1_epi32(2 * (n - p0));
      a = _mm256_maskload_ps(o, _mm256_cmpgt_epi32(floats, lane));
      b = _mm256_maskload_ps(o + 8, _mm256_cmpgt_epi32(floats, _mm256_add_epi32(lane, _mm256_set1_epi32(8))));
    }
    const __m256 ox = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    const __m256 oy = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
    __m256 x = _mm256_add_ps(vcx, _mm256_mul_ps(s, _mm256_add_ps(_mm256_loadu_ps(gx + p0), ox)));
    __m256 y = _mm256_add_ps(vcy, _mm256_mul_ps(s, _mm256_add_ps(_mm256_loadu_ps(gy + p0), oy)));
    // Ordered comparisons: a NaN location is outside.
    const __m256 inside = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(x, minus1, _CMP_GT_OQ), _mm256_cmp_ps(y, minus1, _CMP_GT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(x, W, _CMP_LT_OQ), _mm256_cmp_ps(y, H, _CMP_LT_OQ)));
    x = _mm256_and_ps(x, inside);  // 0 outside, so that the conversions stay defined
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
    __m256 w00 = _mm256_mul_ps(hy, hx), w01 = _mm256_mul_ps(hy, lx);
    __m256 w10 = _mm256_mul_ps(ly, hx), w11 = _mm256_mul_ps(ly, lx);
    if (mask) {
      const __m256 m = _mm256_loadu_ps(mask + p0);
      w00 = _mm256_mul_ps(w00, m);
      w01 = _mm256_mul_ps(w01, m);
      w10 = _mm256_mul_ps(w10, m);
      w11 = _mm256_mul_ps(w11, m);
    }
    float* const w = taps.weight + p0;
    _mm256_storeu_ps(w, w00);
    _mm256_storeu_ps(w + S, w01);
    _mm256_storeu_ps(w + 2 * S, w10);
    _mm256_storeu_ps(w + 3 * S, w11);
    if (derivatives) {
      _mm256_storeu_ps(taps.lx + p0, lx);
      _mm256_storeu_ps(taps.ly + p0, ly);
    }
    const __m256i base = _mm256_add_epi32(
        _mm256_mullo_epi32(_mm256_cvttps_epi32(fy), vrow),
        _mm256_mullo_epi32(_mm256_cvttps_epi32(fx), vC));
    const __m256i o10 = _mm256_add_epi32(base, vrow);
    __m256i* const at = reinterpret_cast<__m256i*>(taps.index + p0);
    _mm256_storeu_si256(at, or_outside(v00, base));
    _mm256_storeu_si256(at + S / 8, or_outside(v01, _mm256_add_epi32(base, vC)));
    _mm256_storeu_si256(at + 2 * S / 8, or_outside(v10, o10));
    _mm256_storeu_si256(at + 3 * S / 8, or_outside(v11, _mm256_add_epi32(o10, vC)));
  }
}

DCNV3_TARGET_AVX2 void weighted_sum_avx2(const Taps<float, int32_t>& all, int groups,
                                         int P, const float* in_all, int D,
                                         float* out_all) {
  const int S = all.stride;
  for (int grp = 0; grp < groups; ++grp) {
    const int32_t* __restrict__ index = all.index + grp * P;
    const float* __restrict__ weight = all.weight + grp * P;
    const float* __restrict__ in = in_all + grp * D;
    float* __restrict__ out = out_all + grp * D;
    int d0 = 0;
    for (; d0 + 16 <= D; d0 += 16) {
      // [row][half]: two rows of neighbours, two halves of 8 channels.
      __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()},
                          {_mm256_setzero_ps(), _mm256_setzero_ps()}};
      for (int p = 0; p < P; ++p) {
        for (int k = 0; k < 4; ++k) {
          const int t = k * S + p;
          if (index[t] < 0) continue;
          const __m256 w = _mm256_broadcast_ss(weight + t);
          const float* v = in + index[t] + d0;
          __m256* a = acc[k >> 1];
          a[0] = _mm256_add_ps(a[0], _mm256_mul_ps(w, _mm256_loadu_ps(v)));
          a[1] = _mm256_add_ps(a[1], _mm256_mul_ps(w, _mm256_loadu_ps(v + 8)));
        }
      }
      _mm256_storeu_ps(out + d0, _mm256_add_ps(acc[0][0], acc[1][0]));
      _mm256_storeu_ps(out + d0 + 8, _mm256_add_ps(acc[0][1], acc[1][1]));
    }
    for (; d0 < D; d0 += 8) {
      __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int p = 0; p < P; ++p) {
        for (int k = 0; k < 4; ++k) {
          const int t = k * S + p;
          if (index[t] < 0) continue;
          const __m256 w = _mm256_broadcast_ss(weight + t);
          acc[k >> 1] = _mm256_add_ps(acc[k >> 1],
                                      _mm256_mul_ps(w, _mm256_loadu_ps(in + index[t] + d0)));
        }
      }
      _mm256_storeu_ps(out + d0, _mm256_add_ps(acc[0], acc[1]));
    }
  }
}

namespace {

// One tap (p, k) of group_backward_avx2: returns the 8 lane sums of its dot
// product (0 outside the image) and, where dst.at gives a place, adds a *
// go there, a = *weight * m (m: its point's mask weight in every lane);
// counts it in n_far where it does not. Groups of 8 * V channels
// (V > 0) take go from the V vectors in g; others (V == 0) read D channels
// of go. The accumulator is returned, not written into an array the caller
// holds: an array of a point's four made GCC zero it in memory (rep stos)
// and keep it on the stack, which cost several times the tap's arithmetic.
// With `Whole` (dst.whole: one band has the whole image), every tap inside
// the image has its place and none is looked up.
template <int V, bool Whole>
DCNV3_TARGET_AVX2 __attribute__((always_inline)) inline __m256 tap_backward(
    int32_t at, const float* weight, __m256 m, const __m256* g, const float* __restrict__ go,
    const float* __restrict__ in, const GradRows<float, int32_t>& dst, int D,
    int& n_far) {
  __m256 acc = _mm256_setzero_ps();
  if (at < 0) return acc;
  const float* x = in + at;
  float* const y = Whole ? dst.window + at : dst.at(at);
  const int vectors = V > 0 ? V : D / 8;
  if (Whole || y) {  // the scatter and the dot product in one sweep
    const __m256 av = _mm256_mul_ps(_mm256_broadcast_ss(weight), m);
    for (int e = 0; e < vectors; ++e) {
      const __m256 g8 = V > 0 ? g[e] : _mm256_loadu_ps(go + 8 * e);
      _mm256_storeu_ps(y + 8 * e, _mm256_add_ps(_mm256_loadu_ps(y + 8 * e),
                                                _mm256_mul_ps(av, g8)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(g8, _mm256_loadu_ps(x + 8 * e)));
    }
  } else {
    ++n_far;
    for (int e = 0; e < vectors; ++e) {
      const __m256 g8 = V > 0 ? g[e] : _mm256_loadu_ps(go + 8 * e);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(g8, _mm256_loadu_ps(x + 8 * e)));
    }
  }
  return acc;
}

// group_backward_avx2 for groups of 8 * V channels, each group's V vectors
// of grad_out in registers (V > 0), or of any multiple of 8 (V == 0). `dst`
// is a copy of `rows` held here: the stores through the vector intrinsics may
// alias anything, so GCC read a field of the caller's GradRows again after
// every tap's scatter; and a tap's weight times its point's mask weight is
// one vector multiply (the same operation in every lane) where it was a
// scalar one and a broadcast. Together 3-5% off this function at
// InternImage-T's stage 1 (a throwaway harness over the real taps, the two
// versions alternated, one thread), with the same bits.
template <int V, bool Whole>
DCNV3_TARGET_AVX2 int group_backward_v_avx2(
    const Taps<float, int32_t>& taps, const float* mask_all, int groups, int P,
    const float* go_all, const float* in_all, const GradRows<float, int32_t>& rows, int D,
    float* v_all) {
  const int S = taps.stride;
  int n_far = 0;
  for (int grp = 0; grp < groups; ++grp) {
    const int32_t* __restrict__ index = taps.index + grp * P;
    const float* __restrict__ weight = taps.weight + grp * P;
    const float* __restrict__ mask = mask_all + grp * P;
    const float* __restrict__ go = go_all + grp * D;
    const float* __restrict__ in = in_all + grp * D;
    float* __restrict__ v = v_all + 4 * grp * P;
    const GradRows<float, int32_t> dst = rows.shifted(grp * D);
    __m256 g[V > 0 ? V : 1];
    for (int e = 0; e < V; ++e) g[e] = _mm256_loadu_ps(go + 8 * e);
    for (int p = 0; p < P; ++p) {
      const __m256 m = _mm256_broadcast_ss(mask + p);
      const __m256 a0 = tap_backward<V, Whole>(index[p], weight + p, m, g, go, in, dst, D, n_far);
      const __m256 a1 =
          tap_backward<V, Whole>(index[S + p], weight + S + p, m, g, go, in, dst, D, n_far);
      const __m256 a2 = tap_backward<V, Whole>(index[2 * S + p], weight + 2 * S + p, m, g, go,
                                               in, dst, D, n_far);
      const __m256 a3 = tap_backward<V, Whole>(index[3 * S + p], weight + 3 * S + p, m, g, go,
                                               in, dst, D, n_far);
      _mm_storeu_ps(v + 4 * p, tree_sums(a0, a1, a2, a3));
    }
  }
  return n_far;
}

template <bool Whole>
DCNV3_TARGET_AVX2 int group_backward_w_avx2(
    const Taps<float, int32_t>& taps, const float* mask, int groups, int P, const float* go,
    const float* in, const GradRows<float, int32_t>& dst, int D, float* v) {
  switch (D) {
    case 8: return group_backward_v_avx2<1, Whole>(taps, mask, groups, P, go, in, dst, D, v);
    case 16: return group_backward_v_avx2<2, Whole>(taps, mask, groups, P, go, in, dst, D, v);
    case 24: return group_backward_v_avx2<3, Whole>(taps, mask, groups, P, go, in, dst, D, v);
    case 32: return group_backward_v_avx2<4, Whole>(taps, mask, groups, P, go, in, dst, D, v);
    default: return group_backward_v_avx2<0, Whole>(taps, mask, groups, P, go, in, dst, D, v);
  }
}

}  // namespace

DCNV3_TARGET_AVX2 int group_backward_avx2(
    const Taps<float, int32_t>& taps, const float* mask, int groups, int P, const float* go,
    const float* in, const GradRows<float, int32_t>& dst, int D, float* v) {
  return dst.whole ? group_backward_w_avx2<true>(taps, mask, groups, P, go, in, dst, D, v)
                   : group_backward_w_avx2<false>(taps, mask, groups, P, go, in, dst, D, v);
}

DCNV3_TARGET_AVX2 void point_gradients_avx2(
    const Taps<float, int32_t>& taps, const float* __restrict__ v,
    const float* __restrict__ w, int n, float scale, float* __restrict__ grad_w,
    float* __restrict__ grad_offset) {
  const int S = taps.stride;
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  for (int p0 = 0; p0 < n; p0 += 8) {
    // v is point-major (4 a point, stored 4 at a time by
    // group_backward_avx2): read in the stores' own units, each of which a
    // load can take from the store buffer, then transpose to neighbour-major
    // vectors of points p0..p0+7: vk[k] lane l = v[4 * (p0 + l) + k].
    const float* vp = v + 4 * p0;
    const __m256 r0 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(vp)),
                                           _mm_loadu_ps(vp + 16), 1);
    const __m256 r1 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(vp + 4)),
                                           _mm_loadu_ps(vp + 20), 1);
    const __m256 r2 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(vp + 8)),
                                           _mm_loadu_ps(vp + 24), 1);
    const __m256 r3 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(vp + 12)),
                                           _mm_loadu_ps(vp + 28), 1);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 vk[4] = {_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
                          _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2))};
    // The weights' derivatives, as point_gradients forms them (see Taps).
    const __m256 lx = _mm256_loadu_ps(taps.lx + p0), ly = _mm256_loadu_ps(taps.ly + p0);
    const __m256 hx = _mm256_sub_ps(one, lx), hy = _mm256_sub_ps(one, ly);
    const __m256 wx[4] = {_mm256_xor_ps(hy, sign), hy, _mm256_xor_ps(ly, sign), ly};
    const __m256 wy[4] = {_mm256_xor_ps(hx, sign), _mm256_xor_ps(lx, sign), hx, lx};
    __m256 vm = _mm256_setzero_ps(), vx = vm, vy = vm;
    for (int k = 0; k < 4; ++k) {
      const int t = k * S + p0;
      const __m256 vt = vk[k];
      vm = _mm256_add_ps(vm, _mm256_mul_ps(_mm256_loadu_ps(taps.weight + t), vt));
      vx = _mm256_add_ps(vx, _mm256_mul_ps(wx[k], vt));
      vy = _mm256_add_ps(vy, _mm256_mul_ps(wy[k], vt));
    }
    _mm256_storeu_ps(grad_w + p0, vm);
    const __m256 a = _mm256_mul_ps(_mm256_loadu_ps(w + p0), vscale);
    const __m256 gx = _mm256_mul_ps(a, vx), gy = _mm256_mul_ps(a, vy);
    // (x0 y0 x1 y1 ...): points 0-3, then 4-7.
    const __m256 lo = _mm256_unpacklo_ps(gx, gy), hi = _mm256_unpackhi_ps(gx, gy);
    const __m256 first = _mm256_permute2f128_ps(lo, hi, 0x20);
    const __m256 second = _mm256_permute2f128_ps(lo, hi, 0x31);
    float* o = grad_offset + 2 * p0;
    store_first(o, first, 2 * (n - p0));
    store_first(o + 8, second, 2 * (n - p0) - 8);
  }
}

DCNV3_TARGET_AVX2 void softmax_gradients_avx2(const float* __restrict__ w,
                                              const float* __restrict__ grad_w, int groups,
                                              int P, float* __restrict__ grad_mask) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int grp = 0; grp < groups; ++grp) {
    const float* const wg = w + grp * P;
    const float* const gg = grad_w + grp * P;
    __m256 dot = _mm256_setzero_ps();
    for (int p0 = 0; p0 < P; p0 += 8) {
      const __m256 live = _mm256_castsi256_ps(
          _mm256_cmpgt_epi32(_mm256_set1_epi32(P - p0), lane));
      dot = _mm256_add_ps(dot, _mm256_and_ps(live, _mm256_mul_ps(_mm256_loadu_ps(wg + p0),
                                                                 _mm256_loadu_ps(gg + p0))));
    }
    dot = lane_tree_avx2(dot);
    for (int p0 = 0; p0 < P; p0 += 8) {
      store_first(grad_mask + grp * P + p0,
                  _mm256_mul_ps(_mm256_loadu_ps(wg + p0),
                                _mm256_sub_ps(_mm256_loadu_ps(gg + p0), dot)),
                  P - p0);
    }
  }
}

}  // namespace cpu
}  // namespace ops_dcnv3
#endif
