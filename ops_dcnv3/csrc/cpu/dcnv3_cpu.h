// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// What the CPU kernel's instruction-set files share: the taps of one
// (pixel, group) and the AVX2 and AVX-512 functions (dcnv3_cpu_avx2.cpp,
// dcnv3_cpu_avx512.cpp) that the portable code (dcnv3_cpu.cpp) calls when
// the CPU has them.
//
// All instruction sets compute the same operations in the same order (no
// FMA, the same summation trees), so that they give identical bits; the
// tests compare them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../dcnv3_common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DCNV3_HAVE_AVX2 1
#include <immintrin.h>
#define DCNV3_TARGET_AVX2 __attribute__((target("avx2")))
#define DCNV3_TARGET_AVX512 __attribute__((target("avx512f")))
#else
#define DCNV3_HAVE_AVX2 0
#endif

namespace ops_dcnv3 {
namespace cpu {

// The bilinear taps of a run of points (the P points of each of a pixel's
// groups, one after the other, as the offsets and the mask hold them): for
// each point p its four neighbours k = 0 (y0, x0), 1 (y0, x0 + 1), 2
// (y0 + 1, x0), 3 (y0 + 1, x0 + 1), stored neighbour-major: tap (p, k) is
// entry k * stride + p of each array, the stride being a multiple of 8 (so
// the AVX2 gather writes 8 points of one neighbour with one store) with 8
// entries to spare (so 8-wide reads of a group's points that start at any
// point stay inside). A group's taps are the view that starts at its first
// point (`at`). The kernels visit the taps point by point, k inner. A tap
// whose neighbour lies outside the image has index -1 (its other entries
// are unspecified) and is skipped, so a point that falls outside (or has a
// NaN location) contributes exactly nothing, whatever the input holds.
// For the backward the gather also keeps each point's fractional position
// (lx, ly), entry p (one a point): the derivatives of its four weights,
// d w_k / d x = (-hy, hy, -ly, ly) and d w_k / d y = (-hx, -lx, hx, lx)
// with hx = 1 - lx and hy = 1 - ly, are formed where they are used
// (point_gradients), from 2 stored values a point instead of 8.
template <typename opmath_t, typename index_t>
struct Taps {
  index_t* index;    // element offset of the neighbour in the image, or -1
  opmath_t* weight;  // bilinear weight
  opmath_t* lx;      // x - floor(x) (only when derivatives are asked for)
  opmath_t* ly;      // y - floor(y)
  int stride;

