// Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
//
// The op's schema, declared once (semantics in docs/dcnv3_op.md;
// mask_softmax=True takes mask logits and applies the softmax over each
// group's points inside the op, and the backward then returns the gradient
// of the logits); each backend registers its kernel for its
// dispatch key in its own file (cpu/, cuda/). Python reaches the op as
// torch.ops.ops_dcnv3.*; the module below only exists so that
// `import ops_dcnv3._C` loads this library.
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "DCNv3 kernels (torch.ops.ops_dcnv3)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(ops_dcnv3, m) {
  m.def(
      "dcnv3_forward(Tensor input, Tensor offset, Tensor mask, int kernel_h, "
      "int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w, "
      "int dilation_h, int dilation_w, int group, int group_channels, "
      "float offset_scale, int im2col_step, bool remove_center, "
      "bool mask_softmax=False) -> Tensor");
  m.def(
      "dcnv3_backward(Tensor grad_output, Tensor input, Tensor offset, "
      "Tensor mask, int kernel_h, int kernel_w, int stride_h, int stride_w, "
      "int pad_h, int pad_w, int dilation_h, int dilation_w, int group, "
      "int group_channels, float offset_scale, int im2col_step, "
      "bool remove_center, bool mask_softmax=False) -> (Tensor, Tensor, Tensor)");
  // The pair that autograd runs for mask_softmax=True where the kernel has
  // it (the CPU kernel, float32 and float64): the forward also returns the
  // softmax weights it computed (the mask's shape and dtype), and the
  // backward takes them in the mask's place and returns the gradient of the
  // logits, without computing the softmax again. The gradients are those
  // of dcnv3_backward(..., mask_softmax=True) on the logits, bit for bit.
  m.def(
      "dcnv3_forward_keep_weights(Tensor input, Tensor offset, Tensor mask, "
      "int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, "
      "int pad_w, int dilation_h, int dilation_w, int group, "
      "int group_channels, float offset_scale, int im2col_step, "
      "bool remove_center) -> (Tensor, Tensor)");
  m.def(
      "dcnv3_backward_from_weights(Tensor grad_output, Tensor input, "
      "Tensor offset, Tensor mask_weights, int kernel_h, int kernel_w, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, "
      "int dilation_w, int group, int group_channels, float offset_scale, "
      "int im2col_step, bool remove_center) -> (Tensor, Tensor, Tensor)");
}
