// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// The AVX-512 version of the forward's weighted sum (see dcnv3_cpu.h), the
// loop where the forward spends most: at InternImage's 16 channels a group,
// a neighbour's channels are one vector instead of two; and of the mask
// softmax's exponentials, two points of 8 groups a vector. Only these: the
// taps' geometry, the rest of the softmax and the point gradients stay
// AVX2; and the backward's sweep over the channels,
// written in AVX-512 the same way, ran 5-15% slower than its AVX2 twin on
// this project's host (AMD EPYC, Zen 5), and 0-10% slower when written
// again with its accumulators in registers, so it stays AVX2 too. Every lane
// computes what its AVX2 twin computes, in the same order (no FMA: the build
// turns contraction off), so the results are bit-identical. The functions
// carry their own target attribute, like the AVX2 ones, and run only where
// the CPU has AVX-512F.
#include "dcnv3_cpu.h"

#if DCNV3_HAVE_AVX2
// GCC 12's AVX-512 headers start some intrinsics from an "undefined"
// vector that -Wmaybe-uninitialized then reports, a false alarm.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace ops_dcnv3 {
namespace cpu {
DCNV3_TARGET_AVX512 bool cpu_has_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported;
}

DCNV3_TARGET_AVX512 void weighted_sum_avx512(const Taps<float, int32_t>& all, int groups,
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
      __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};  // per row of neighbours
      for (int p = 0; p < P; ++p) {
        for (int k = 0; k < 4; ++k) {
          const int t = k * S + p;
          if (index[t] < 0) continue;
          const __m512 w = _mm512_set1_ps(weight[t]);
          acc[k >> 1] = _mm512_add_ps(
              acc[k >> 1], _mm512_mul_ps(w, _mm512_loadu_ps(in + index[t] + d0)));
        }
      }
      _mm512_storeu_ps(out + d0, _mm512_add_ps(acc[0], acc[1]));
    }
    // The last 8 channels: the AVX2 sum, on them alone.
    if (d0 < D) weighted_sum_avx2(all.at(grp * P), 1, P, in + d0, D - d0, out + d0);
  }
}

namespace {
// exp_avx2 (dcnv3_cpu_avx2.cpp) on 16 lanes, operation for operation
// (roundscale toward -inf is floor).
DCNV3_TARGET_AVX512 inline __m512 exp_avx512(__m512 x) {
  using namespace expf_poly;
  x = _mm512_max_ps(_mm512_set1_ps(kMin), x);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(kLn2Hi)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(kLn2Lo)));
  __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(kP0), r), _mm512_set1_ps(kP1));
  y = _mm512_add_ps(_mm512_mul_ps(y, r), _mm512_set1_ps(kP2));
  y = _mm512_add_ps(_mm512_mul_ps(y, r), _mm512_set1_ps(kP3));
  y = _mm512_add_ps(_mm512_mul_ps(y, r), _mm512_set1_ps(kP4));
  y = _mm512_add_ps(_mm512_mul_ps(y, r), _mm512_set1_ps(kP5));
  y = _mm512_add_ps(_mm512_mul_ps(y, _mm512_mul_ps(r, r)), r);
  y = _mm512_add_ps(y, _mm512_set1_ps(1.f));
  const __m512i bits = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(bits));
}
}  // namespace

DCNV3_TARGET_AVX512 void softmax_exps_avx512(float* __restrict__ work, int P,
                                             const float* __restrict__ top) {
  alignas(64) float twice[16];
  for (int l = 0; l < 16; ++l) twice[l] = top[l % 8];
  const __m512 tops = _mm512_load_ps(twice);
  int p = 0;
  for (; p + 2 <= P; p += 2) {
    float* const w = work + 8 * p;
    _mm512_storeu_ps(w, exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(w), tops)));
  }
  if (p < P) {  // the last point, in the low 8 lanes
    float* const w = work + 8 * p;
    const __mmask16 low = 0x00FF;
    _mm512_mask_storeu_ps(
        w, low, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(low, w), tops)));
  }
}

}  // namespace cpu
}  // namespace ops_dcnv3
#endif
