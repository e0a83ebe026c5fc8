// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// Autograd for ops_dcnv3::dcnv3_forward, registered for the Autograd
// dispatch key (every device). Written in C++ rather than with
// torch.library.register_autograd because the Python route costs ~0.1 ms of
// interpreter work per call and per backward, as much as the whole kernel at
// InternImage's small stages. The backward is the ops_dcnv3::dcnv3_backward
// op, so that fake tensors and torch.compile see it as one op too; its own
// autograd entry refuses second-order gradients with a clear error. For the
// fused softmax on the CPU kernel the pair is dcnv3_forward_keep_weights and
// dcnv3_backward_from_weights instead (see keeps_weights).
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

std::tuple<at::Tensor, at::Tensor> call_forward_keep_weights(
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
    const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ops_dcnv3::dcnv3_forward_keep_weights", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
              int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
              int64_t, int64_t, double, int64_t, bool)>();
  return op.call(input, offset, mask, p.kernel_h, p.kernel_w, p.stride_h,
                 p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w,
                 p.group, p.group_channels, p.offset_scale, p.im2col_step,
                 p.remove_center);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward_from_weights(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& weights, const Params& p) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ops_dcnv3::dcnv3_backward_from_weights", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t,
              int64_t, int64_t, int64_t, int64_t, int64_t, double, int64_t,
              bool)>();
  return op.call(grad_output, input, offset, weights, p.kernel_h, p.kernel_w,
                 p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h,
                 p.dilation_w, p.group, p.group_channels, p.offset_scale,
                 p.im2col_step, p.remove_center);
}

// Whether autograd records a call on these tensors (as Function::apply
// decides): grad mode is on and one of them needs a gradient.
bool records_gradient(const at::Tensor& input, const at::Tensor& offset,
                      const at::Tensor& mask) {
  return at::GradMode::is_enabled() &&
         (input.requires_grad() || offset.requires_grad() || mask.requires_grad());
}

// Whether a forward that autograd records keeps the softmax weights for its
// backward (dcnv3_forward_keep_weights, then dcnv3_backward_from_weights)
// instead of the logits, whose softmax the backward would compute again
// (13% of the CPU backward's samples at InternImage-T's stage 1, perf): for
// the fused softmax, on the CPU kernel in float32 and float64 (the pair's
// dtypes). Everywhere else, and in inference, the plain forward runs.
bool keeps_weights(const at::Tensor& input, const at::Tensor& offset,
                   const at::Tensor& mask, const Params& p) {
  const auto type = input.scalar_type();
  return p.mask_softmax && input.is_cpu() && (type == at::kFloat || type == at::kDouble) &&
         records_gradient(input, offset, mask);
}

class DCNv3Autograd : public torch::autograd::Function<DCNv3Autograd> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& offset, const at::Tensor& mask,
                            const Params& p, bool keep_weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output;
    if (keep_weights) {
      at::Tensor weights;
      std::tie(output, weights) = call_forward_keep_weights(input, offset, mask, p);
      ctx->save_for_backward({input, offset, weights});
    } else {
      output = call_forward(input, offset, mask, p);
      ctx->save_for_backward({input, offset, mask});
    }
    ctx->saved_data["keep_weights"] = keep_weights;
    const std::vector<int64_t> ints = {
        p.kernel_h,   p.kernel_w,   p.stride_h, p.stride_w,
        p.pad_h,      p.pad_w,      p.dilation_h, p.dilation_w,
        p.group,      p.group_channels, p.im2col_step};
    ctx->saved_data["ints"] = ints;
    ctx->saved_data["offset_scale"] = p.offset_scale;
    ctx->saved_data["remove_center"] = p.remove_center;
    ctx->saved_data["mask_softmax"] = p.mask_softmax;
    return output;
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
    auto grads = ctx->saved_data["keep_weights"].toBool()
                     ? call_backward_from_weights(grad_outputs[0], saved[0], saved[1],
                                                  saved[2], p)
                     : call_backward(grad_outputs[0], saved[0], saved[1], saved[2], p);
    // One gradient per forward() argument; none for the parameters.
    return {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads),
            at::Tensor(), at::Tensor()};
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
                               const Params& p, bool from_weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto grads = from_weights ? call_backward_from_weights(grad_output, input, offset, mask, p)
                              : call_backward(grad_output, input, offset, mask, p);
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
  auto grads = DCNv3BackwardAutograd::apply(grad_output, input, offset, mask, p, false);
  return {grads[0], grads[1], grads[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_from_weights_autograd(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& offset, const at::Tensor& mask_weights, int64_t kernel_h,
    int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
    int64_t group_channels, double offset_scale, int64_t im2col_step,
    bool remove_center) {
  const Params p{kernel_h,   kernel_w,   stride_h,       stride_w,
                 pad_h,      pad_w,      dilation_h,     dilation_w,
                 group,      group_channels, offset_scale, im2col_step,
                 remove_center, true};
  auto grads =
      DCNv3BackwardAutograd::apply(grad_output, input, offset, mask_weights, p, true);
  return {grads[0], grads[1], grads[2]};
}

// dcnv3_forward_keep_weights is what DCNv3Autograd runs below autograd; it
// has no gradient of its own (its weights would need one), so a call that
// autograd would record is refused rather than given a wrong one.
std::tuple<at::Tensor, at::Tensor> dcnv3_forward_keep_weights_autograd(
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
    int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t group, int64_t group_channels, double offset_scale,
    int64_t im2col_step, bool remove_center) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      !records_gradient(input, offset, mask),
      "DCNv3: ops_dcnv3::dcnv3_forward_keep_weights has no autograd of its own; "
      "call ops_dcnv3.dcnv3 (or torch.ops.ops_dcnv3.dcnv3_forward) with "
      "mask_softmax=True, whose autograd runs it");
  const Params p{kernel_h,   kernel_w,   stride_h,       stride_w,
                 pad_h,      pad_w,      dilation_h,     dilation_w,
                 group,      group_channels, offset_scale, im2col_step,
                 remove_center, true};
  at::AutoDispatchBelowADInplaceOrView guard;
  return call_forward_keep_weights(input, offset, mask, p);
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
  return DCNv3Autograd::apply(input, offset, mask, p,
                              keeps_weights(input, offset, mask, p));
}

}  // namespace

TORCH_LIBRARY_IMPL(ops_dcnv3, Autograd, m) {
  m.impl("dcnv3_forward", &dcnv3_forward_autograd);
  m.impl("dcnv3_backward", &dcnv3_backward_autograd);
  m.impl("dcnv3_forward_keep_weights", &dcnv3_forward_keep_weights_autograd);
  m.impl("dcnv3_backward_from_weights", &dcnv3_backward_from_weights_autograd);
}

}  // namespace ops_dcnv3
