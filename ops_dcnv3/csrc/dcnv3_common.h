// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// What every DCNv3 backend shares: the sampling geometry (where point p of
// output pixel (i, j) samples, and its bilinear neighbours) and the checks
// at the op's boundary, and the host-side mask softmax of the fused variant.
// The semantics are in docs/dcnv3_op.md.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <tuple>

#ifdef __CUDACC__
#define DCNV3_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DCNV3_HOST_DEVICE inline
#endif

namespace ops_dcnv3 {

// Sizes and hyper-parameters of one call; plain data, passed to kernels by
// value.
struct Geometry {
  int64_t batch;
  int height, width, channels;  // input (N, H, W, C)
  int h_out, w_out;
  int group, group_channels, points;
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int dilation_h, dilation_w;
  bool remove_center;
  double offset_scale;
};

// Offset of point p from the kernel centre on the fixed (unscaled) grid.
// Points run with the kernel's x index outer: p = kx * kernel_h + ky, the
// centre left out with remove_center.
DCNV3_HOST_DEVICE void kernel_point(const Geometry& g, int p, int& dx,
                                    int& dy) {
  if (g.remove_center &&
      p >= ((g.kernel_w - 1) / 2) * g.kernel_h + (g.kernel_h - 1) / 2) {
    ++p;
  }
  const int kx = p / g.kernel_h, ky = p % g.kernel_h;
  dx = kx * g.dilation_w - (g.dilation_w * (g.kernel_w - 1)) / 2;
  dy = ky * g.dilation_h - (g.dilation_h * (g.kernel_h - 1)) / 2;
}

// Where the kernel centre of output pixel (i, j) sits, in input pixel
// coordinates. Point p with learned offset (ox, oy) then samples at
//   x = cx + offset_scale * (dx + ox),  y = cy + offset_scale * (dy + oy)
// with (dx, dy) from kernel_point.
template <typename T>
DCNV3_HOST_DEVICE void centre_location(const Geometry& g, int i, int j, T& cx,
                                       T& cy) {
  cx = static_cast<T>(j * g.stride_w - g.pad_w +
                      (g.dilation_w * (g.kernel_w - 1)) / 2);
  cy = static_cast<T>(i * g.stride_h - g.pad_h +
                      (g.dilation_h * (g.kernel_h - 1)) / 2);
}

// Where point p of output pixel (i, j) samples, given its learned offset.
template <typename T>
DCNV3_HOST_DEVICE void sample_location(const Geometry& g, int i, int j, int p,
                                       T ox, T oy, T& x, T& y) {
  int dx, dy;
  kernel_point(g, p, dx, dy);
  T cx, cy;
  centre_location(g, i, j, cx, cy);
  const T s = static_cast<T>(g.offset_scale);
  x = cx + s * (static_cast<T>(dx) + ox);
  y = cy + s * (static_cast<T>(dy) + oy);
}

// floor(v) as an int, for v > -1 (the only values the sampler floors):
// truncation, corrected for negative non-integers. Exact, and cheaper than a
// libm call on CPUs without SSE4.1's roundss.
template <typename T>
DCNV3_HOST_DEVICE int floor_int(T v) {
  const int t = static_cast<int>(v);
  return t - (v < static_cast<T>(t) ? 1 : 0);
}

// Calls f(y, x, weight, dweight_dx, dweight_dy) for each bilinear neighbour
// of (x, y) that lies inside the height x width image; neighbours outside
// count as zero, so they are skipped.
template <typename T, typename F>
DCNV3_HOST_DEVICE void for_each_neighbour(T x, T y, int height, int width,
                                          F&& f) {
  if (!(x > T(-1) && y > T(-1) && x < T(width) && y < T(height))) return;
  const int x0 = floor_int(x), y0 = floor_int(y);
  const T lx = x - static_cast<T>(x0), ly = y - static_cast<T>(y0);
  const T hx = T(1) - lx, hy = T(1) - ly;
  if (y0 >= 0) {
    if (x0 >= 0) f(y0, x0, hy * hx, -hy, -hx);
    if (x0 + 1 < width) f(y0, x0 + 1, hy * lx, hy, -lx);
  }
  if (y0 + 1 < height) {
    if (x0 >= 0) f(y0 + 1, x0, ly * hx, -ly, hx);
    if (x0 + 1 < width) f(y0 + 1, x0 + 1, ly * lx, ly, lx);
  }
}

// Output size along one axis, as for a convolution:
// floor((in + 2 * pad - (dilation * (kernel - 1) + 1)) / stride) + 1, with a
// floor (not C++'s truncation) so that an input smaller than the kernel
// gives a size < 1 here exactly as in ops_dcnv3.reference.output_size.
inline int64_t output_size(int64_t in, int64_t kernel, int64_t stride,
                           int64_t pad, int64_t dilation) {
  const int64_t span = in + 2 * pad - (dilation * (kernel - 1) + 1);
  const int64_t q = span / stride - (span % stride != 0 && span < 0 ? 1 : 0);
  return q + 1;
}

// Checks at the op's boundary, with messages that name the argument; they
// surface in Python as ValueError (shapes, sizes) or TypeError (dtypes).
inline Geometry make_geometry(const at::Tensor& input, const at::Tensor& offset,
                              const at::Tensor& mask, int64_t kernel_h,
                              int64_t kernel_w, int64_t stride_h,
                              int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t dilation_h, int64_t dilation_w,
                              int64_t group, int64_t group_channels,
                              double offset_scale, bool remove_center) {
  TORCH_CHECK_VALUE(input.dim() == 4, "DCNv3: input must be 4-D (N, H, W, C), got ",
              input.sizes());
  TORCH_CHECK_VALUE(offset.dim() == 4, "DCNv3: offset must be 4-D, got ",
              offset.sizes());
  TORCH_CHECK_VALUE(mask.dim() == 4, "DCNv3: mask must be 4-D, got ", mask.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kDouble || dtype == at::kFloat ||
                       dtype == at::kHalf || dtype == at::kBFloat16,
                   "DCNv3: input must be a floating tensor of float64, "
                   "float32, float16 or bfloat16, got ",
                   input.scalar_type());
  TORCH_CHECK_TYPE(offset.scalar_type() == input.scalar_type() &&
                       mask.scalar_type() == input.scalar_type(),
                   "DCNv3: input, offset and mask must share one dtype, got ",
                   input.scalar_type(), ", ", offset.scalar_type(), " and ",
                   mask.scalar_type());
  TORCH_CHECK_VALUE(offset.device() == input.device() &&
                  mask.device() == input.device(),
              "DCNv3: input, offset and mask must be on one device, got ",
              input.device(), ", ", offset.device(), " and ", mask.device());
  TORCH_CHECK_VALUE(kernel_h > 0 && kernel_w > 0 && stride_h > 0 && stride_w > 0 &&
                  dilation_h > 0 && dilation_w > 0 && group > 0 &&
                  group_channels > 0 && pad_h >= 0 && pad_w >= 0,
              "DCNv3: kernel, stride, dilation, group and group_channels must "
              "be positive and padding non-negative");
  TORCH_CHECK_VALUE(!remove_center || (kernel_h == kernel_w && kernel_h % 2 == 1),
              "DCNv3: remove_center needs a square kernel of odd size, got ",
              kernel_h, "x", kernel_w);
  TORCH_CHECK_VALUE(kernel_h * kernel_w - (remove_center ? 1 : 0) > 0,
              "DCNv3: remove_center with a 1x1 kernel leaves no sampling "
              "point");
  TORCH_CHECK_VALUE(input.size(3) == group * group_channels, "DCNv3: input has ",
              input.size(3), " channels but group * group_channels = ",
              group * group_channels);
  Geometry g;
  g.batch = input.size(0);
  g.height = static_cast<int>(input.size(1));
  g.width = static_cast<int>(input.size(2));
  g.channels = static_cast<int>(input.size(3));
  g.h_out = static_cast<int>(
      output_size(g.height, kernel_h, stride_h, pad_h, dilation_h));
  g.w_out = static_cast<int>(
      output_size(g.width, kernel_w, stride_w, pad_w, dilation_w));
  TORCH_CHECK_VALUE(g.h_out > 0 && g.w_out > 0, "DCNv3: input of ", g.height,
                    "x", g.width, " is too small for a ", kernel_h, "x",
                    kernel_w, " kernel with padding (", pad_h, ", ", pad_w,
                    ") and dilation (", dilation_h, ", ", dilation_w,
                    "): output would be ", g.h_out, "x", g.w_out);
  g.group = static_cast<int>(group);
  g.group_channels = static_cast<int>(group_channels);
  g.points = static_cast<int>(kernel_h * kernel_w - (remove_center ? 1 : 0));
  g.kernel_h = static_cast<int>(kernel_h);
  g.kernel_w = static_cast<int>(kernel_w);
  g.stride_h = static_cast<int>(stride_h);
  g.stride_w = static_cast<int>(stride_w);
  g.pad_h = static_cast<int>(pad_h);
  g.pad_w = static_cast<int>(pad_w);
  g.dilation_h = static_cast<int>(dilation_h);
  g.dilation_w = static_cast<int>(dilation_w);
  g.remove_center = remove_center;
  g.offset_scale = offset_scale;
  const std::vector<int64_t> offset_shape{g.batch, g.h_out, g.w_out,
                                          group * g.points * 2};
  const std::vector<int64_t> mask_shape{g.batch, g.h_out, g.w_out,
                                        group * g.points};
  TORCH_CHECK_VALUE(offset.sizes() == at::IntArrayRef(offset_shape),
              "DCNv3: offset must have shape ", at::IntArrayRef(offset_shape),
              ", got ", offset.sizes());
  TORCH_CHECK_VALUE(mask.sizes() == at::IntArrayRef(mask_shape),
              "DCNv3: mask must have shape ", at::IntArrayRef(mask_shape),
              ", got ", mask.sizes());
  return g;
}

// grad_output of the backward: the output's shape, on the inputs' device.
inline void check_grad_output(const at::Tensor& grad_output,
                              const at::Tensor& input, const Geometry& g) {
  TORCH_CHECK_VALUE(grad_output.device() == input.device(),
                    "DCNv3: grad_output is on ", grad_output.device(),
                    " but the inputs are on ", input.device());
  TORCH_CHECK_VALUE(
      grad_output.sizes() ==
          at::IntArrayRef({g.batch, g.h_out, g.w_out, g.channels}),
      "DCNv3: grad_output has shape ", grad_output.sizes(),
      ", expected the output's shape");
}

// The host-side preparation that every backend's wrapper shares: the
// checks above, contiguous copies where needed, the outputs allocated.

// `t` is on the backend's device type.
inline void check_device(const at::Tensor& t, const char* name,
                         c10::DeviceType type) {
  TORCH_CHECK(t.device().type() == type, "DCNv3 (", c10::DeviceTypeName(type),
              " kernel): ", name, " must be a ", c10::DeviceTypeName(type),
              " tensor, got ", t.device());
}

// One forward call: its geometry, contiguous inputs, the output allocated.
struct ForwardCall {
  Geometry g;
  at::Tensor input, offset, mask, output;
};

inline ForwardCall prepare_forward(
    c10::DeviceType type, const at::Tensor& input, const at::Tensor& offset,
    const at::Tensor& mask, int64_t kernel_h, int64_t kernel_w,
    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, bool remove_center) {
  check_device(input, "input", type);
  ForwardCall c;
  c.g = make_geometry(input, offset, mask, kernel_h, kernel_w, stride_h,
                      stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                      group_channels, offset_scale, remove_center);
  c.input = input.contiguous();
  c.offset = offset.contiguous();
  c.mask = mask.contiguous();
  c.output = at::empty({c.g.batch, c.g.h_out, c.g.w_out, c.g.channels},
                       c.input.options());
  return c;
}

// One backward call: the forward's tensors, the output gradient in their
// dtype, and the gradients allocated: grad_input in the op's math type
// (fp32 for half types), for the kernels to accumulate into, zeroed unless
// the kernel zeroes it itself (zero_grad_input = false: each CPU task zeroes
// its own part, on its thread, instead of a fill of its own before the
// kernel); grad_offset and grad_mask, which the kernels write
// whole, uninitialised.
struct BackwardCall {
  Geometry g;
  at::Tensor grad_output, input, offset, mask;
  at::Tensor grad_input, grad_offset, grad_mask;

