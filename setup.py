# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""Builds ``ops_dcnv3._C`` (the CPU kernel; the CUDA C++ kernel only on
request) and installs the project's packages.

Install with ``pip install --no-build-isolation -e .`` into an environment
that already has torch. No GPU code is compiled by default: on CUDA the op
runs its Triton kernels (``ops_dcnv3/triton``), which the ``triton`` package
that comes with torch's CUDA wheels compiles at run time. Environment
variables:

- ``DCNV3_WITH_CUDA=1``: also build the CUDA C++ kernel (``OPS_DCNV3_BACKEND
  =cuda`` selects it), and fail if it cannot be built. Unset or ``0``: not.
- ``TORCH_CUDA_ARCH_LIST``: GPU architectures for it; unset with no GPU
  visible, :data:`DEFAULT_ARCH_LIST` is used.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup


def locate_cuda_home():
    """Set CUDA_HOME to a real toolkit when it is unset.

    torch takes the parent of the ``nvcc`` on PATH, which is wrong when that
    ``nvcc`` is a wrapper script (``/usr/local/bin/nvcc`` on this project's CI
    machine); look for the toolkit's headers instead.
    """
    if os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH'):
        return
    nvcc = shutil.which('nvcc')
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates.append('/usr/local/cuda')
    for home in candidates:
        if (os.path.isfile(os.path.join(home, 'include', 'cuda_runtime.h'))
                and os.path.isfile(os.path.join(home, 'bin', 'nvcc'))):
            os.environ['CUDA_HOME'] = os.path.realpath(home)
            return


locate_cuda_home()

import torch  # noqa: E402
from torch.utils.cpp_extension import (CUDA_HOME, BuildExtension,  # noqa: E402
                                       CppExtension, CUDAExtension)

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join('ops_dcnv3', 'csrc')
# Turing to Hopper, plus PTX for newer GPUs (CUDA 13 dropped < sm_75).
DEFAULT_ARCH_LIST = '7.5;8.0;8.6;9.0+PTX'


def log(msg):
    print(f'ops_dcnv3: {msg}', file=sys.stderr, flush=True)


