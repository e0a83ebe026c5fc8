// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// DCNv3 on the CPU: multi-threaded with at::parallel_for (the forward's
// pixels in chunks to whichever thread asks, see parallel_dynamic; the
// backward in bands of rows, see backward_kernel), deterministic
// (every output element is summed in one fixed order, whatever the thread
// count), fp64 / fp32 / fp16 / bf16 with fp32-or-better accumulation, and
// the mask softmax fused in (mask_softmax=True).
//
// Per (pixel, group) the work has these steps, each in one place:
//   1. mask_weights: the P mask weights (the softmax of the logits, or the
//      mask as given; softmax_avx2 takes 8 groups at a time, one a lane,
//      several pixels' where a pixel has fewer, see PixelMasks);
//   2. gather (or gather_avx2): the bilinear taps (4 a point) of the points
//      of a pixel's groups, all in one run;
//   3. forward: weighted_sum (or weighted_sum_avx2) of the taps inside the
//      image; backward: group_backward (or group_backward_avx2), the scatter
//      into grad_input and the dot products; each called once a pixel for
//      all its groups;
//   4. backward: point_gradients (or point_gradients_avx2), the offset
//      gradients and those of the mask weights from the dot products, for
//      all of a pixel's groups in one run, then mask_gradients (or
//      softmax_gradients_avx2), those of each group's mask.
// The AVX2 versions (dcnv3_cpu_avx2.cpp; the forward's step 3 and the
// softmax's exponentials also in AVX-512, dcnv3_cpu_avx512.cpp, where the
// CPU has it) run for fp32 with group_channels a multiple of 8 where the
// CPU has AVX2 (fp16 and bf16 on fp32 copies, see low_precision_via_fp32),
// all with the bits of the portable code (see isa_for).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "dcnv3_cpu.h"

namespace ops_dcnv3 {
namespace cpu {
namespace {

// Whether OpenMP's threads sleep between parallel regions.
bool passive_waits() {
  static const bool passive = [] {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    return policy && (std::strcmp(policy, "PASSIVE") == 0 || std::strcmp(policy, "passive") == 0);
  }();
  return passive;
}

// at::parallel_for's grain (equal shares a thread: the backward's bands)
// for items of a rough cost (a unit is ~0.07 ns of this host's AVX2
// forward): each thread gets at least ~4M units (~0.3 ms) under
// OMP_WAIT_POLICY=PASSIVE, so that small calls stay on one thread. Waking
// a sleeping OpenMP thread costs ~60 us at best on a quiet 2-core host,
// and on average several times that on a busy one: a forward at
// InternImage-T's stage 3 (~2.7M units, ~0.2 ms) split in two equal shares
// took longer than on one thread. With OpenMP's default wait policy the
// threads spin a while after each parallel region and a fork costs a few
// microseconds: there ~128K units suffice.
int64_t grain_for(int64_t cost_per_item) {
  const int64_t min_work_per_thread = passive_waits() ? int64_t(1) << 22 : int64_t(1) << 17;
  return std::max<int64_t>(1, min_work_per_thread / std::max<int64_t>(1, cost_per_item));
}

// parallel_dynamic's: the work of a call (grain_for's units) from which it
// runs on several threads (~0.1 ms of the forward under PASSIVE waits), and
// that of a chunk, at least (~10 us).
int64_t min_parallel_work() { return passive_waits() ? int64_t(3) << 19 : int64_t(1) << 17; }
constexpr int64_t kChunkWork = int64_t(1) << 17;
constexpr int64_t kChunksPerThread = 32;

// Runs a loop over n items of a rough cost each (grain_for's units) on the
// threads, handing the items out in chunks to whichever thread asks next
// (an atomic counter) instead of one equal share a thread, as
// at::parallel_for does. make_worker() runs once on each thread that takes
// part and returns the callable that runs items [begin, end) (it holds the
// thread's scratch). Under OMP_WAIT_POLICY=PASSIVE the thread that OpenMP
// wakes starts ~55 us after the caller on this project's host (a 2-thread
// torch.sin of 40K floats took 80 us against 46 on one thread, 26 with
// ACTIVE waits) and often later on a busy host: with equal shares the call
// ends that much after the caller's share, with chunks the late thread
// just takes fewer of them, so two threads pay off from about half the
// work (min_parallel_work, against grain_for's). Chunks are small enough to
// balance (kChunkWork) but at least 1/kChunksPerThread of a thread's share,
// so that a thread's chunks stay neighbours in memory on large images
// (chunks of kChunkWork alone made the detection-sized forward 10% slower
// than equal shares). Each item must have outputs of its own: then which
// thread runs it cannot change the result.
template <typename MakeWorker>
void parallel_dynamic(int64_t n, int64_t cost_per_item, MakeWorker&& make_worker) {
  const int64_t cost = std::max<int64_t>(1, cost_per_item);
  const int64_t threads =
      n * cost >= min_parallel_work() ? std::min<int64_t>(at::get_num_threads(), n) : 1;
  if (threads <= 1 || at::in_parallel_region()) {
    auto run = make_worker();
    run(0, n);
    return;
  }
  const int64_t chunk =
      std::max<int64_t>({int64_t(1), kChunkWork / cost, n / (kChunksPerThread * threads)});
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    auto run = make_worker();
    for (int64_t begin; (begin = next.fetch_add(chunk, std::memory_order_relaxed)) < n;) {
      run(begin, std::min(n, begin + chunk));
    }
  });
}

// The instruction sets a call may use, each including the one before.
enum class Isa { kBaseline, kAvx2, kAvx512 };

const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "baseline";
}

// The most the CPU (and the build) can run.
Isa best_isa() {
#if DCNV3_HAVE_AVX2
  if (!cpu_has_avx2()) return Isa::kBaseline;
  return cpu_has_avx512() ? Isa::kAvx512 : Isa::kAvx2;
#else
  return Isa::kBaseline;
#endif
}

