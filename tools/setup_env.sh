#!/usr/bin/env bash
# Sets up, or reuses in about a second when nothing changed, the virtualenv
# .venv in the repository root: the pinned stack of
# requirements/constraints.txt (torch 2.13.0 + torchvision 0.28.0, mmengine,
# mmcv 2.1.0 compiled with its ops, mmdet, mmseg, mmpretrain) and this project
# with ops_dcnv3 compiled.
#
# mmcv 2.1.0 has no wheel on PyPI: it is compiled once per machine (7 to 20
# minutes on 2 cores) and the wheel is kept in $INTERNIMAGE_WHEEL_CACHE
# (default ~/.cache/internimage-mm/wheels) for every later setup.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
CONSTRAINTS=$ROOT/requirements/constraints.txt
WHEEL_CACHE=${INTERNIMAGE_WHEEL_CACHE:-$HOME/.cache/internimage-mm/wheels}
MMCV_VERSION=2.1.0
# Python packages of the stack beyond the OpenMMLab ones (which are installed
# with --no-deps, as their own requirement pins conflict with each other).
# safetensors: the HuggingFace-layout checkpoints; colorama, pandas, requests
# and tabulate: openmim's requirements (`mim search`), less opendatalab, whose
# openxlab would downgrade setuptools, tqdm, rich and packaging (it only
# serves `mim download --dataset`).
STACK_DEPS=(addict yapf opencv-python termcolor rich matplotlib numpy
  pycocotools scipy shapely six terminaltables tqdm packaging prettytable
  einops importlib-metadata mat4py modelindex ftfy regex pytest safetensors
  colorama pandas requests tabulate
  onnx onnxruntime onnxscript)  # the last three: setup.py's `deploy` extra

say() { printf '[setup] %s\n' "$*"; }

stack_hash() {
  cat "$CONSTRAINTS" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

ops_hash() {
  find setup.py ops_dcnv3/csrc -type f | sort | xargs cat | sha256sum | cut -d' ' -f1
}

if [ ! -x "$PY" ]; then
  say "creating $VENV (python3: $(python3 --version 2>&1))"
  python3 -m venv "$VENV"
fi

STACK_STAMP=$VENV/.stack-stamp
if [ "$(cat "$STACK_STAMP" 2>/dev/null)" != "$(stack_hash)" ]; then
  start=$SECONDS
  say "installing torch 2.13.0 / torchvision 0.28.0 (the registry's CUDA builds, ~5 GB; they run on the CPU too)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" torch torchvision
  # mmcv's setup.py imports pkg_resources, gone from setuptools >= 70; torch
  # asks for setuptools >= 77, which only matters when building torch itself.
  say "installing build tools (setuptools<70 for mmcv's setup.py, ninja for parallel compiles)"
  "${PIP[@]}" install -q "setuptools==69.5.1" "wheel==0.48.0" "ninja==1.13.2" 2>&1 \
    | grep -v "requires setuptools>=\|dependency resolver\|dependency conflicts" || true

  if [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("mmcv"))' 2>/dev/null)" != "$MMCV_VERSION" ]; then
    variant=$("$PY" -c 'import torch; print("torch" + torch.__version__.split("+")[0] + ("-cuda" if torch.cuda.is_available() else "-cpu"))')
    cache=$WHEEL_CACHE/$variant
    wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
      say "compiling mmcv $MMCV_VERSION with its ops ($variant): 7-20 minutes on 2 cores, once per machine; wheel kept in $cache"
      mkdir -p "$cache"
      MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$cache" "mmcv==$MMCV_VERSION"
      wheel=$(ls "$cache"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
    fi
    say "installing $(basename "$wheel")"
    "${PIP[@]}" install -q --no-deps "$wheel"
  fi

  say "installing mmengine, mmdet, mmsegmentation, mmpretrain, openmim and their requirements"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps mmengine mmdet mmsegmentation mmpretrain openmim
  "${PIP[@]}" install -q -c "$CONSTRAINTS" "${STACK_DEPS[@]}"
  # mmdeploy (tools/export_onnx.py --whole) pins protobuf<=3.20.2, which onnx
  # cannot use: installed without its requirements, with the three it needs.
  "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps mmdeploy aenum multiprocess dill
  stack_hash > "$STACK_STAMP"
  rm -f "$VENV/.ops-stamp"
  say "stack ready in $((SECONDS - start)) s"
fi

OPS_STAMP=$VENV/.ops-stamp
if [ "$(cat "$OPS_STAMP" 2>/dev/null)" != "$(ops_hash)" ] || ! "$PY" -c 'import ops_dcnv3._C' 2>/dev/null; then
  start=$SECONDS
  say "building ops_dcnv3 (CPU kernel; CUDA tensors run its Triton kernels, compiled at run time; DCNV3_WITH_CUDA=1 adds the CUDA C++ kernel)"
  "${PIP[@]}" install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v "^  " || true
  "$PY" -c 'import ops_dcnv3._C' || { say "ops_dcnv3 failed to build"; exit 1; }
  ops_hash > "$OPS_STAMP"
  say "ops_dcnv3 built in $((SECONDS - start)) s: kernels for $("$PY" -c 'import ops_dcnv3; print(sorted(ops_dcnv3.KERNEL_DEVICES))')"
fi
