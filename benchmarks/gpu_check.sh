#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with an NVIDIA GPU (H100/H200), sized for about
# 8 minutes on one H200 (TOTAL_BUDGET seconds; every step also has its own limit):
#   1. build retina_unet._C in place against that machine's torch (CUDA kernels forced, this GPU's arch),
#   2. the CUDA tests with the default kernels (v1, all of `pytest -m cuda`) and with the v2 kernels
#      (RETINA_UNET_KERNELS=v2, the op and post-processing tests),
#   3. compute-sanitizer memcheck and racecheck for v2, memcheck for v1 (benchmarks/sanitizer_driver.py),
#   4. the CUDA kernel benchmarks for v2 and v1 (whole-call and kernel time, checked results),
#   5. the end-to-end inference benchmark (post-processing share, TTA x4 + WBC) for v2 and v1,
#   6. racecheck for v1; optionally (RUN_TRAIN=1) a short GPU training run.
# Usage: bash benchmarks/gpu_check.sh OUT_DIR. Every result lands in OUT_DIR; OUT_DIR/gpu_check.json
# lists each step (name, status ok/failed/timeout/skipped, exit code, seconds, limit). A failing step
# never stops the later ones; a step that no longer fits in TOTAL_BUDGET is recorded as skipped.
# The exit code is non-zero if any step failed or was skipped.
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
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; m,n=torch.cuda.get_device_capability(); print(f'{m}.{n}')" 2>/dev/null || echo "9.0")
  export TORCH_CUDA_ARCH_LIST