// The instruction set of a call: the fp32 vector paths run for
// group_channels a multiple of 8 (`vector_dtype`: fp32 with 32-bit
// indices), up to what the CPU has, or up to OPS_DCNV3_CPU_ISA where that
// is set: baseline (the portable code), avx2 or avx512 (all give the same
// bits; the tests compare them). A value that is none of these, or that
// this CPU cannot run, is an error. Read on every call, so that the tests
// can switch.
Isa isa_for(const Geometry& g, bool vector_dtype) {
  const Isa best = best_isa();
  Isa isa = best;
  const char* want = std::getenv("OPS_DCNV3_CPU_ISA");
  if (want && *want) {
    if (std::strcmp(want, "baseline") == 0) {
      isa = Isa::kBaseline;
    } else if (std::strcmp(want, "avx2") == 0) {
      isa = Isa::kAvx2;
    } else if (std::strcmp(want, "avx512") == 0) {
      isa = Isa::kAvx512;
    } else {
      TORCH_CHECK_VALUE(false, "OPS_DCNV3_CPU_ISA=", want,
                        " is not one of baseline, avx2, avx512 (unset: the best this CPU has)");
    }
    TORCH_CHECK_VALUE(isa <= best, "OPS_DCNV3_CPU_ISA=", want,
                      " asks for instructions that this CPU (or this build) lacks; it can run up to ",
                      isa_name(best));
  }
  if (!vector_dtype || g.group_channels % 8 != 0) return Isa::kBaseline;
  return isa;
}

// Per-thread scratch for the taps of one pixel's groups at a time, sized
// once: the points of all groups in a row (stride P a group), as the offsets
// and the mask lie in memory, so that the gather runs over whole vectors of
// points instead of rounding each group's P up to 8.
template <typename opmath_t, typename index_t>
struct Scratch {
  int stride;                                    // of the taps, see Taps
  std::vector<opmath_t> grid_x, grid_y;          // kernel_point() of each point
  std::vector<index_t> index;                    // 4 per point
  std::vector<opmath_t> weight;                  // 4 per point
  std::vector<opmath_t> lx, ly;                  // 1 per point
  std::vector<opmath_t> dots;                    // per tap, grad_out . neighbour (point-major)
  std::vector<opmath_t> grad_w;                  // of the mask weights (+ spare)
  Taps<opmath_t, index_t> taps;

  explicit Scratch(const Geometry& g)
      : stride(padded_points(g.group * g.points) + 8),
        grid_x(stride), grid_y(stride), index(4 * stride), weight(4 * stride),
        lx(stride), ly(stride), dots(4 * stride),
        grad_w(stride) {
    for (int q = 0; q < g.group * g.points; ++q) {
      int kx, ky;
      kernel_point(g, q % g.points, kx, ky);
      grid_x[q] = static_cast<opmath_t>(kx);
      grid_y[q] = static_cast<opmath_t>(ky);
    }
    taps = {index.data(), weight.data(), lx.data(), ly.data(), stride};
  }
  // `taps` points into this object's own vectors: a copy would write into
  // the original's; a move keeps the buffers, and with them the pointers.
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&&) = default;
};

// Step 1: the P mask weights of one (pixel, group), in opmath_t: with
// `softmax` the softmax of the logits (max subtracted, as torch.softmax; a
// NaN logit makes the whole group NaN, as there), else the mask as given.
// The exponentials are summed in lanes (see lane_tree), as softmax_avx2
// does.
template <typename scalar_t, typename opmath_t>
void mask_weights(const scalar_t* mask, int P, bool softmax, opmath_t* out) {
  if (!softmax) {
    for (int p = 0; p < P; ++p) out[p] = static_cast<opmath_t>(mask[p]);
    return;
  }
  opmath_t top = static_cast<opmath_t>(mask[0]);
  for (int p = 1; p < P; ++p) {
    const opmath_t v = static_cast<opmath_t>(mask[p]);
    top = v > top ? v : top;
  }
  opmath_t part[kLanes] = {};
  for (int p = 0; p < P; ++p) {
    out[p] = softmax_exp(static_cast<opmath_t>(mask[p]) - top);
    part[p % kLanes] += out[p];
  }
  const opmath_t inv = opmath_t(1) / lane_tree(part);
  for (int p = 0; p < P; ++p) out[p] *= inv;
}

// The last step of the backward, portable: from v, the dot products of
// grad_out with each tap's neighbour (point-major, tap (p, k) at v[4 * p +
// k]; 0 for taps outside), of n points (all the groups of a pixel, one
// after the other), the gradients of their offsets (interleaved x, y) and
// grad_w, those of their mask weights. Every tap is summed, inside or not:
// a tap outside adds exactly 0. The operations of point_gradients_avx2, in
// its order.
template <typename scalar_t, typename opmath_t, typename index_t>
void point_gradients(const Taps<opmath_t, index_t>& taps, const opmath_t* v,
                     const opmath_t* w, int n, opmath_t scale, opmath_t* grad_w,
                     scalar_t* grad_offset) {
  const int S = taps.stride;
  for (int p = 0; p < n; ++p) {
    const opmath_t lx = taps.lx[p], ly = taps.ly[p], hx = 1 - lx, hy = 1 - ly;
    const opmath_t wx[4] = {-hy, hy, -ly, ly}, wy[4] = {-hx, -lx, hx, lx};
    opmath_t vm = 0, vx = 0, vy = 0;
    for (int k = 0; k < 4; ++k) {
      const int t = k * S + p;
      const opmath_t vt = v[4 * p + k];
      vm += taps.weight[t] * vt;
      vx += wx[k] * vt;
      vy += wy[k] * vt;
    }
    grad_w[p] = vm;
    const opmath_t a = w[p] * scale;
    grad_offset[2 * p] = static_cast<scalar_t>(a * vx);
    grad_offset[2 * p + 1] = static_cast<scalar_t>(a * vy);
  }
}

