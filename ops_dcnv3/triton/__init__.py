# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""DCNv3 in Triton: the GPU backend that installs without compiling anything.

Importing this package defines ``torch.ops.ops_dcnv3.dcnv3_triton_forward``
and ``dcnv3_triton_backward`` (see :mod:`.op`); :func:`ops_dcnv3.dcnv3` uses
them for CUDA tensors by default, and for CPU tensors under Triton's
interpreter with ``TRITON_INTERPRET=1 OPS_DCNV3_BACKEND=triton`` (set
``TRITON_INTERPRET`` before this package is first imported).
"""
from .op import (alert_not_deterministic, dcnv3_triton_backward,
                 dcnv3_triton_forward, interpreted)

__all__ = ['dcnv3_triton_forward', 'dcnv3_triton_backward', 'interpreted',
           'alert_not_deterministic']
