# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""``DCNv3Function`` with the official ``apply`` signature."""
from ..ops import dcnv3
from ..reference import dcnv3_core_pytorch


class DCNv3Function:
    """Drop-in for the official ``DCNv3Function``.

    ``DCNv3Function.apply(input, offset, mask, kernel_h, kernel_w, stride_h,
    stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
    offset_scale, im2col_step, remove_center)`` runs the ``torch.library`` op
    (:func:`ops_dcnv3.ops.dcnv3`), whose autograd, fake-tensor and
    ``torch.compile`` support are registered with it, on the tensors' device.
    """

    @staticmethod
    def apply(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w,
              pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
              offset_scale, im2col_step, remove_center):
        return dcnv3(input, offset, mask, kernel_h, kernel_w, stride_h,
                     stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                     group_channels, offset_scale, im2col_step, remove_center)


__all__ = ['DCNv3Function', 'dcnv3_core_pytorch']