// Then, for each group, the gradients of its mask from those of its P
// weights: through the softmax (sums in lanes, see lane_tree; the
// operations of softmax_gradients_avx2), or of the mask as given.
template <typename scalar_t, typename opmath_t>
void mask_gradients(const opmath_t* w, const opmath_t* grad_w, int P, bool softmax,
                    scalar_t* grad_mask) {
  if (!softmax) {
    for (int p = 0; p < P; ++p) grad_mask[p] = static_cast<scalar_t>(grad_w[p]);
    return;
  }
  opmath_t part[kLanes] = {};
  for (int p = 0; p < P; ++p) part[p % kLanes] += w[p] * grad_w[p];
  const opmath_t dot = lane_tree(part);
  for (int p = 0; p < P; ++p) {
    grad_mask[p] = static_cast<scalar_t>(w[p] * (grad_w[p] - dot));
  }
}

// Step 2, portable: the taps of n points of one pixel, whose kernel
// centre is at (cx, cy), as gather_avx2 (dcnv3_cpu.h) describes. The
// operations of gather_avx2, in its order.
template <typename scalar_t, typename opmath_t, typename index_t>
void gather(const Geometry& g, opmath_t cx, opmath_t cy,
            const opmath_t* __restrict__ gx, const opmath_t* __restrict__ gy,
            const scalar_t* __restrict__ off, int n,
            const Taps<opmath_t, index_t>& taps, bool derivatives,
            const opmath_t* __restrict__ mask) {
  const opmath_t s = static_cast<opmath_t>(g.offset_scale);
  const opmath_t W = static_cast<opmath_t>(g.width);
  const opmath_t H = static_cast<opmath_t>(g.height);
  const int64_t C = g.channels, row = int64_t(g.width) * g.channels;
  for (int p = 0; p < n; ++p) {
    opmath_t x = cx + s * (gx[p] + static_cast<opmath_t>(off[2 * p]));
    opmath_t y = cy + s * (gy[p] + static_cast<opmath_t>(off[2 * p + 1]));
    // A NaN location compares false: outside.
    const bool inside = x > opmath_t(-1) && y > opmath_t(-1) && x < W && y < H;
    x = inside ? x : opmath_t(0);  // keeps the conversions below defined
    y = inside ? y : opmath_t(0);
    const int x0 = floor_int(x), y0 = floor_int(y);
    const opmath_t lx = x - x0, ly = y - y0, hx = 1 - lx, hy = 1 - ly;
    const bool vx0 = x0 >= 0, vx1 = x0 + 1 < g.width;
    const bool vy0 = inside && y0 >= 0, vy1 = inside && y0 + 1 < g.height;
    const int64_t base = y0 * row + x0 * C;
    const bool ok[4] = {vy0 && vx0, vy0 && vx1, vy1 && vx0, vy1 && vx1};
    const int64_t at[4] = {base, base + C, base + row, base + row + C};
    opmath_t w[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    if (mask) {
      for (int k = 0; k < 4; ++k) w[k] = w[k] * mask[p];
    }
    for (int k = 0; k < 4; ++k) {
      const int t = k * taps.stride + p;
      taps.index[t] = static_cast<index_t>(ok[k] ? at[k] : -1);
      taps.weight[t] = w[k];
    }
    if (derivatives) {
      taps.lx[p] = lx;
      taps.ly[p] = ly;
    }
  }
}

// Step 3 of the forward, portable, for `groups` groups of a pixel as
// weighted_sum_avx2 (dcnv3_cpu.h) takes them: out[0:D] = the sum over the
// taps inside the image of weight (already times the mask weight) * the
// neighbour's channels, in blocks of B channels kept in registers across
// all taps (a fixed-size loop the compiler vectorises), in two running
// sums, one per row of neighbours (k = 0, 1 and k = 2, 3), added last: half
// the length of the chain of dependent additions, and the order of
// weighted_sum_avx2.
template <int B, typename scalar_t, typename opmath_t, typename index_t>
__attribute__((noinline)) void weighted_sum(
    const Taps<opmath_t, index_t>& all, int groups, int P, const scalar_t* in_all,
    int D, scalar_t* out_all) {
  const int S = all.stride;
  for (int grp = 0; grp < groups; ++grp) {
    const index_t* __restrict__ index = all.index + grp * P;
    const opmath_t* __restrict__ weight = all.weight + grp * P;
    const scalar_t* __restrict__ in = in_all + grp * D;
    scalar_t* __restrict__ out = out_all + grp * D;
    int d0 = 0;
    for (; d0 + B <= D; d0 += B) {
      opmath_t acc[2][B] = {};
      for (int p = 0; p < P; ++p) {
        for (int k = 0; k < 4; ++k) {
          const int t = k * S + p;
          if (index[t] < 0) continue;
          const opmath_t a = weight[t];
          const scalar_t* v = in + index[t] + d0;
          opmath_t* row = acc[k >> 1];
          for (int d = 0; d < B; ++d) row[d] += a * static_cast<opmath_t>(v[d]);
        }
      }
      for (int d = 0; d < B; ++d) out[d0 + d] = static_cast<scalar_t>(acc[0][d] + acc[1][d]);
    }
    for (; d0 < D; ++d0) {
      opmath_t acc[2] = {};
      for (int p = 0; p < P; ++p) {
        for (int k = 0; k < 4; ++k) {
          const int t = k * S + p;
          if (index[t] < 0) continue;
          acc[k >> 1] += weight[t] * static_cast<opmath_t>(in[index[t] + d0]);
        }
      }
      out[d0] = static_cast<scalar_t>(acc[0] + acc[1]);
    }
  }
}

// Step 3 of the backward, portable: the twin of group_backward_avx2
// (dcnv3_cpu.h), which says what it computes.
template <typename scalar_t, typename opmath_t, typename index_t>
__attribute__((noinline)) int group_backward(
    const Taps<opmath_t, index_t>& all, const opmath_t* mask_all, int groups, int P,
    const opmath_t* go_all, const scalar_t* in_all, const GradRows<opmath_t, index_t>& rows,
    int D, opmath_t* v_all) {
  const int S = all.stride;
  int n_far = 0;
  for (int grp = 0; grp < groups; ++grp) {
    const index_t* __restrict__ index = all.index + grp * P;
    const opmath_t* __restrict__ weight = all.weight + grp * P;
    const opmath_t* __restrict__ mask = mask_all + grp * P;
    const opmath_t* __restrict__ go = go_all + grp * D;
    const scalar_t* __restrict__ in = in_all + grp * D;
    opmath_t* __restrict__ v = v_all + 4 * grp * P;
    const GradRows<opmath_t, index_t> dst = rows.shifted(grp * D);
    for (int t4 = 0; t4 < 4 * P; ++t4) {  // point t4 / 4, neighbour t4 % 4
      const int p = t4 / 4, t = (t4 % 4) * S + p;
      opmath_t part[kLanes] = {};
      const index_t at = index[t];
      if (at >= 0) {
        const scalar_t* __restrict__ x = in + at;
        opmath_t* __restrict__ const y = dst.at(at);
        if (y) {  // the scatter and the dot product in one sweep
          const opmath_t a = weight[t] * mask[p];
          int d0 = 0;
          for (; d0 + kLanes <= D; d0 += kLanes) {
            for (int d = 0; d < kLanes; ++d) {
              const opmath_t g8 = go[d0 + d];
              y[d0 + d] += a * g8;
              part[d] += g8 * static_cast<opmath_t>(x[d0 + d]);
            }
          }
          for (int d = 0; d0 + d < D; ++d) {
            y[d0 + d] += a * go[d0 + d];
            part[d] += go[d0 + d] * static_cast<opmath_t>(x[d0 + d]);
          }
        } else {
          ++n_far;
          int d0 = 0;
          for (; d0 + kLanes <= D; d0 += kLanes) {
            for (int d = 0; d < kLanes; ++d) {
              part[d] += go[d0 + d] * static_cast<opmath_t>(x[d0 + d]);
            }
          }
          for (int d = 0; d0 + d < D; ++d) {
            part[d] += go[d0 + d] * static_cast<opmath_t>(x[d0 + d]);
          }
        }
      }
      v[t4] = lane_tree(part);
    }
  }
  return n_far;
}

// Steps 1 to 3 on the instruction set chosen for the call (isa_for; the
// vector paths for fp32 with 32-bit indices only) or portable.
template <typename scalar_t, typename index_t>
constexpr bool kMayUseAvx2 = DCNV3_HAVE_AVX2 && std::is_same<scalar_t, float>::value &&
                             std::is_same<index_t, int32_t>::value;

// The taps of the points of `groups` groups of one pixel into s.taps;
// `off` and `mask` start at the first group's.
template <typename scalar_t, typename opmath_t, typename index_t>
void gather_taps(Isa isa, const Geometry& g, opmath_t cx, opmath_t cy,
                 const Scratch<opmath_t, index_t>& s, const scalar_t* off,
                 int groups, bool derivatives, const opmath_t* mask) {
  const int n = groups * g.points;
#if DCNV3_HAVE_AVX2
  if constexpr (kMayUseAvx2<scalar_t, index_t>) {
    if (isa != Isa::kBaseline) {
      return gather_avx2(g, cx, cy, s.grid_x.data(), s.grid_y.data(), off, n,
                         s.taps, derivatives, mask);
    }
  }
#endif
  gather(g, cx, cy, s.grid_x.data(), s.grid_y.data(), off, n, s.taps,
         derivatives, mask);
}

// Step 1 for `groups` groups of one pixel (their P logits each, one after
// the other) into out, stride P.
template <typename scalar_t, typename opmath_t, typename index_t>
void mask_weights_on(Isa isa, const scalar_t* mask, int groups, int P,
                     bool softmax, opmath_t* work, opmath_t* out) {
#if DCNV3_HAVE_AVX2
  if constexpr (kMayUseAvx2<scalar_t, index_t>) {
    if (isa != Isa::kBaseline && softmax) {
      return softmax_avx2(mask, groups, P, work, out, isa == Isa::kAvx512);
    }
  }
#endif
  for (int grp = 0; grp < groups; ++grp) {
    mask_weights(mask + grp * P, P, softmax, out + grp * P);
  }
}

// Step 1 for a pixel q, computed for runs of pixels: softmax_avx2 puts a
// group in each of its 8 lanes, so with fewer groups a pixel one call
// covers the next 8 / G pixels too (their logits follow q's), where they
// are visited next (before `run_end`). The weights of q come with the
// spare entries the gather and point_gradients read past them.
template <typename scalar_t, typename opmath_t, typename index_t>
class PixelMasks {
 public:
  PixelMasks(Isa isa, const Geometry& g, const scalar_t* mask, bool softmax)
      : isa_(isa), mask_(mask), groups_(g.group), P_(g.points), softmax_(softmax),
        run_(isa != Isa::kBaseline && softmax ? std::max(1, kLanes / g.group) : 1),
        work_(8 * g.points),
        weights_((run_ - 1) * g.group * g.points + padded_points(g.group * g.points) + 8) {}

  const opmath_t* of(int64_t q, int64_t run_end) {
    if (q < first_ || q >= first_ + count_) {
      first_ = q;
      count_ = std::min<int64_t>(run_, run_end - q);
      mask_weights_on<scalar_t, opmath_t, index_t>(
          isa_, mask_ + q * groups_ * P_, static_cast<int>(count_) * groups_, P_, softmax_,
          work_.data(), weights_.data());
    }
    return weights_.data() + (q - first_) * groups_ * P_;
  }

 private:
  const Isa isa_;
  const scalar_t* const mask_;
  const int groups_, P_;
  const bool softmax_;
  const int run_;                      // pixels a call, at most
  int64_t first_ = 0, count_ = 0;      // the pixels held
  std::vector<opmath_t> work_, weights_;
};

template <int B, typename scalar_t, typename opmath_t, typename index_t>
void weighted_sum_on(Isa isa, const Taps<opmath_t, index_t>& taps, int groups, int P,
                     const scalar_t* in, int D, scalar_t* out) {
#if DCNV3_HAVE_AVX2
  if constexpr (kMayUseAvx2<scalar_t, index_t>) {
    if (isa == Isa::kAvx512) return weighted_sum_avx512(taps, groups, P, in, D, out);
    if (isa == Isa::kAvx2) return weighted_sum_avx2(taps, groups, P, in, D, out);
  }
#endif
  weighted_sum<B>(taps, groups, P, in, D, out);
}

template <typename scalar_t, typename opmath_t, typename index_t>
void point_gradients_on(Isa isa, const Taps<opmath_t, index_t>& taps,
                        const opmath_t* v, const opmath_t* w, int n,
                        opmath_t scale, opmath_t* grad_w, scalar_t* grad_offset) {
#if DCNV3_HAVE_AVX2
  if constexpr (kMayUseAvx2<scalar_t, index_t>) {
    if (isa != Isa::kBaseline) {
      return point_gradients_avx2(taps, v, w, n, scale, grad_w, grad_offset);
    }
  }
#endif
  point_gradients(taps, v, w, n, scale, grad_w, grad_offset);
}

// For `groups` groups of P points, one after the other.
template <typename scalar_t, typename opmath_t, typename index_t>
void mask_gradients_on(Isa isa, const opmath_t* w, const opmath_t* grad_w, int groups, int P,
                       bool softmax, scalar_t* grad_mask) {
#if DCNV3_HAVE_AVX2
  if constexpr (kMayUseAvx2<scalar_t, index_t>) {
    if (isa != Isa::kBaseline && softmax) {
      return softmax_gradients_avx2(w, grad_w, groups, P, grad_mask);
    }
  }
#endif
  for (int grp = 0; grp < groups; ++grp) {
    mask_gradients(w + grp * P, grad_w + grp * P, P, softmax, grad_mask + grp * P);
  }
}

template <typename scalar_t, typename opmath_t, typename index_t>
int group_backward_on(Isa isa, const Taps<opmath_t, index_t>& taps,
                      const opmath_t* mask, int groups, int P, const opmath_t* go,
                      const scalar_t* in, const GradRows<opmath_t, index_t>& dst,
                      int D, opmath_t* v) {
#if DCNV3_HAVE_AVX2
  if constexpr (kMayUseAvx2<scalar_t, index_t>) {
    if (isa != Isa::kBaseline) {
      return group_backward_avx2(taps, mask, groups, P, go, in, dst, D, v);
    }
  }
#endif
  return group_backward(taps, mask, groups, P, go, in, dst, D, v);
}

// With `weights` (not null), each pixel's mask weights also go there, as
// the mask lies (G * P a pixel), for the backward (dcnv3_forward_keep_weights).
template <typename scalar_t, int B, typename index_t>
void forward_kernel(const Geometry& g, bool softmax, const scalar_t* input,
                    const scalar_t* offset, const scalar_t* mask,
                    scalar_t* output, at::opmath_type<scalar_t>* weights) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t pixels = g.batch * g.h_out * g.w_out;
  const int64_t image = static_cast<int64_t>(g.height) * g.width * C;
  const Isa isa = isa_for(g, kMayUseAvx2<scalar_t, index_t>);
  parallel_dynamic(pixels, int64_t(g.group) * P * (4 * D + 32), [&] {
    return [&, s = Scratch<opmath_t, index_t>(g),
            pixel_masks = PixelMasks<scalar_t, opmath_t, index_t>(isa, g, mask, softmax)](
               int64_t begin, int64_t end) mutable {
      for (int64_t q = begin; q < end; ++q) {
        const int64_t n = q / (int64_t(g.h_out) * g.w_out);
        const int i = static_cast<int>((q / g.w_out) % g.h_out);
        const int j = static_cast<int>(q % g.w_out);
        opmath_t cx, cy;
        centre_location(g, i, j, cx, cy);
        // Step 1 for all groups first (see PixelMasks).
        const opmath_t* const masks = pixel_masks.of(q, end);
        if (weights) {
          std::memcpy(weights + q * g.group * P, masks, sizeof(opmath_t) * g.group * P);
        }
        gather_taps(isa, g, cx, cy, s, offset + 2 * q * g.group * P, g.group,
                    false, masks);
        weighted_sum_on<B>(isa, s.taps, g.group, P, input + n * image, D,
                           output + q * C);
      }
    };
  });
}

