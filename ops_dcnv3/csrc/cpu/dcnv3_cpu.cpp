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
#include <tuple>
#include <vector>

#include "../dcnv3_common.h"

namespace ops_dcnv3 {
namespace {

// Rough cost of one unit of work, for at::parallel_for's grain size: small
// problems stay on one thread, where the fork would cost more than it saves.
int64_t grain_for(int64_t cost_per_item) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cost_per_item));
}

template <typename scalar_t>
void forward_kernel(const Geometry& g, const scalar_t* input,
                    const scalar_t* offset, const scalar_t* mask,
                    scalar_t* output) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t pixels = g.batch * g.h_out * g.w_out;
  const int64_t image = static_cast<int64_t>(g.height) * g.width * C;
  at::parallel_for(
      0, pixels, grain_for(int64_t(g.group) * P * (4 * D + 16)),
      [&](int64_t begin, int64_t end) {
        std::vector<opmath_t> acc(D);
        for (int64_t q = begin; q < end; ++q) {
          const int64_t n = q / (int64_t(g.h_out) * g.w_out);
          const int i = static_cast<int>((q / g.w_out) % g.h_out);
          const int j = static_cast<int>(q % g.w_out);
          const scalar_t* in_n = input + n * image;
          const scalar_t* off_q = offset + q * g.group * P * 2;
          const scalar_t* mask_q = mask + q * g.group * P;
          for (int grp = 0; grp < g.group; ++grp) {
            std::fill(acc.begin(), acc.end(), opmath_t(0));
            const scalar_t* in_g = in_n + grp * D;
            for (int p = 0; p < P; ++p) {
              const int k = grp * P + p;
              opmath_t x, y;
              sample_location<opmath_t>(g, i, j, p, off_q[2 * k],
                                        off_q[2 * k + 1], x, y);
              const opmath_t m = mask_q[k];
              for_each_neighbour(
                  x, y, g.height, g.width,
                  [&](int yy, int xx, opmath_t w, opmath_t, opmath_t) {
                    const scalar_t* v =
                        in_g + (int64_t(yy) * g.width + xx) * C;
                    const opmath_t wm = w * m;
                    for (int d = 0; d < D; ++d) {
                      acc[d] += wm * static_cast<opmath_t>(v[d]);
                    }
                  });
            }
            scalar_t* out = output + q * C + grp * D;
            for (int d = 0; d < D; ++d) out[d] = static_cast<scalar_t>(acc[d]);
          }
        }
      });
}

// Gradients of offset and mask: per (pixel, group, point), a gather over the
// group's channels; no two iterations write the same element.
template <typename scalar_t>
void backward_offset_mask_kernel(const Geometry& g, const scalar_t* grad_out,
                                 const scalar_t* input, const scalar_t* offset,
                                 const scalar_t* mask, scalar_t* grad_offset,
                                 scalar_t* grad_mask) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t pixels = g.batch * g.h_out * g.w_out;
  const int64_t image = static_cast<int64_t>(g.height) * g.width * C;
  const opmath_t scale = static_cast<opmath_t>(g.offset_scale);
  at::parallel_for(
      0, pixels, grain_for(int64_t(g.group) * P * (8 * D + 16)),
      [&](int64_t begin, int64_t end) {
        for (int64_t q = begin; q < end; ++q) {
          const int64_t n = q / (int64_t(g.h_out) * g.w_out);
          const int i = static_cast<int>((q / g.w_out) % g.h_out);
          const int j = static_cast<int>(q % g.w_out);
          const scalar_t* in_n = input + n * image;
          const int64_t base = q * g.group * P;
          for (int grp = 0; grp < g.group; ++grp) {
            const scalar_t* go = grad_out + q * C + grp * D;
            const scalar_t* in_g = in_n + grp * D;
            for (int p = 0; p < P; ++p) {
              const int64_t k = base + grp * P + p;
              opmath_t x, y;
              sample_location<opmath_t>(g, i, j, p, offset[2 * k],
                                        offset[2 * k + 1], x, y);
              opmath_t gm = 0, gx = 0, gy = 0;
              for_each_neighbour(
                  x, y, g.height, g.width,
                  [&](int yy, int xx, opmath_t w, opmath_t dwdx,
                      opmath_t dwdy) {
                    const scalar_t* v =
                        in_g + (int64_t(yy) * g.width + xx) * C;
                    opmath_t t = 0;
                    for (int d = 0; d < D; ++d) {
                      t += static_cast<opmath_t>(go[d]) *
                           static_cast<opmath_t>(v[d]);
                    }
                    gm += w * t;
                    gx += dwdx * t;
                    gy += dwdy * t;
                  });
              const opmath_t ms = static_cast<opmath_t>(mask[k]) * scale;
              grad_mask[k] = static_cast<scalar_t>(gm);
              grad_offset[2 * k] = static_cast<scalar_t>(ms * gx);
              grad_offset[2 * k + 1] = static_cast<scalar_t>(ms * gy);
            }
          }
        }
      });
}