  Taps at(int point) const {
    return {index + point, weight + point, lx + point, ly + point, stride};
  }
};

inline int padded_points(int points) { return (points + 7) / 8 * 8; }

// Sums of P values are taken in 8 lanes (value p into lane p % 8, in
// order), then over the lanes by this tree, adjacent pairs first: the order
// of an AVX2 horizontal add, so that both instruction sets give one answer.
constexpr int kLanes = 8;

template <typename opmath_t>
inline opmath_t lane_tree(opmath_t* part) {
  for (int width = 1; width < kLanes; width *= 2) {
    for (int d = 0; d + width < kLanes; d += 2 * width) part[d] += part[d + width];
  }
  return part[0];
}

// exp(x) for the mask softmax, where x = logit - max logit <= 0: Cody-Waite
// range reduction to r in [-ln2/2, ln2/2], a degree-7 polynomial in Horner
// form (the classic single-precision minimax coefficients, within 2 ulp of
// expf), scaled by 2^n through the exponent bits. x is clamped at -87
// (exp(-87) = 1.6e-38, next to the normal minimum), which no softmax over
// weights that sum to 1 can tell from 0; NaN comes back as NaN. Written as
// plain multiplies and adds, without FMA, so that exp_avx2 reproduces it
// bit for bit; it replaces the libm call, which cost as much as the
// sampling itself.
namespace expf_poly {
constexpr float kMin = -87.f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f,
                kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace expf_poly

inline float softmax_exp(float x) {
  using namespace expf_poly;
  if (x != x) return x;
  x = kMin > x ? kMin : x;
  const float n = std::floor(x * kLog2e + 0.5f);
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float y = kP0 * r + kP1;
  y = y * r + kP2;
  y = y * r + kP3;
  y = y * r + kP4;
  y = y * r + kP5;
  y = y * (r * r) + r;
  y = y + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline double softmax_exp(double x) { return std::exp(x); }

#if DCNV3_HAVE_AVX2
// Sums of four vectors of 8 lanes, each in lane_tree's order
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
DCNV3_TARGET_AVX2 inline __m128 tree_sums(__m256 a0, __m256 a1, __m256 a2,
                                          __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// True when the CPU can run the functions below.
bool cpu_has_avx2();

// The softmax weights of `groups` groups of P mask logits each (one after
// the other), as the portable mask_weights(softmax=true) computes them,
// into out[0:groups * P]; writes whole vectors, so out needs 7 spare
// entries past those (their values are unspecified). work: 8 * P floats of
// scratch. With exps_avx512 (only where the CPU has AVX-512F) the
// exponentials run in softmax_exps_avx512.
void softmax_avx2(const float* logits, int groups, int P, float* work, float* out,
                  bool exps_avx512);

// The taps of n points of one pixel, whose kernel centre is at (cx, cy):
// point p has kernel_point() offsets (grid_x[p], grid_y[p]) and sampling
// offsets offset[2p], offset[2p + 1]. lx and ly are written only with
// `derivatives`. With `mask` (the forward), each weight comes out
// multiplied by its point's mask weight mask[p]. Writes entries up to the
// next multiple of 8 past n; reads grid_x, grid_y and mask up to there
// too. Needs image offsets below 2^31 elements.
void gather_avx2(const Geometry& g, float cx, float cy, const float* grid_x,
                 const float* grid_y, const float* offset, int n,
                 const Taps<float, int32_t>& taps, bool derivatives,
                 const float* mask);

// For each of `groups` groups of one pixel, one after the other (group
// grp's taps start at point grp * P, its channels at grp * D of `in` and
// `out`): out[0:D] = the sum over the taps (p, k) inside the image of
// weight * in[index + d] (weights already multiplied by the mask), in two
// running sums, one per row of neighbours (k = 0, 1 and k = 2, 3), each in
// point order, added last; D a multiple of 8. (One call a pixel rather than
// a group: at InternImage-T's 16 channels a group the call's own cost was
// 6-10% of the sums and the gather.)
void weighted_sum_avx2(const Taps<float, int32_t>& taps, int groups, int P,
                       const float* in, int D, float* out);

// Where one task of the backward (a band of rows of an image, see
// backward_kernel in dcnv3_cpu.cpp) adds the gradient of a neighbour at
// image offset i (as Taps::index holds it): into its window, the image's
// elements [begin, begin + len) (its own rows and the halo around them),
// stored from `window` on; elsewhere (nullptr) for the rest, which the
// caller handles. `window` points at the group's first channel.
// `whole`: the window is the whole image (begin 0), so every tap inside the
// image has its place there and the vector code skips the comparison.
template <typename opmath_t, typename index_t>
struct GradRows {
  opmath_t* window;
  index_t begin, len;
  bool whole;

  // One comparison: below `begin`, i - begin wraps around to beyond len.
  opmath_t* at(index_t i) const {
    using unsigned_t = std::make_unsigned_t<index_t>;
    return static_cast<unsigned_t>(i - begin) < static_cast<unsigned_t>(len)
               ? window + (i - begin)
               : nullptr;
  }
  GradRows shifted(int channels) const { return {window + channels, begin, len, whole}; }
};

// The backward of `groups` groups of one pixel, one after the other (group
// grp: taps and mask from point grp * P on, go, in and dst's channels from
// grp * D on, v from 4 * grp * P on). For each tap (p, k) of a group inside
// the image, v[4 * p + k] = sum_d go[d] * in[index + d] over the D channels
// (0 for taps outside; point-major, the four of a point stored at once),
// and, where dst.at(index) is not null, dst.at(index)[d] += a * go[d] with
// a = weight * mask[p]. Returns the number of taps inside the image whose
// dst.at is null, over all the groups, which the caller scatters itself.
// D a multiple of 8.
int group_backward_avx2(const Taps<float, int32_t>& taps, const float* mask,
                        int groups, int P, const float* go, const float* in,
                        const GradRows<float, int32_t>& dst, int D, float* v);

// AVX-512 (dcnv3_cpu_avx512.cpp), where the CPU has AVX-512F:
// weighted_sum_avx2 with 16 channels a vector (a last 8 by weighted_sum_avx2),
// lane for lane the same operations in the same order: the same bits.
bool cpu_has_avx512();
void weighted_sum_avx512(const Taps<float, int32_t>& taps, int groups, int P,
                         const float* in, int D, float* out);
// And softmax_avx2's exponentials: work[8 * p + l] = exp(work[8 * p + l] -
// top[l]) for the P points of its 8 lanes, two points a vector, lane for
// lane exp_avx2's operations.
void softmax_exps_avx512(float* work, int P, const float* top);

// The offset gradients of n points (all the groups of a pixel, one after
// the other) from the dot products v of group_backward_avx2, and grad_w,
// the gradients of their mask weights, as the portable point_gradients;
// reads w (the mask weights), v and the taps 8 points at a time (see
// Taps; v up to 4 * padded_points(n)) and writes grad_w (scratch) up to
// padded_points(n).
void point_gradients_avx2(const Taps<float, int32_t>& taps, const float* v,
                          const float* w, int n, float scale, float* grad_w,
                          float* grad_offset);
// The gradients of the P mask logits (through the softmax) of each of
// `groups` groups, one after the other, from their weights w and grad_w, as
// the portable mask_gradients(softmax=true); reads a group's w and grad_w up
// to padded_points(P) from its first point on.
void softmax_gradients_avx2(const float* w, const float* grad_w, int groups, int P,
                            float* grad_mask);
#endif

}  // namespace cpu
}  // namespace ops_dcnv3