// The backward pass splits each image into bands of output rows, the same
// bands whatever the number of threads (they depend on the shape only, see
// row_bands). Band b owns the input rows [in_row[b], in_row[b + 1]), about
// those its output rows are centred on; its window adds the few rows above
// and below them that its taps may reach (the halo). One task a (image,
// band) zeroes its window and walks its output pixels in a fixed order
// (below), all groups of a pixel together, as the forward reads them. The
// taps that land in its window go there (one comparison a tap, see
// GradRows), the rest (wherever large offsets send them) into rows of its
// own allocated as they are first written (FarRows). The first band's
// window starts at row 0 and is grad_input itself; the others' are
// buffers, which a second pass adds to grad_input row by row, bands in
// order. So every element of grad_input is summed in one order that the
// shape fixes, and no two tasks write one element. (Splitting the groups
// among tasks instead, as this kernel once did, made each task's sweep over
// the image slower than the whole sweep on one thread: a task then touches
// one 64-byte line of every pixel's C channels. Writing a band's own rows
// into grad_input and its halo into a buffer of its own, as it also did,
// took up to three comparisons a tap to tell them apart, and 9-18% more
// time than one at InternImage-T's stages on this project's host.) The
// offset and mask gradients of a (pixel, group) come from the dot products
// of its taps with grad_out over all D channels, in the same sweep as the
// scatter, whoever owns the rows.
constexpr int kStrip = 32;           // output columns a strip (backward_kernel)
// Bands for all images of a call together (a power of 2; images are tasks
// of their own): one image splits in two, more do not split. On this
// project's 2-core host 4 and 8 bands an image made the backward slower
// than 2 (the halos' traffic), and 2 threads are what it has.
constexpr int kMaxBands = 2;
constexpr int kMinBandRows = 4;      // output rows a band, at least
constexpr int64_t kBandWork = 1 << 21;  // grain_for units a band, at least
constexpr int kHaloOffset = 3;       // learned offsets (rows) the halo allows for