  std::tuple<at::Tensor, at::Tensor, at::Tensor> gradients() const {
    return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
  }
};

inline BackwardCall prepare_backward(
    c10::DeviceType type, const at::Tensor& grad_output,
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
    int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale,
    bool remove_center, bool zero_grad_input = true) {
  check_device(input, "input", type);
  BackwardCall c;
  c.g = make_geometry(input, offset, mask, kernel_h, kernel_w, stride_h,
                      stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                      group_channels, offset_scale, remove_center);
  check_grad_output(grad_output, input, c.g);
  c.input = input.contiguous();
  c.offset = offset.contiguous();
  c.mask = mask.contiguous();
  c.grad_output = grad_output.to(c.input.scalar_type()).contiguous();
  const auto opmath = at::toOpMathType(c.input.scalar_type());
  const auto grad_input_options = c.input.options().dtype(opmath);
  c.grad_input = zero_grad_input ? at::zeros(c.input.sizes(), grad_input_options)
                                 : at::empty(c.input.sizes(), grad_input_options);
  c.grad_offset = at::empty_like(c.offset);
  c.grad_mask = at::empty_like(c.mask);
  return c;
}

// The fused mask-softmax variant (mask_softmax=true): the mask holds logits
// and the weights are their softmax over the P points of each group,
// computed in the op's math type (fp32 for half types). Backends that do not
// fuse it into their kernels call these around the plain kernels.
inline at::Tensor softmax_points(const at::Tensor& logits, const Geometry& g) {
  const auto opmath = at::toOpMathType(logits.scalar_type());
  return at::_softmax(logits.reshape({-1, g.points}).to(opmath), -1, false)
      .to(logits.scalar_type())
      .reshape(logits.sizes());
}

// Gradient of the logits from the gradient of the weights (grad_weights)
// and the weights (softmax_points of the logits).
inline at::Tensor softmax_points_backward(const at::Tensor& grad_weights,
                                          const at::Tensor& logits,
                                          const Geometry& g) {
  const auto opmath = at::toOpMathType(logits.scalar_type());
  const at::Tensor w =
      at::_softmax(logits.reshape({-1, g.points}).to(opmath), -1, false);
  const at::Tensor gw = grad_weights.reshape({-1, g.points}).to(opmath);
  return at::_softmax_backward_data(gw, w, -1, opmath)
      .to(logits.scalar_type())
      .reshape(logits.sizes());
}

}  // namespace ops_dcnv3
