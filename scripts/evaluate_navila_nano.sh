#!/usr/bin/env bash
# The README's navila-nano table: every policy through the sim_eval ROS 2 graph (simulator,
# navigator, motion controller, evaluator over Fast DDS) on the same 100 val_unseen episodes,
# then `nvila-nav-report` (table, episode-length plot, failure GIFs).
#   scripts/evaluate_navila_nano.sh [POLICY ...]   default: all of them; a finished run is kept
# Runs in parallel need their own ROS_DOMAIN_ID each (two sim_eval graphs on one domain hear
# each other's episodes and camera), e.g. ROS_DOMAIN_ID=11 scripts/evaluate_navila_nano.sh random.
# Policies: navila-nano (models/navila-nano), random, forward, navila-nano-blind (the
# instruction-only model, $BLIND), navila-nano-w8a8-w4a16 (navila-nano quantized with both
# recipes, calibrated on train rollouts, exported to ONNX and run by onnxruntime, $DEPLOY);
# the models choose the most probable of the ten action sentences (navigator decoding: choose),
# navila-nano-generate is navila-nano with NaVILA's greedy generation instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/eval}
RTF=${RTF:-4}
EPISODES=data/sim/eval_val_unseen.json.gz
NANO=${NANO:-models/navila-nano}
BLIND=${BLIND:-outputs/train/navila-nano-blind/02-navigation/final}
DEPLOY=${DEPLOY:-outputs/deploy/navila-nano-w8a8-w4a16}
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"
[[ -f $EPISODES ]] || "$PY" -m nvila_nav.sim episodes --split val_unseen --n 100 --seed 0 --out "$EPISODES"

run() {  # run NAME BRINGUP-ARGS...
  local name=$1; shift
  if [[ -f $OUT/$name/summary.json ]]; then echo "$name: done ($OUT/$name)"; return; fi
  echo "$name: $OUT/$name"
  "$PY" -m nvila_nav.nodes.bringup sim_eval --episodes "$EPISODES" --output-dir "$OUT/$name" \
    --label "$name" --real-time-factor "$RTF" --params-file config/eval/val_unseen_100.yaml \
    "$@" --ros-args --log-level warn
}

navigator_params() {  # navigator_params FILE KEY: VALUE ...
  local file=$OUT/$1; shift
  { printf 'navigator:\n  ros__parameters:\n'; printf '    %s\n' "$@"; } > "$file"
  echo "$file"
}

deploy() {  # the W8A8 vision + W4A16 LLM ONNX set of docs/deployment.md
  [[ -f $DEPLOY/export.json ]] && return
  "$PY" -m nvila_core quantize --model "$NANO" --recipe both --calib data/sim/train_rollouts \
    --out "$DEPLOY-checkpoint"
  "$PY" -m nvila_core export --model "$DEPLOY-checkpoint" --out "$DEPLOY"
}

POLICIES=("$@")
[[ ${#POLICIES[@]} -gt 0 ]] || POLICIES=(navila-nano random forward navila-nano-blind navila-nano-w8a8-w4a16)
RUNS=()
for p in "${POLICIES[@]}"; do
  case $p in
    navila-nano)
      run "$p" --policy nvila --model "$NANO" --params-file "$(navigator_params choose.yaml 'decoding: choose')" ;;
    navila-nano-generate) run "$p" --policy nvila --model "$NANO" ;;
    random) run "$p" --policy random ;;
    forward) run "$p" --policy forward ;;
    navila-nano-blind)
      run "$p" --policy nvila --model "$BLIND" \
        --params-file "$(navigator_params blind.yaml 'blank_frames: true' 'decoding: choose')" ;;
    navila-nano-w8a8-w4a16)
      deploy
      run "$p" --policy nvila --model "$DEPLOY" \
        --params-file "$(navigator_params ort.yaml 'backend: onnxruntime' 'decoding: choose')" ;;
    *) echo "unknown policy $p" >&2; exit 2 ;;
  esac
  RUNS+=(--run "$p=$OUT/$p")
done
"$PY" -m nvila_nav.report "${RUNS[@]}" --episodes "$EPISODES" --out "$OUT/report" --gifs 3
if [[ " ${POLICIES[*]} " == *" navila-nano-w8a8-w4a16 "* && ! -f $OUT/agreement/summary.json ]]; then
  # next-action agreement of the deployed form with fp32 on the same (teacher-forced) inputs
  "$PY" -m nvila_nav.agreement --model "fp32=$NANO" --model "w8a8-w4a16=$DEPLOY:onnxruntime" \
    --episodes "$EPISODES" --decoding choose --out "$OUT/agreement"
fi