struct RowBands {
  int count;                         // an image's
  int halo;                          // rows above and below a band's own
  std::vector<int> out_row, in_row;  // count + 1 boundaries each
  // Band k's window: input rows [first(k), last(k)).
  int first(int k) const { return std::max(0, in_row[k] - halo); }
  int last(int k) const { return std::min(in_row[count], in_row[k + 1] + halo); }
};

// As many bands as the work and the rows allow, a power of 2 (so that
// threads share them evenly) and at most kMaxBands for the whole batch,
// from the shape only.
RowBands row_bands(const Geometry& g, int64_t work) {
  RowBands b;
  b.count = 1;
  while (g.batch * 2 * b.count <= kMaxBands && g.h_out / (2 * b.count) >= kMinBandRows &&
         work / (2 * b.count) >= kBandWork) {
    b.count *= 2;
  }
  // The rows a point of a band's first or last output row samples, with
  // offsets of up to kHaloOffset rows, and its bilinear neighbour below (at
  // most the image; a NaN or infinite scale gives the image too).
  const double reach = std::ceil(std::abs(g.offset_scale) *
                                 (g.dilation_h * (g.kernel_h - 1) / 2 + kHaloOffset));
  b.halo = b.count == 1 ? 0 : static_cast<int>(std::min<double>(g.height, reach)) + 1;
  b.out_row.resize(b.count + 1);
  b.in_row.resize(b.count + 1);
  for (int k = 0; k <= b.count; ++k) {
    b.out_row[k] = static_cast<int>(int64_t(g.h_out) * k / b.count);
    int cx, cy;
    centre_location(g, b.out_row[k], 0, cx, cy);
    b.in_row[k] = k == 0 ? 0 : k == b.count ? g.height : std::min(g.height, std::max(0, cy));
  }
  return b;
}

