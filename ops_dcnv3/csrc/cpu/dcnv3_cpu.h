// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// What the CPU kernel's two instruction-set files share: the taps of one
// (pixel, group) and the AVX2 functions (dcnv3_cpu_avx2.cpp) that the
// portable code (dcnv3_cpu.cpp) calls when the CPU has AVX2.
//
// Both instruction sets compute the same operations in the same order (no
// FMA, the same summation trees), so that they give identical bits; the
// tests compare them.
#pragma once

#include <cstdint>

#include "../dcnv3_common.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DCNV3_HAVE_AVX2 1
#else
#define DCNV3_HAVE_AVX2 0
#endif

namespace ops_dcnv3 {
namespace cpu {

// The 4P bilinear taps of one (pixel, group): for each point p its four
// neighbours k = 0 (y0, x0), 1 (y0, x0 + 1), 2 (y0 + 1, x0), 3 (y0 + 1,
// x0 + 1), stored neighbour-major: tap (p, k) is entry k * stride + p of
// each array, stride being the points rounded up to a multiple of 8 (so the
// AVX2 gather writes 8 points of one neighbour with one store). The kernels
// visit the taps point by point, k inner. A tap whose neighbour lies outside
// the image has index -1 (its other entries are unspecified) and is
// skipped, so a point that falls outside (or has a NaN location) contributes
// exactly nothing, whatever the input holds.
template <typename opmath_t, typename index_t>
struct Taps {
  index_t* index;    // element offset of the neighbour in the image, or -1
  opmath_t* weight;  // bilinear weight
  opmath_t* dx;      // d weight / d x (only when derivatives are asked for)
  opmath_t* dy;      // d weight / d y
  int stride;        // padded_points(P)
};

inline int padded_points(int points) { return (points + 7) / 8 * 8; }

#if DCNV3_HAVE_AVX2
// True when the CPU can run the functions below.
bool cpu_has_avx2();

// The taps of one (pixel, group) whose kernel centre is at (cx, cy); grid_x
// and grid_y are kernel_point()'s offsets, zero-padded to padded_points().
// dx and dy are written only with `derivatives`. Needs image offsets below
// 2^31 elements.
void gather_avx2(const Geometry& g, float cx, float cy, const float* grid_x,
                 const float* grid_y, const float* offset,
                 const Taps<float, int32_t>& taps, bool derivatives);

// out[0:D] = sum over the taps (p, k) inside the image, in order, of
// (weight * mask[p]) * in[index + d]; D a multiple of 8.
void weighted_sum_avx2(const Taps<float, int32_t>& taps, const float* mask,
                       int P, const float* in, int D, float* out);

// The backward of one (pixel, group): for each tap (p, k) inside the image,
// with a = weight * mask[p], gin[index + d] += a * go[d] for d in [d_begin,
// d_end), and, with `dots`, v[4p + k] = sum_d go[d] * in[index + d] over all
// D channels (0 for taps outside). D a multiple of 8.
void group_backward_avx2(const Taps<float, int32_t>& taps, const float* mask,
                         int P, const float* go, const float* in, float* gin,
                         int D, int d_begin, int d_end, bool dots, float* v);
#endif

}  // namespace cpu
}  // namespace ops_dcnv3
