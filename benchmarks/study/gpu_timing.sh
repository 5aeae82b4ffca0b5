#!/usr/bin/env bash
# One device call: build the extension for this GPU, run the smoke study on it, and time the
# paper training preset per model (to size the `paper` study preset in GPU hours).
# Usage: bash benchmarks/study/gpu_timing.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: gpu_timing.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; m,n=torch.cuda.get_device_capability(); print(f'{m}.{n}')")
nvidia-smi --query-gpu=name,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
t0=$(date +%s)
timeout 300 $PY setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1 || { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout 120 $PY -m retina_unet.study run --preset smoke --out /tmp/smoke_study --data-root /tmp/smoke_data \
  --workers 1 --no-progress >"$OUT/smoke_study.log" 2>&1
echo "smoke study rc=$? in $(( $(date +%s) - t0 )) s"; grep -E "done|FAILED|run\(s\)" "$OUT/smoke_study.log" | tail -6
$PY - <<'PY' >>"$OUT/smoke_study.log" 2>&1
import json, glob
for f in sorted(glob.glob("/tmp/smoke_study/results/*.json")):
    e = json.load(open(f)); print(e["run_id"], e["result"]["config"]["device"], e["result"]["environment"]["gpu"])
PY
tail -4 "$OUT/smoke_study.log"
timeout ${TIMING_BUDGET:-300} $PY -m benchmarks.study.time_runs --preset paper --models ${MODELS:-retina_unet retina_net} \
  --batches 30 --n-eval 50 --data-root /tmp/paper_data --out "$OUT/paper_timing.json" 2>"$OUT/timing.err"
echo "timing rc=$?"; tail -5 "$OUT/timing.err"