// A buffer of n values that stands in for those of grad_input from `like`
// on: its first value sits at the same address as like's modulo a cache
// line (64 bytes), so that a group's channels span as many lines in both.
// (new[] aligns to 16 bytes only; a window 4 bytes off the lines of
// grad_input made the backward ~5% slower at InternImage-T's stage 2.)
template <typename T>
class LineMatched {
 public:
  LineMatched(int64_t n, const T* like, bool zeroed)
      : raw_(zeroed ? new T[n + kLine / sizeof(T)]() : new T[n + kLine / sizeof(T)]) {
    const uintptr_t shift =
        (reinterpret_cast<uintptr_t>(like) - reinterpret_cast<uintptr_t>(raw_.get())) &
        (kLine - 1);
    data_ = raw_.get() + shift / sizeof(T);
  }
  T* get() const { return data_; }

 private:
  static constexpr uintptr_t kLine = 64;
  std::unique_ptr<T[]> raw_;
  T* data_;
};

// The gradients a band sends to input rows beyond its window: whole rows
// (standing in for those of `image`, its image's grad_input), allocated
// (zeroed) when first written.
template <typename opmath_t>
struct FarRows {
  int64_t row_len;
  const opmath_t* image;
  std::vector<std::unique_ptr<LineMatched<opmath_t>>> rows;

  FarRows(int height, int64_t row_len, const opmath_t* image)
      : row_len(row_len), image(image), rows(height) {}
  opmath_t* row(int y) {
    if (!rows[y]) rows[y].reset(new LineMatched<opmath_t>(row_len, image + y * row_len, true));
    return rows[y]->get();
  }
  const opmath_t* written(int y) const { return rows[y] ? rows[y]->get() : nullptr; }
};

// What the backward's mask holds, and so which gradient it returns for it.
enum class BackwardMask {
  kWeights,         // the weights as given (mask_softmax=False): theirs
  kLogits,          // logits (mask_softmax=True): the logits', through the softmax
  kSoftmaxWeights,  // the logits' softmax (dcnv3_backward_from_weights): the logits'
};

