// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// Autograd for ops_dcnv3::dcnv3_forward, registered for the Autograd
// dispatch key (every device). Written in C++ rather than with
// torch.library.register_autograd because the Python route costs ~0.1 ms of
// interpreter work per call and per backward, as much as the whole kernel at
// InternImage's small stages. The backward is the ops_dcnv3::dcnv3_backward
// op, so that fake tensors and torch.compile see it as one op too; its own
// autograd entry refuses second-order gradients with a clear error.
#include <torch/autograd.h>
#include <torch/library.h>

namespace ops_dcnv3 {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The 14 non-tensor arguments, in schema order.
struct Params {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
      dilation_w, group, group_channels;
  double offset_scale;
  int64_t im2col_step;
  bool remove_center;
  bool mask_softmax;
};

at::Tensor call_forward(const at::Tensor& input, const at::Tensor& offset,
                        const at::Tensor& mask, const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ops_dcnv3::dcnv3_forward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const at::Tensor&, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t, int64_t, int64_t,
                            int64_t, int64_t, double, int64_t, bool, bool)>();
  return op.call(input, offset, mask, p.kernel_h, p.kernel_w, p.stride_h,
                 p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w,
                 p.group, p.group_channels, p.offset_scale, p.im2col_step,
                 p.remove_center, p.mask_softmax);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask, const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ops_dcnv3::dcnv3_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t,
              int64_t, int64_t, int64_t, int64_t, int64_t, double, int64_t,
              bool, bool)>();
  return op.call(grad_output, input, offset, mask, p.kernel_h, p.kernel_w,
                 p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h,
                 p.dilation_w, p.group, p.group_channels, p.offset_scale,
                 p.im2col_step, p.remove_center, p.mask_softmax);
}

class DCNv3Autograd : public torch::autograd::Function<DCNv3Autograd> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& offset, const at::Tensor& mask,
                            const Params& p) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({input, offset, mask});
    const std::vector<int64_t> ints = {
        p.kernel_h,   p.kernel_w,   p.stride_h, p.stride_w,
        p.pad_h,      p.pad_w,      p.dilation_h, p.dilation_w,
        p.group,      p.group_channels, p.im2col_step};
    ctx->saved_data["ints"] = ints;
    ctx->saved_data["offset_scale"] = p.offset_scale;
    ctx->saved_data["remove_center"] = p.remove_center;
    ctx->saved_data["mask_softmax"] = p.mask_softmax;
    return call_forward(input, offset, mask, p);
  }

  static variable_list backward(AutogradContext* ctx,
                                variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto ints = ctx->saved_data["ints"].toIntVector();
    const Params p{ints[0], ints[1], ints[2], ints[3], ints[4], ints[5],
                   ints[6], ints[7], ints[8], ints[9],
                   ctx->saved_data["offset_scale"].toDouble(), ints[10],
                   ctx->saved_data["remove_center"].toBool(),
                   ctx->saved_data["mask_softmax"].toBool()};
    auto grads = call_backward(grad_outputs[0], saved[0], saved[1], saved[2],
                               p);
    // One gradient per forward() argument; none for the parameters.
    return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads),
            at::Tensor()};
  }
};

// The backward op under autograd. Its gradients are right, and
// torch.autograd.grad(..., create_graph=True) works; what is not implemented
// is differentiating them again (second-order gradients): that raises,
// rather than letting autograd treat the op as constant and return zeros.
class DCNv3BackwardAutograd
    : public torch::autograd::Function<DCNv3BackwardAutograd> {
 public:
  static variable_list forward(AutogradContext* /*ctx*/,
                               const at::Tensor& grad_output,
                               const at::Tensor& input,
                               const at::Tensor& offset, const at::Tensor& mask,
                               const Params& p) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto grads = call_backward(grad_output, input, offset, mask, p);
    return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads)};
  }

  static variable_list backward(AutogradContext* /*ctx*/,
                                variable_list /*grad_outputs*/) {
    TORCH_CHECK_NOT_IMPLEMENTED(
        false,
        "DCNv3: second-order gradients (a backward through the gradients of "
        "ops_dcnv3.dcnv3, e.g. a gradient penalty after "
        "torch.autograd.grad(..., create_graph=True)) are not implemented by "
        "the compiled kernels; use ops_dcnv3.dcnv3_core_pytorch, whose "
        "autograd supports them");
    return {};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_autograd(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t im2col_step,
    bool remove_center, bool mask_softmax) {
  const Params p{kernel_h,   kernel_w,   stride_h,       stride_w,
                 pad_h,      pad_w,      dilation_h,     dilation_w,
                 group,      group_channels, offset_scale, im2col_step,
                 remove_center, mask_softmax};
  auto grads = DCNv3BackwardAutograd::apply(grad_output, input, offset, mask, p);
  return {grads[0], grads[1], grads[2]};
}

at::Tensor dcnv3_forward_autograd(
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
    int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale,
    int64_t im2col_step, bool remove_center, bool mask_softmax) {
  const Params p{kernel_h,   kernel_w,   stride_h,       stride_w,
                 pad_h,      pad_w,      dilation_h,     dilation_w,
                 group,      group_channels, offset_scale, im2col_step,
                 remove_center, mask_softmax};
  return DCNv3Autograd::apply(input, offset, mask, p);
}

}  // namespace

TORCH_LIBRARY_IMPL(ops_dcnv3, Autograd, m) {
  m.impl("dcnv3_forward", &dcnv3_forward_autograd);
  m.impl("dcnv3_backward", &dcnv3_backward_autograd);
}

}  // namespace ops_dcnv3
