#!/usr/bin/env bash
# The checks that need a CUDA GPU, which CI (CPU only) cannot run; results go to the issue notes.
#   scripts/gpu_checks.sh OUT_DIR
# Writes OUT_DIR/gpu_checks.log and the CSV/PNG/JSON of: the W4A16/W8A8 kernels vs torch fp16
# (trt_kernels.bench), the AOT PTX launched from its manifest as TensorRT would
# (trt_kernels.launch_check), and a bf16 vs FP8 training step (nvila_core.train.fp8_bench, needs
# torchao). Runs every check even if one fails; exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_checks.sh OUT_DIR}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG=$OUT/gpu_checks.log
failed=()
check() {  # check NAME COMMAND...
  echo "== $1: ${*:2}" | tee -a "$LOG"
  local start=$SECONDS
  "${@:2}" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $1: rc $rc in $((SECONDS - start)) s" | tee -a "$LOG"
  [[ $rc -eq 0 ]] || failed+=("$1")
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG"
"$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' \
  | tee -a "$LOG"
check pytest "$PY" -m pytest -q test/kernels/test_aot.py test/kernels/test_plugin.py \
  test/kernels/test_bench.py test/train/test_fp8.py \
  test/train/test_trainer.py::test_resume_restores_a_partly_filled_logging_window_on_the_training_device
check kernels "$PY" -m trt_kernels.bench --out "$OUT"
ARTIFACTS=$(mktemp -d)
check launch "$PY" -m trt_kernels.launch_check --out "$ARTIFACTS"
cp "$ARTIFACTS/launch_check.json" "$OUT/" 2>/dev/null
check fp8 "$PY" -m nvila_core.train.fp8_bench --out "$OUT"
echo "failed: ${failed[*]:-none}" | tee -a "$LOG"
[[ ${#failed[@]} -eq 0 ]]