template <typename scalar_t, typename index_t>
void backward_kernel(const Geometry& g, BackwardMask held, const scalar_t* grad_out,
                     const scalar_t* input, const scalar_t* offset,
                     const scalar_t* mask, at::opmath_type<scalar_t>* grad_input,
                     scalar_t* grad_offset, scalar_t* grad_mask) {
  using opmath_t = at::opmath_type<scalar_t>;
  const bool softmax = held != BackwardMask::kWeights;  // gradients through it
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t row_len = int64_t(g.width) * C;
  const int64_t image = g.height * row_len;
  const opmath_t scale = static_cast<opmath_t>(g.offset_scale);
  const Isa isa = isa_for(g, kMayUseAvx2<scalar_t, index_t>);
  const int64_t work = int64_t(g.h_out) * g.w_out * g.group * P * (8 * D + 64);
  const RowBands bands = row_bands(g, work);
  const int64_t tasks = g.batch * bands.count;
  // The windows of all bands but the first of each image (uninitialised:
  // each task zeroes its own) and the far rows; only a split image has
  // them.
  std::vector<LineMatched<opmath_t>> windows;
  std::vector<FarRows<opmath_t>> far;
  if (bands.count > 1) {
    windows.reserve(tasks);
    far.reserve(tasks);
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t n = task / bands.count;
      const int band = static_cast<int>(task % bands.count);
      const int64_t first = bands.first(band) * row_len;
      windows.emplace_back(band == 0 ? 0 : (bands.last(band) * row_len - first),
                           grad_input + n * image + first, false);
      far.emplace_back(g.height, row_len, grad_input + n * image);
    }
  }
  // Where task (image, band) adds its taps' gradients (see GradRows).
  auto grad_rows = [&](int64_t task) {
    const int64_t n = task / bands.count;
    const int band = static_cast<int>(task % bands.count);
    return GradRows<opmath_t, index_t>{
        band == 0 ? grad_input + n * image : windows[task].get(),
        static_cast<index_t>(bands.first(band) * row_len),
        static_cast<index_t>((bands.last(band) - bands.first(band)) * row_len),
        bands.count == 1};
  };
  at::parallel_for(
      0, tasks, grain_for(work / bands.count),
      [&](int64_t begin, int64_t end) {
        Scratch<opmath_t, index_t> s(g);
        PixelMasks<scalar_t, opmath_t, index_t> pixel_masks(isa, g, mask,
                                                             held == BackwardMask::kLogits);
        std::vector<opmath_t> go_buffer(C);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / bands.count;
          const int band = static_cast<int>(task % bands.count);
          const GradRows<opmath_t, index_t> rows = grad_rows(task);
          // grad_input comes uninitialised (see prepare_backward).
          std::memset(rows.window, 0, sizeof(opmath_t) * rows.len);
          // Output columns in strips of kStrip, the band's rows inside a
          // strip: the taps of the next row then hit the lines the last row
          // brought into L1 (row by row over a wide image, they are a whole
          // row of pixels away).
          for (int j0 = 0; j0 < g.w_out; j0 += kStrip)
          for (int i = bands.out_row[band]; i < bands.out_row[band + 1]; ++i) {
            for (int j = j0; j < std::min(g.w_out, j0 + kStrip); ++j) {
              const int64_t q = (n * g.h_out + i) * g.w_out + j;
              opmath_t cx, cy;
              centre_location(g, i, j, cx, cy);
              // Step 1 for all groups first, as in the forward.
              const opmath_t* const masks =
                  pixel_masks.of(q, q + std::min(g.w_out, j0 + kStrip) - j);
              gather_taps(isa, g, cx, cy, s, offset + 2 * q * g.group * P, g.group,
                          true, static_cast<const opmath_t*>(nullptr));
              const scalar_t* go_q = grad_out + q * C;
              const opmath_t* go;
              if constexpr (std::is_same<scalar_t, opmath_t>::value) {
                go = go_q;
              } else {
                for (int d = 0; d < C; ++d) go_buffer[d] = static_cast<opmath_t>(go_q[d]);
                go = go_buffer.data();
              }
              const int n_far = group_backward_on(isa, s.taps, masks, g.group, P, go,
                                                  input + n * image, rows, D, s.dots.data());
              // The taps beyond the window, in the order group_backward
              // visits them (the order matters only within a group: groups
              // have channels of their own).
              for (int grp = 0, left = n_far; left > 0; ++grp) {
                const Taps<opmath_t, index_t> taps = s.taps.at(grp * P);
                const opmath_t* const m = masks + grp * P;
                const opmath_t* const go_g = go + grp * D;
                for (int t4 = 0; t4 < 4 * P && left > 0; ++t4) {
                  const int p = t4 / 4, t = (t4 % 4) * taps.stride + p;
                  const index_t where = taps.index[t];
                  if (where < 0 || rows.at(where)) continue;
                  --left;
                  const int y = static_cast<int>(where / row_len);
                  opmath_t* const out = far[task].row(y) + (where - y * row_len) + grp * D;
                  const opmath_t a = taps.weight[t] * m[p];
                  for (int d = 0; d < D; ++d) out[d] += a * go_g[d];
                }
              }
              // Step 4 for all groups of the pixel at once (whole vectors
              // of points, as the gather), then each group's mask.
              const int64_t k0 = q * g.group * P;
              opmath_t* const grad_w = s.grad_w.data();
              point_gradients_on<scalar_t>(isa, s.taps, s.dots.data(), masks, g.group * P,
                                           scale, grad_w, grad_offset + 2 * k0);
              mask_gradients_on<scalar_t, opmath_t, index_t>(isa, masks, grad_w, g.group, P,
                                                             softmax, grad_mask + k0);
            }
          }
        }
      });
  if (bands.count == 1) return;
  // Each row of grad_input: what the bands sent it (from their windows or
  // their far rows), bands in order; the first band's part, where its
  // window holds the row, is there already.
  at::parallel_for(
      0, tasks, grain_for(image / bands.count),
      [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / bands.count;
          const int band = static_cast<int>(task % bands.count);
          for (int y = bands.in_row[band]; y < bands.in_row[band + 1]; ++y) {
            opmath_t* const out = grad_input + n * image + y * row_len;
            bool started = y < bands.last(0);
            for (int from = started ? 1 : 0; from < bands.count; ++from) {
              const int64_t source = n * bands.count + from;
              const opmath_t* add = grad_rows(source).at(static_cast<index_t>(y * row_len));
              if (!add) add = far[source].written(y);
              if (!add) continue;
              if (started) {
                for (int64_t e = 0; e < row_len; ++e) out[e] += add[e];
              } else {
                std::memcpy(out, add, sizeof(opmath_t) * row_len);
                started = true;
              }
            }
            if (!started) std::memset(out, 0, sizeof(opmath_t) * row_len);
          }
        }
      });
}

// Whether 32-bit element offsets address an image (the vector paths need
// them).
bool fits_int32_index(const Geometry& g) {
  return int64_t(g.height) * g.width * g.channels < (int64_t(1) << 31);
}

// Calls f(index_t) with the narrowest index type that addresses an image.
template <typename F>
void with_index_type(const Geometry& g, F&& f) {
  if (fits_int32_index(g)) {
    f(int32_t());
  } else {
    f(int64_t());
  }
}

// fp16 and bf16 compute in fp32, their op math: the portable code reads
// each value into fp32 and rounds each result once. Where the fp32 vector
// code can run (see isa_for), they run it instead on fp32 copies of their
// inputs and round its results once: the same bits, several times faster,
// for the price of the copies.
bool low_precision_via_fp32(const at::Tensor& input, const Geometry& g) {
  const auto type = input.scalar_type();
  return (type == at::kHalf || type == at::kBFloat16) && fits_int32_index(g) &&
         isa_for(g, /*vector_dtype=*/true) != Isa::kBaseline;
}

}  // namespace
}  // namespace cpu

