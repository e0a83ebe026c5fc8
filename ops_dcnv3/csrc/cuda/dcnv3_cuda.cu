// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// DCNv3 on CUDA: fp64 / fp32 / fp16 / bf16 with fp32-or-better accumulation.
// The sampling geometry is the one in dcnv3_common.h, shared with the CPU
// kernel. A device guard makes every launch run on the tensors' GPU.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// Only the c10 CUDA headers: ATen/cuda/CUDAContext.h also needs the cuBLAS
// and cuSPARSE headers, which a bare CUDA toolkit may not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../dcnv3_common.h"

namespace ops_dcnv3 {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  return static_cast<int>(
      std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20));
}

// One thread per output element (pixel q, channel c), grid-stride.
template <typename scalar_t>
__global__ void forward_kernel(const Geometry g, const scalar_t* __restrict__ input,
                               const scalar_t* __restrict__ offset,
                               const scalar_t* __restrict__ mask,
                               scalar_t* __restrict__ output, int64_t total) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int C = g.channels, D = g.group_channels, P = g.points;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
       idx < total; idx += int64_t(blockDim.x) * gridDim.x) {
    const int c = static_cast<int>(idx % C);
    const int64_t q = idx / C;
    const int grp = c / D;
    const int j = static_cast<int>(q % g.w_out);
    const int i = static_cast<int>((q / g.w_out) % g.h_out);
    const int64_t n = q / (int64_t(g.w_out) * g.h_out);
    const scalar_t* in_c = input + n * g.height * int64_t(g.width) * C + c;
    const int64_t k0 = (q * g.group + grp) * P;
    opmath_t acc = 0;
    for (int p = 0; p < P; ++p) {
      opmath_t x, y;
      sample_location<opmath_t>(g, i, j, p, offset[2 * (k0 + p)],
                                offset[2 * (k0 + p) + 1], x, y);
      const opmath_t m = mask[k0 + p];
      for_each_neighbour(x, y, g.height, g.width,
                         [&](int yy, int xx, opmath_t w, opmath_t, opmath_t) {
                           acc += w * m *
                                  static_cast<opmath_t>(
                                      in_c[(int64_t(yy) * g.width + xx) * C]);
                         });
    }
    output[idx] = static_cast<scalar_t>(acc);
  }
}

// grad_input: a scatter, one thread per output element, atomics into an
// fp32-or-better buffer.
template <typename scalar_t, typename opmath_t>
__global__ void backward_input_kernel(const Geometry g,
                                      const scalar_t* __restrict__ grad_out,
                                      const scalar_t* __restrict__ offset,
                                      const scalar_t* __restrict__ mask,
                                      opmath_t* __restrict__ grad_input,
                                      int64_t total) {
  const int C = g.channels, D = g.group_channels, P = g.points;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
       idx < total; idx += int64_t(blockDim.x) * gridDim.x) {
    const int c = static_cast<int>(idx % C);
    const int64_t q = idx / C;
    const int grp = c / D;
    const int j = static_cast<int>(q % g.w_out);
    const int i = static_cast<int>((q / g.w_out) % g.h_out);
    const int64_t n = q / (int64_t(g.w_out) * g.h_out);
    opmath_t* gin_c = grad_input + n * g.height * int64_t(g.width) * C + c;
    const opmath_t go = static_cast<opmath_t>(grad_out[idx]);
    const int64_t k0 = (q * g.group + grp) * P;
    for (int p = 0; p < P; ++p) {
      opmath_t x, y;
      sample_location<opmath_t>(g, i, j, p, offset[2 * (k0 + p)],
                                offset[2 * (k0 + p) + 1], x, y);
      const opmath_t gm = static_cast<opmath_t>(mask[k0 + p]) * go;
      for_each_neighbour(x, y, g.height, g.width,
                         [&](int yy, int xx, opmath_t w, opmath_t, opmath_t) {
                           atomicAdd(gin_c + (int64_t(yy) * g.width + xx) * C,
                                     w * gm);
                         });
    }
  }
}

