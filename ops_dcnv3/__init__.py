# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""DCNv3, the deformable convolution of InternImage, for PyTorch.

``ops_dcnv3.functions`` and ``ops_dcnv3.modules`` keep the import paths of
the official package. :func:`dcnv3` runs the op on the backend for the
tensors' device (:func:`ops_dcnv3.ops.select_backend`): the C++ CPU kernel
(``torch.ops.ops_dcnv3.dcnv3_forward``), the Triton kernels on CUDA
(``ops_dcnv3.triton``), the CUDA C++ kernel when built with
``DCNV3_WITH_CUDA=1``, or the reference; :data:`KERNEL_DEVICES` says which
devices have a kernel.
"""
from .functions import DCNv3Function, dcnv3_core_pytorch
from .modules import DCNv3, DCNv3_pytorch
from .ops import KERNEL_DEVICES, check_dcnv3_args, dcnv3
from . import onnx  # noqa: F401,E402  (registers the ONNX export of the op)

__version__ = '0.1.0'
__all__ = [
    'DCNv3', 'DCNv3_pytorch', 'DCNv3Function', 'dcnv3', 'dcnv3_core_pytorch',
    'check_dcnv3_args', 'KERNEL_DEVICES'
]