namespace {

// The forward of a prepared call (see forward_kernel for `weights`).
void run_forward(const ForwardCall& c, bool mask_softmax, at::Tensor* weights) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, c.input.scalar_type(), "dcnv3_forward_cpu", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        opmath_t* const w = weights ? weights->mutable_data_ptr<opmath_t>() : nullptr;
        // Channel blocks of 16 when the group is that wide, else 8.
        auto run = [&](auto block, auto index) {
          cpu::forward_kernel<scalar_t, decltype(block)::value, decltype(index)>(
              c.g, mask_softmax, c.input.const_data_ptr<scalar_t>(),
              c.offset.const_data_ptr<scalar_t>(),
              c.mask.const_data_ptr<scalar_t>(),
              c.output.mutable_data_ptr<scalar_t>(), w);
        };
        cpu::with_index_type(c.g, [&](auto index) {
          if (c.g.group_channels % 16 == 0) {
            run(std::integral_constant<int, 16>(), index);
          } else {
            run(std::integral_constant<int, 8>(), index);
          }
        });
      });
}

at::Tensor dcnv3_forward_cpu(const at::Tensor& input, const at::Tensor& offset,
                             const at::Tensor& mask, int64_t kernel_h,
                             int64_t kernel_w, int64_t stride_h,
                             int64_t stride_w, int64_t pad_h, int64_t pad_w,
                             int64_t dilation_h, int64_t dilation_w,
                             int64_t group, int64_t group_channels,
                             double offset_scale, int64_t /*im2col_step*/,
                             bool remove_center, bool mask_softmax) {
  const ForwardCall c = prepare_forward(
      at::kCPU, input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
      pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
      offset_scale, remove_center);
  if (c.output.numel() == 0) return c.output;
  if (cpu::low_precision_via_fp32(c.input, c.g)) {
    return dcnv3_forward_cpu(c.input.to(at::kFloat), c.offset.to(at::kFloat),
                             c.mask.to(at::kFloat), kernel_h, kernel_w, stride_h,
                             stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                             group_channels, offset_scale, 0, remove_center, mask_softmax)
        .to(c.input.scalar_type());
  }
  run_forward(c, mask_softmax, nullptr);
  return c.output;
}

// The pair below keeps the softmax weights in the op's math type, which is
// the input's own only for float32 and float64.
void check_weights_dtype(const at::Tensor& input, const char* op) {
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                   "DCNv3: ", op, " takes float32 or float64 tensors (its mask "
                   "weights are in the input's dtype), got ", input.scalar_type(),
                   "; use dcnv3_forward / dcnv3_backward with mask_softmax=True");
}

std::tuple<at::Tensor, at::Tensor> dcnv3_forward_keep_weights_cpu(
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
    int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale,
    int64_t /*im2col_step*/, bool remove_center) {
  check_weights_dtype(input, "dcnv3_forward_keep_weights");
  const ForwardCall c = prepare_forward(
      at::kCPU, input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
      pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
      offset_scale, remove_center);
  at::Tensor weights = at::empty_like(c.mask);
  if (c.output.numel() > 0) run_forward(c, /*mask_softmax=*/true, &weights);
  return {c.output, weights};
}

// dcnv3_backward and dcnv3_backward_from_weights, by what the mask holds.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, bool remove_center,
    cpu::BackwardMask held) {
  BackwardCall c = prepare_backward(
      at::kCPU, grad_output, input, offset, mask, kernel_h, kernel_w,
      stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
      group_channels, offset_scale, remove_center, /*zero_grad_input=*/false);
  if (c.grad_output.numel() == 0) {
    c.grad_input.zero_();
  } else if (cpu::low_precision_via_fp32(c.input, c.g)) {
    const auto type = c.input.scalar_type();
    auto grads = backward_cpu(
        c.grad_output.to(at::kFloat), c.input.to(at::kFloat), c.offset.to(at::kFloat),
        c.mask.to(at::kFloat), kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
        dilation_h, dilation_w, group, group_channels, offset_scale, remove_center,
        held);
    return {std::get<0>(grads).to(type), std::get<1>(grads).to(type),
            std::get<2>(grads).to(type)};
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, c.input.scalar_type(), "dcnv3_backward_cpu",
        [&] {
          cpu::with_index_type(c.g, [&](auto index) {
            cpu::backward_kernel<scalar_t, decltype(index)>(
                c.g, held, c.grad_output.const_data_ptr<scalar_t>(),
                c.input.const_data_ptr<scalar_t>(),
                c.offset.const_data_ptr<scalar_t>(),
                c.mask.const_data_ptr<scalar_t>(),
                c.grad_input.mutable_data_ptr<at::opmath_type<scalar_t>>(),
                c.grad_offset.mutable_data_ptr<scalar_t>(),
                c.grad_mask.mutable_data_ptr<scalar_t>());
          });
        });
  }
  return c.gradients();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t /*im2col_step*/,
    bool remove_center, bool mask_softmax) {
  return backward_cpu(grad_output, input, offset, mask, kernel_h, kernel_w, stride_h,
                      stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                      group_channels, offset_scale, remove_center,
                      mask_softmax ? cpu::BackwardMask::kLogits : cpu::BackwardMask::kWeights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_from_weights_cpu(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask_weights, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t /*im2col_step*/,
    bool remove_center) {
  check_weights_dtype(input, "dcnv3_backward_from_weights");
  return backward_cpu(grad_output, input, offset, mask_weights, kernel_h, kernel_w,
                      stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                      group_channels, offset_scale, remove_center,
                      cpu::BackwardMask::kSoftmaxWeights);
}

}  // namespace

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3_forward", &dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3_backward_cpu);
  m.impl("dcnv3_forward_keep_weights", &dcnv3_forward_keep_weights_cpu);
  m.impl("dcnv3_backward_from_weights", &dcnv3_backward_from_weights_cpu);
}

}  // namespace ops_dcnv3
