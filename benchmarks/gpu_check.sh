#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with an NVIDIA GPU (H100/H200):
#   1. build retina_unet._C in place against that machine's torch (CUDA kernels forced),
#   2. the CUDA tests (pytest -m cuda) and a CPU smoke of the op tests under that torch,
#   3. compute-sanitizer memcheck and racecheck on every kernel (benchmarks/sanitizer_driver.py),
#   4. the kernel benchmarks (CUDA workloads) with the peers, as pytest-benchmark JSON,
#   5. if the models have landed: a short GPU training run and the end-to-end inference ratio.
# Usage: bash benchmarks/gpu_check.sh OUT_DIR   (every result lands in OUT_DIR; the exit code is
# non-zero if any step failed, but every step runs).
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
# Scripts run as files (benchmarks/*.py) import the package from the checkout.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
# Build only for the GPU that is here (compiles faster than the default list).
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; m,n=torch.cuda.get_device_capability(); print(f'{m}.{n}')")
  export TORCH_CUDA_ARCH_LIST
fi
# Per-step limits (seconds); a short device lease sets smaller ones.
STEP_BUDGET=${STEP_BUDGET:-240}
BUILD_BUDGET=${BUILD_BUDGET:-300}
SAN_BUDGET=${SAN_BUDGET:-240}
BENCH_BUDGET=${BENCH_BUDGET:-300}
TRAIN_BUDGET=${TRAIN_BUDGET:-240}
# pytest-benchmark calibration; a short lease passes e.g. "--benchmark-max-time=0.2 --benchmark-min-rounds=3".
BENCH_ARGS=${BENCH_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
RUN_CPU_TESTS=${RUN_CPU_TESTS:-1}
status=0
summary="$OUT/summary.txt"
: >"$summary"
step() {  # step NAME TIMEOUT CMD...: run, log to OUT/NAME.log, record the outcome
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  echo "$name rc=$rc ${dt}s" | tee -a "$summary"
  tail -n 5 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/gpu.csv" 2>&1
$PY -c "import torch,sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'python', sys.version.split()[0])" | tee -a "$summary"

step build "$BUILD_BUDGET" $PY setup.py build_ext --inplace || { echo "build failed; stopping" | tee -a "$summary"; exit 1; }
$PY -m retina_unet doctor --require-cuda | tee -a "$summary"

step tests_cuda "$STEP_BUDGET" $PY -m pytest tests -m cuda -q --maxfail=10 -p no:cacheprovider --junitxml="$OUT/tests_cuda.xml"
[ "$RUN_CPU_TESTS" = 1 ] && step tests_ops_cpu "$STEP_BUDGET" $PY -m pytest tests/test_box_iou.py tests/test_nms.py tests/test_roi_align.py -m "not cuda and not slow" -q -p no:cacheprovider

SAN=${COMPUTE_SANITIZER:-compute-sanitizer}
command -v "$SAN" >/dev/null || SAN=/usr/local/cuda/bin/compute-sanitizer
step memcheck "$SAN_BUDGET" "$SAN" --tool memcheck --error-exitcode 9 --leak-check no $PY benchmarks/sanitizer_driver.py
step racecheck "$SAN_BUDGET" "$SAN" --tool racecheck --error-exitcode 9 $PY benchmarks/sanitizer_driver.py --quick

step bench_cuda "$BENCH_BUDGET" $PY -m pytest benchmarks/test_bench_nms.py benchmarks/test_bench_roi_align.py -k cuda \
  --benchmark-only $BENCH_ARGS --benchmark-json="$OUT/bench_cuda.json" -q -p no:cacheprovider
$PY -m reports.kernels --json "$OUT/bench_cuda.json" --out "$OUT" --markdown "$OUT/kernel_ratios.md" >"$OUT/kernel_ratios.log" 2>&1 || true

if [ -f benchmarks/gpu_train_check.py ]; then
  step train_gpu "$TRAIN_BUDGET" $PY benchmarks/gpu_train_check.py --out "$OUT" $TRAIN_ARGS
fi
if [ -f benchmarks/bench_inference_e2e.py ]; then
  step e2e_inference 120 $PY benchmarks/bench_inference_e2e.py --device cuda --json "$OUT/e2e_inference.json"
fi
echo "overall status=$status" | tee -a "$summary"
exit $status