def nvcc_version():
    nvcc = os.path.join(CUDA_HOME, 'bin', 'nvcc')
    try:
        out = subprocess.check_output([nvcc, '--version'], text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return None, f'cannot run {nvcc}: {e}'
    found = re.search(r'release (\d+)\.(\d+)', out)
    if not found:
        return None, f'cannot read the version of {nvcc}'
    return (int(found[1]), int(found[2])), None


def cuda_build():
    """Return (build the CUDA kernel?, reason)."""
    wanted = os.environ.get('DCNV3_WITH_CUDA', '')
    if wanted != '1':
        return False, ('DCNV3_WITH_CUDA is not 1 (CUDA tensors run the Triton '
                       'kernels, compiled at run time)')
    if torch.version.cuda is None:
        return False, f'torch {torch.__version__} is a CPU-only build'
    if CUDA_HOME is None:
        return False, 'no CUDA toolkit found (set CUDA_HOME to build the CUDA kernel)'
    version, error = nvcc_version()
    if error:
        return False, error
    torch_major = int(torch.version.cuda.split('.')[0])
    if version[0] != torch_major:
        return False, (f'the CUDA toolkit in {CUDA_HOME} is {version[0]}.{version[1]} '
                       f'but torch was built with CUDA {torch.version.cuda}')
    return True, f'CUDA {version[0]}.{version[1]} in {CUDA_HOME}'


def extensions():
    sources = [os.path.join(CSRC, 'dcnv3.cpp'),
               os.path.join(CSRC, 'autograd.cpp')] + sorted(
        glob.glob(os.path.join(CSRC, 'cpu', '*.cpp')))
    # No contraction of a * b + c into FMA: the CPU kernel's instruction-set
    # paths give the same bits because each does its multiplies and adds
    # separately (GCC contracts vector intrinsics too where the target has
    # FMA, as AVX-512 does).
    cxx = ['-O3', '-fopenmp', '-ffp-contract=off']
    with_cuda, reason = cuda_build()
    if os.environ.get('DCNV3_WITH_CUDA') == '1' and not with_cuda:
        raise RuntimeError(f'DCNV3_WITH_CUDA=1 but the CUDA kernel cannot be built: {reason}')
    if os.environ.get('DCNV3_WITH_CUDA') not in (None, '', '0', '1'):
        raise RuntimeError('DCNV3_WITH_CUDA must be 1 (build the CUDA C++ kernel) '
                           f"or 0, got {os.environ['DCNV3_WITH_CUDA']!r}")
    if not with_cuda:
        log(f'building the CPU kernel only: {reason}')
        return [CppExtension('ops_dcnv3._C', sources,
                             extra_compile_args={'cxx': cxx},
                             extra_link_args=['-fopenmp'])]
    log(f'building the CPU and CUDA kernels with {reason}')
    if not os.environ.get('TORCH_CUDA_ARCH_LIST') and not torch.cuda.is_available():
        os.environ['TORCH_CUDA_ARCH_LIST'] = DEFAULT_ARCH_LIST
        log(f'no GPU visible: TORCH_CUDA_ARCH_LIST={DEFAULT_ARCH_LIST}')
    sources += sorted(glob.glob(os.path.join(CSRC, 'cuda', '*.cu')))
    # Some toolkits (this project's CI machine among them) keep libcudart in
    # lib/ rather than the lib64/ that torch looks in.
    library_dirs = [d for d in (os.path.join(CUDA_HOME, 'lib64'),
                                os.path.join(CUDA_HOME, 'lib'))
                    if os.path.isdir(d)]
    return [CUDAExtension(
        'ops_dcnv3._C', sources, library_dirs=library_dirs,
        extra_compile_args={'cxx': cxx, 'nvcc': ['-O3']},
        extra_link_args=['-fopenmp'])]


def add_mim_extension():
    """Put ``model-index.yml`` and ``configs/`` into ``internimage/.mim/``,
    where openmim looks for a package's model index (``mim search
    internimage-mm``): links in a development install (``pip install -e``),
    copies when a package is built. Returns the files to ship."""
    argv = set(sys.argv[1:])
    if argv & {'develop', 'editable_wheel'}:
        mode = 'link'
    elif argv & {'sdist', 'bdist_wheel', 'build', 'install'}:
        mode = 'copy'
    else:
        return []
    mim = os.path.join(ROOT, 'internimage', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in ('model-index.yml', 'configs'):
        src, dst = os.path.join(ROOT, name), os.path.join(mim, name)
        if os.path.islink(dst) or os.path.isfile(dst):
            os.remove(dst)
        elif os.path.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'link':
            os.symlink(os.path.relpath(src, mim), dst)
        elif os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
    if mode == 'link':
        return []
    package = os.path.join(ROOT, 'internimage')
    return [os.path.relpath(os.path.join(d, f), package)
            for d, _, files in os.walk(mim) for f in files]


def readme():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


setup(
    name='internimage-mm',
    version='0.1.0',
    description='InternImage and the DCNv3 operator for OpenMMLab 2.0 '
    '(mmpretrain, mmdet 3, mmseg 1)',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=find_packages(include=('ops_dcnv3*', 'internimage*', 'mmcls_plugin*',
                                    'mmdet_plugin*', 'mmseg_plugin*')),
    package_data={'internimage': add_mim_extension()},
    # `pip install .[deploy]`: ONNX export (tools/export_onnx.py,
    # ops_dcnv3.onnx) and ONNX Runtime; tools/setup_env.sh installs them.
    extras_require={'deploy': ['onnx>=1.16', 'onnxruntime>=1.17',
                               'onnxscript>=0.2']},
    ext_modules=extensions(),
    cmdclass={'build_ext': BuildExtension},
    zip_safe=False,
)