// Gradient of the input: a scatter. Each task owns one (image, group,
// channel slice) of grad_input and walks the output pixels in order, so the
// tasks never write the same element and every sum has a fixed order.
template <typename scalar_t, typename opmath_t>
void backward_input_kernel(const Geometry& g, const scalar_t* grad_out,
                           const scalar_t* offset, const scalar_t* mask,
                           opmath_t* grad_input) {
  const int D = g.group_channels, C = g.channels, P = g.points;
  const int64_t image = static_cast<int64_t>(g.height) * g.width * C;
  // Split the channels of a group only when images x groups alone cannot
  // keep the threads busy.
  const int64_t tasks_wanted = 2 * at::get_num_threads();
  int slices = 1;
  while (g.batch * g.group * slices < tasks_wanted && D / (slices * 2) >= 8) {
    slices *= 2;
  }
  const int slice = (D + slices - 1) / slices;
  at::parallel_for(
      0, g.batch * g.group * slices, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / (int64_t(g.group) * slices);
          const int grp = static_cast<int>((task / slices) % g.group);
          const int d0 = static_cast<int>(task % slices) * slice;
          const int d1 = std::min(D, d0 + slice);
          opmath_t* gin_g = grad_input + n * image + grp * D;
          for (int i = 0; i < g.h_out; ++i) {
            for (int j = 0; j < g.w_out; ++j) {
              const int64_t q = (n * g.h_out + i) * g.w_out + j;
              const scalar_t* go = grad_out + q * C + grp * D;
              for (int p = 0; p < P; ++p) {
                const int64_t k = (q * g.group + grp) * P + p;
                opmath_t x, y;
                sample_location<opmath_t>(g, i, j, p, offset[2 * k],
                                          offset[2 * k + 1], x, y);
                const opmath_t m = mask[k];
                for_each_neighbour(
                    x, y, g.height, g.width,
                    [&](int yy, int xx, opmath_t w, opmath_t, opmath_t) {
                      opmath_t* gi = gin_g + (int64_t(yy) * g.width + xx) * C;
                      const opmath_t wm = w * m;
                      for (int d = d0; d < d1; ++d) {
                        gi[d] += wm * static_cast<opmath_t>(go[d]);
                      }
                    });
              }
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
                             bool remove_center) {
  check_cpu(input_, "input");
  const Geometry g = make_geometry(
      input_, offset_, mask_, kernel_h, kernel_w, stride_h, stride_w, pad_h,
      pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
      remove_center);
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = mask_.contiguous();
  at::Tensor output =
      at::empty({g.batch, g.h_out, g.w_out, g.channels}, input.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward_cpu", [&] {
        forward_kernel<scalar_t>(g, input.const_data_ptr<scalar_t>(),
                                 offset.const_data_ptr<scalar_t>(),
                                 mask.const_data_ptr<scalar_t>(),
                                 output.mutable_data_ptr<scalar_t>());
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_,
    const at::Tensor& offset_, const at::Tensor& mask_, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t /*im2col_step*/,
    bool remove_center) {
  check_cpu(input_, "input");
  check_cpu(grad_output_, "grad_output");
  const Geometry g = make_geometry(
      input_, offset_, mask_, kernel_h, kernel_w, stride_h, stride_w, pad_h,
      pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
      remove_center);
  TORCH_CHECK(grad_output_.sizes() ==
                  at::IntArrayRef({g.batch, g.h_out, g.w_out, g.channels}),
              "DCNv3: grad_output has shape ", grad_output_.sizes(),
              ", expected the output's shape");
  const at::Tensor input = input_.contiguous();
  const at::Tensor offset = offset_.contiguous();
  const at::Tensor mask = mask_.contiguous();
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
          backward_offset_mask_kernel<scalar_t>(
              g, grad_output.const_data_ptr<scalar_t>(),
              input.const_data_ptr<scalar_t>(),
              offset.const_data_ptr<scalar_t>(),
              mask.const_data_ptr<scalar_t>(),
              grad_offset.mutable_data_ptr<scalar_t>(),
              grad_mask.mutable_data_ptr<scalar_t>());
          backward_input_kernel<scalar_t, opmath_t>(
              g, grad_output.const_data_ptr<scalar_t>(),
              offset.const_data_ptr<scalar_t>(),
              mask.const_data_ptr<scalar_t>(),
              grad_input.mutable_data_ptr<opmath_t>());
        });
  }
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(ops_dcnv3, CPU, m) {
  m.impl("dcnv3_forward", &dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dcnv3_backward_cpu);
}

}  // namespace ops_dcnv3