fi
# Limits (seconds). Measured on the H200 (2026-11-27, v1): build 38 s, CUDA tests 56 s, memcheck 20 s,
# racecheck --quick 47 s, kernel benchmarks 41 s, e2e 7 s. v2 and the kernel-time recording add some.
TOTAL_BUDGET=${TOTAL_BUDGET:-480}
BUILD_BUDGET=${BUILD_BUDGET:-120}
TEST_BUDGET=${TEST_BUDGET:-90}
TEST_V2_BUDGET=${TEST_V2_BUDGET:-60}
MEMCHECK_BUDGET=${MEMCHECK_BUDGET:-40}
RACECHECK_BUDGET=${RACECHECK_BUDGET:-60}
BENCH_BUDGET=${BENCH_BUDGET:-75}
E2E_BUDGET=${E2E_BUDGET:-40}
TRAIN_BUDGET=${TRAIN_BUDGET:-120}
RUN_TRAIN=${RUN_TRAIN:-0}
RUN_CPU_TESTS=${RUN_CPU_TESTS:-0}
# pytest-benchmark calibration sized for the budget.
BENCH_ARGS=${BENCH_ARGS:---benchmark-max-time=0.1 --benchmark-min-rounds=3 --benchmark-warmup=off}
TRAIN_ARGS=${TRAIN_ARGS:-}
T_START=$(date +%s)
status=0
summary="$OUT/summary.txt"
steps="$OUT/steps.jsonl"
: >"$summary"
: >"$steps"
record() {  # record NAME STATUS RC SECONDS LIMIT
  printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit": %s}\n' "$1" "$2" "$3" "$4" "$5" >>"$steps"
  echo "$1: $2 rc=$3 ${4}s (limit ${5}s)" | tee -a "$summary"
}
step() {  # step NAME LIMIT CMD...: run within min(LIMIT, time left), log to OUT/NAME.log, record
  local name=$1 limit=$2; shift 2
  local left=$(( TOTAL_BUDGET - ($(date +%s) - T_START) ))
  if [ "$left" -lt 10 ]; then
    record "$name" skipped null 0 "$limit"; status=1; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  local st=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then st=timeout; elif [ $rc -ne 0 ]; then st=failed; fi
  record "$name" "$st" "$rc" "$dt" "$limit"
  tail -n 3 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/gpu.csv" 2>&1
timeout 60 $PY - "$OUT/env.json" <<'PYEOF' 2>&1 | tail -n 1 | tee -a "$summary"
import json, sys
env = {"python": sys.version.split()[0]}
try:
    import torch
    env.update(torch=torch.__version__, cuda=torch.version.cuda,
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    import torchvision
    env["torchvision"] = torchvision.__version__
except Exception as exc:  # recorded, never fatal
    env["error"] = repr(exc)
json.dump(env, open(sys.argv[1], "w"))
print(env)
PYEOF

step build "$BUILD_BUDGET" $PY setup.py build_ext --inplace
step doctor 30 $PY -m retina_unet doctor --require-cuda

OP_TESTS="tests/test_nms.py tests/test_nms_properties.py tests/test_roi_align.py tests/test_roi_align_properties.py tests/test_box_iou.py tests/test_kernel_versions.py tests/test_postprocess_batched.py tests/test_wbc_batched.py"
step tests_cuda_v1 "$TEST_BUDGET" env RETINA_UNET_KERNELS=v1 $PY -m pytest tests -m cuda -q --maxfail=20 \
  -p no:cacheprovider --junitxml="$OUT/tests_cuda_v1.xml"
step tests_cuda_v2 "$TEST_V2_BUDGET" env RETINA_UNET_KERNELS=v2 $PY -m pytest $OP_TESTS -m cuda -q --maxfail=20 \
  -p no:cacheprovider --junitxml="$OUT/tests_cuda_v2.xml"
[ "$RUN_CPU_TESTS" = 1 ] && step tests_ops_cpu "$TEST_BUDGET" $PY -m pytest $OP_TESTS -m "not cuda and not slow" -q -p no:cacheprovider

SAN=${COMPUTE_SANITIZER:-compute-sanitizer}
command -v "$SAN" >/dev/null || SAN=/usr/local/cuda/bin/compute-sanitizer
# Order: what flipping the default needs first (v2 sanitizers), then the measurements; v1's racecheck
# last (its kernels passed it on 2026-11-27 and changed only in their host code and status word).
step memcheck_v2 "$MEMCHECK_BUDGET" "$SAN" --tool memcheck --error-exitcode 9 --leak-check no \
  $PY benchmarks/sanitizer_driver.py --kernels v2
step racecheck_v2 "$RACECHECK_BUDGET" "$SAN" --tool racecheck --error-exitcode 9 \
  $PY benchmarks/sanitizer_driver.py --quick --kernels v2
step memcheck_v1 "$MEMCHECK_BUDGET" "$SAN" --tool memcheck --error-exitcode 9 --leak-check no \
  $PY benchmarks/sanitizer_driver.py --kernels v1

for v in v2 v1; do
  step "bench_cuda_$v" "$BENCH_BUDGET" env RETINA_UNET_KERNELS=$v $PY -m pytest benchmarks/test_bench_nms.py \
    benchmarks/test_bench_roi_align.py -k "cuda and not reference" --benchmark-only $BENCH_ARGS \
    --benchmark-json="$OUT/bench_cuda_$v.json" -q -p no:cacheprovider
  [ -s "$OUT/bench_cuda_$v.json" ] && timeout 60 $PY -m reports.kernels --json "$OUT/bench_cuda_$v.json" \
    --out "$OUT/kernels_$v" --markdown "$OUT/kernel_ratios_$v.md" >"$OUT/kernel_ratios_$v.log" 2>&1
done

if [ -f benchmarks/bench_inference_e2e.py ]; then
  for v in v2 v1; do
    step "e2e_inference_$v" "$E2E_BUDGET" env RETINA_UNET_KERNELS=$v $PY benchmarks/bench_inference_e2e.py \
      --device cuda --json "$OUT/e2e_inference_$v.json"
  done
fi
step racecheck_v1 "$RACECHECK_BUDGET" "$SAN" --tool racecheck --error-exitcode 9 \
  $PY benchmarks/sanitizer_driver.py --quick --kernels v1
if [ "$RUN_TRAIN" = 1 ] && [ -f benchmarks/gpu_train_check.py ]; then
  step train_gpu "$TRAIN_BUDGET" $PY benchmarks/gpu_train_check.py --out "$OUT" $TRAIN_ARGS
fi

# One JSON with the environment and every step (written even when steps failed).
timeout 60 $PY - "$OUT" "$status" "$(( $(date +%s) - T_START ))" <<'PYEOF' || echo '{"error": "could not write gpu_check.json"}' >"$OUT/gpu_check.json"
import json, os, subprocess, sys
out, status, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = [json.loads(line) for line in open(os.path.join(out, "steps.jsonl")) if line.strip()]
try:
    env = json.load(open(os.path.join(out, "env.json")))
except (OSError, ValueError) as exc:
    env = {"error": f"no env.json: {exc!r}"}
try:
    env["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
result = {"env": env, "total_seconds": total, "ok": status == 0, "steps": steps,
          "files": sorted(f for f in os.listdir(out) if f.endswith((".json", ".md", ".xml")))}
tmp = os.path.join(out, "gpu_check.json.tmp")
with open(tmp, "w") as fh:
    json.dump(result, fh, indent=2)
os.replace(tmp, os.path.join(out, "gpu_check.json"))
PYEOF
echo "overall status=$status ($(( $(date +%s) - T_START ))s)" | tee -a "$summary"
exit $status
