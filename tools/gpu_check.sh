#!/usr/bin/env bash
# The GPU check of the DCNv3 op, for a machine with a GPU and only torch,
# triton, pytest and ninja (no network, no OpenMMLab stack needed):
#
#  1. builds ops_dcnv3 in place with the CUDA C++ kernel (DCNV3_WITH_CUDA=1)
#     and, alongside, DCNv4's op from its source distribution;
#  2. runs the op tests natively on the GPU, tests/test_dcnv3_triton.py (the
#     Triton kernels) and tests/test_dcnv3_op.py (CPU and CUDA C++ kernels),
#     on cuda:0 and on the last GPU when there are several (device guard);
#  3. runs the GPU benchmark (tools/benchmark_dcnv3.py --device cuda):
#     forward and forward+backward, fp32/fp16/bf16, pure PyTorch vs Triton vs
#     CUDA C++ vs DCNv4, with the issue's targets checked.
#
# It writes at most 8 files to $OUT_DIR (default $OUT, else
# work_dirs/gpu_check): summary.md (the GPU, what passed, the table),
# build.log, dcnv4_build.log, tests_cuda<N>.log, benchmark.json and .log.
#
#   bash tools/gpu_check.sh                    # everything
#   DCNV4_SDIST=path/DCNv4-1.0.0.post2.tar.gz bash tools/gpu_check.sh
#   GPU_CHECK_BENCH_ARGS="--rounds 5" bash tools/gpu_check.sh
#   GPU_CHECK_PYTEST_ARGS="-k 'not half'" bash tools/gpu_check.sh   # fewer tests
#
# DCNV4_SDIST defaults to .gpu/DCNv4-1.0.0.post2.tar.gz (.gpu/ is ignored by
# git). Fetch it where there is network with `pip download --no-deps
# --no-binary :all: dcnv4==1.0.0.post2`; on a machine without a GPU that
# command downloads the sdist and then fails (DCNv4's setup.py refuses to
# make metadata without CUDA), so add `--no-clean` and pack what pip left:
#   TMPDIR=/tmp/dl pip download --no-clean --no-deps --no-binary :all: dcnv4==1.0.0.post2
#   cd /tmp/dl/pip-download-*/ && mv dcnv4_* DCNv4-1.0.0.post2 &&
#   tar czf .gpu/DCNv4-1.0.0.post2.tar.gz DCNv4-1.0.0.post2   # (path in the repo)
# Without it the benchmark leaves DCNv4 out. The exit status is non-zero when a build,
# a test or a benchmark target failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-${OUT:-$ROOT/work_dirs/gpu_check}}
DCNV4_SDIST=${DCNV4_SDIST:-$ROOT/.gpu/DCNv4-1.0.0.post2.tar.gz}
DCNV4_DIR=${DCNV4_DIR:-/tmp/dcnv4_site}
BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:---rounds 3 --min-time 0.1}
PYTEST_ARGS=${GPU_CHECK_PYTEST_ARGS:-}
mkdir -p "$OUT_DIR"
SUMMARY=$OUT_DIR/summary.md
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
# The tests import this checkout and each other (tests/conftest.py needs
# mmengine, which this machine may lack: --noconftest below).
export PYTHONPATH=$ROOT:$ROOT/tests:$DCNV4_DIR${PYTHONPATH:+:$PYTHONPATH}
status=0
note() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }
fail() { note "FAILED: $*"; status=1; }

: > "$SUMMARY"
note "# DCNv3 GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
note ""
"$PY" - <<'EOF' | tee -a "$SUMMARY" || { note "no usable GPU"; exit 1; }
import torch, triton
assert torch.cuda.is_available(), 'torch sees no GPU'
names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
cap = torch.cuda.get_device_capability(0)
print(f'- GPUs: {", ".join(names)} (sm_{cap[0]}{cap[1]}); torch {torch.__version__}, '
      f'CUDA {torch.version.cuda}, triton {triton.__version__}')
EOF
ARCH=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
JOBS=$(( $(nproc) > 2 ? $(nproc) / 2 : 1 ))

# 1. Builds: DCNv4 in the background, ops_dcnv3 (CPU + CUDA C++) meanwhile.
dcnv4_pid=
if [ -f "$DCNV4_SDIST" ]; then
  (start=$SECONDS
   TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$JOBS "$PY" -m pip install -q --no-index --no-deps \
     --no-build-isolation --target "$DCNV4_DIR" "$DCNV4_SDIST" > "$OUT_DIR/dcnv4_build.log" 2>&1
   rc=$?; echo "rc=$rc in $((SECONDS - start)) s" >> "$OUT_DIR/dcnv4_build.log"; exit $rc) &
  dcnv4_pid=$!
else
  note "- DCNv4: no source distribution at $DCNV4_SDIST, left out of the benchmark"
fi
start=$SECONDS
if DCNV3_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$JOBS \
    "$PY" setup.py build_ext --inplace > "$OUT_DIR/build.log" 2>&1; then
  note "- ops_dcnv3 with the CUDA C++ kernel built in $((SECONDS - start)) s (sm_$ARCH): kernels for" \
       "$("$PY" -c 'import ops_dcnv3.ops as o; print(sorted(o.COMPILED_DEVICES))')"
else
  fail "ops_dcnv3 build (see build.log); the CUDA C++ tests will skip"
fi

# 2. The op tests, natively on each GPU index that matters.
devices=(cuda:0)
[ "$GPUS" -gt 1 ] && devices+=("cuda:$((GPUS - 1))")
for device in "${devices[@]}"; do
  log=$OUT_DIR/tests_${device/:/}.log
  start=$SECONDS
  # shellcheck disable=SC2086
  eval DCNV3_TEST_DEVICE=$device "$PY" -m pytest --noconftest -q -p no:cacheprovider -rfEs \
    tests/test_dcnv3_triton.py tests/test_dcnv3_op.py $PYTEST_ARGS > "$log" 2>&1
  rc=$?
  note "- tests on $device ($((SECONDS - start)) s): $(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)"
  [ $rc -eq 0 ] || fail "tests on $device (see $(basename "$log"))"
done

# 3. The benchmark.
if [ -n "$dcnv4_pid" ]; then
  if wait "$dcnv4_pid"; then
    note "- DCNv4 built: $(tail -1 "$OUT_DIR/dcnv4_build.log")"
  else
    note "- DCNv4 failed to build (see dcnv4_build.log); left out of the benchmark"
  fi
fi
note ""
# shellcheck disable=SC2086
"$PY" tools/benchmark_dcnv3.py --device cuda:0 --check --json "$OUT_DIR/benchmark.json" \
  $BENCH_ARGS 2> "$OUT_DIR/benchmark.log" | tee -a "$SUMMARY"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail "benchmark below its targets or broken"
note ""
note "exit status $status"
exit $status