// grad_offset and grad_mask: one thread per (pixel, group, point), a gather
// over the group's channels; no atomics.
template <typename scalar_t>
__global__ void backward_offset_mask_kernel(
    const Geometry g, const scalar_t* __restrict__ grad_out,
    const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
    const scalar_t* __restrict__ mask, scalar_t* __restrict__ grad_offset,
    scalar_t* __restrict__ grad_mask, int64_t total) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int C = g.channels, D = g.group_channels, P = g.points;
  const opmath_t scale = static_cast<opmath_t>(g.offset_scale);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(blockDim.x) * gridDim.x) {
    const int p = static_cast<int>(k % P);
    const int grp = static_cast<int>((k / P) % g.group);
    const int64_t q = k / (int64_t(P) * g.group);
    const int j = static_cast<int>(q % g.w_out);
    const int i = static_cast<int>((q / g.w_out) % g.h_out);
    const int64_t n = q / (int64_t(g.w_out) * g.h_out);
    const scalar_t* in_g =
        input + n * g.height * int64_t(g.width) * C + grp * D;
    const scalar_t* go = grad_out + q * C + grp * D;
    opmath_t x, y;
    sample_location<opmath_t>(g, i, j, p, offset[2 * k], offset[2 * k + 1], x,
                              y);
    opmath_t gm = 0, gx = 0, gy = 0;
    for_each_neighbour(
        x, y, g.height, g.width,
        [&](int yy, int xx, opmath_t w, opmath_t dwdx, opmath_t dwdy) {
          const scalar_t* v = in_g + (int64_t(yy) * g.width + xx) * C;
          opmath_t t = 0;
          for (int d = 0; d < D; ++d) {
            t += static_cast<opmath_t>(go[d]) * static_cast<opmath_t>(v[d]);
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

at::Tensor dcnv3_forward_cuda(const at::Tensor& input,
                              const at::Tensor& offset,
                              const at::Tensor& mask, int64_t kernel_h,
                              int64_t kernel_w, int64_t stride_h,
                              int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t dilation_h, int64_t dilation_w,
                              int64_t group, int64_t group_channels,
                              double offset_scale, int64_t /*im2col_step*/,
                              bool remove_center, bool mask_softmax) {
  check_device(input, "input", at::kCUDA);
  const c10::cuda::CUDAGuard device_guard(input.device());
  ForwardCall c = prepare_forward(
      at::kCUDA, input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
      pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
      offset_scale, remove_center);
  // Stopgap until the kernel fuses it: the softmax runs before the kernel.
  if (mask_softmax) c.mask = softmax_points(c.mask, c.g).contiguous();
  const int64_t total = c.output.numel();
  if (total == 0) return c.output;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, c.input.scalar_type(), "dcnv3_forward_cuda",
      [&] {
        forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            c.g, c.input.const_data_ptr<scalar_t>(),
            c.offset.const_data_ptr<scalar_t>(),
            c.mask.const_data_ptr<scalar_t>(),
            c.output.mutable_data_ptr<scalar_t>(), total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return c.output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t /*im2col_step*/,
    bool remove_center, bool mask_softmax) {
  check_device(input, "input", at::kCUDA);
  const c10::cuda::CUDAGuard device_guard(input.device());
  BackwardCall c = prepare_backward(
      at::kCUDA, grad_output, input, offset, mask, kernel_h, kernel_w,
      stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
      group_channels, offset_scale, remove_center);
  // Stopgap until the kernel fuses it: the softmax runs before the kernel.
  if (mask_softmax) c.mask = softmax_points(c.mask, c.g).contiguous();
  const int64_t total = c.grad_output.numel();
  if (total > 0) {
    // grad_input is summed with atomics, in no fixed order.
    at::globalContext().alertNotDeterministic("dcnv3_backward_cuda");
    const Geometry& g = c.g;
    const int64_t total_points = g.batch * g.h_out * g.w_out * g.group * g.points;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, c.input.scalar_type(), "dcnv3_backward_cuda",
        [&] {
          using opmath_t = at::opmath_type<scalar_t>;
          backward_input_kernel<scalar_t, opmath_t>
              <<<blocks_for(total), kThreads, 0, stream>>>(
                  g, c.grad_output.const_data_ptr<scalar_t>(),
                  c.offset.const_data_ptr<scalar_t>(),
                  c.mask.const_data_ptr<scalar_t>(),
                  c.grad_input.mutable_data_ptr<opmath_t>(), total);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          backward_offset_mask_kernel<scalar_t>
              <<<blocks_for(total_points), kThreads, 0, stream>>>(
                  g, c.grad_output.const_data_ptr<scalar_t>(),
                  c.input.const_data_ptr<scalar_t>(),
                  c.offset.const_data_ptr<scalar_t>(),
                  c.mask.const_data_ptr<scalar_t>(),
                  c.grad_offset.mutable_data_ptr<scalar_t>(),
                  c.grad_mask.mutable_data_ptr<scalar_t>(), total_points);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  if (mask_softmax) c.grad_mask = softmax_points_backward(c.grad_mask, mask, c.g);
  return c.gradients();
}

}  // namespace

TORCH_LIBRARY_IMPL(ops_dcnv3, CUDA, m) {
  m.impl("dcnv3_forward", &dcnv3_forward_cuda);
  m.impl("dcnv3_backward", &dcnv3_backward_cuda);
}

}  // namespace ops_dcnv3
