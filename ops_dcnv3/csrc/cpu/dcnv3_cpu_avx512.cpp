// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// The AVX-512 version of the forward's weighted sum (see dcnv3_cpu.h), the
// loop where the forward spends most: at InternImage's 16 channels a group,
// a neighbour's channels are one vector instead of two. Only this one: the
// taps' geometry, the softmax and the point gradients work across points,
// not channels, and stay AVX2; and the backward's sweep over the channels,
// written in AVX-512 the same way, ran 5-15% slower than its AVX2 twin on
// this project's host (AMD EPYC, Zen 5), and 0-10% slower when written
// again with its accumulators in registers, so it stays AVX2 too. Every lane
// computes what the AVX2 weighted sum computes, in the same order (no FMA:
// the build turns contraction off), so the results are bit-identical. The
// function carries its own target attribute, like the AVX2 ones, and runs
// only where the CPU has AVX-512F.
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

DCNV3_TARGET_AVX512 void weighted_sum_avx512(const Taps<float, int32_t>& taps,
                                             int P, const float* __restrict__ in,
                                             int D, float* __restrict__ out) {
  const int32_t* __restrict__ index = taps.index;
  const float* __restrict__ weight = taps.weight;
  const int S = taps.stride;
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
  if (d0 < D) weighted_sum_avx2(taps, P, in + d0, D - d0, out + d0);
}

}  // namespace cpu
}  // namespace ops_dcnv3
#endif
