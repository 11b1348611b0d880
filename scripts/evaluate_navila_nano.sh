#!/usr/bin/env bash
# The navila-nano results: every policy on the val_unseen episodes of each curriculum tier
# (scenes 1000-1011, never trained on), then `nvila-nav-report` per tier (table with how episodes
# ended, episode-length plot, failure GIFs).
#
#   scripts/evaluate_navila_nano.sh [TIER ...]      default: A B C; finished runs are kept
#
# Tiers: A (goal in the start room or the next one, <= 5 m; 50 episodes), B (one doorway;
# 50), C (all routes, 3-22 m; 100). Where each row runs:
#   navila-nano-ros        models/navila-nano (fp32) through the sim_eval ROS 2 graph
#                          (simulator, navigator, motion controller, evaluator over Fast DDS)
#   navila-nano            the same model in the ROS-free closed loop (nvila-nav-closed-loop)
#   navila-nano-w8a8-w4a16 W8A8 vision + W4A16 LLM, ONNX on onnxruntime (closed loop)
#   navila-nano-blind      the instruction-only model, black frames (closed loop)
#   random, forward, expert                                            (closed loop)
# Both loops use the evaluator's scoring code, VLN-CE semantics (a blocked move is an executed
# no-op; success needs the agent's own stop within 1.5 m) and at most 100 actions. The models
# decide with DECODING (default choose_kind: the most probable kind of action, then its most
# probable amount). Runs in parallel need their own ROS_DOMAIN_ID.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-outputs/eval}
RTF=${RTF:-4}
NANO=${NANO:-models/navila-nano}
BLIND=${BLIND:-outputs/train/navila-nano-blind/02-navigation/final}
DEPLOY=${DEPLOY:-outputs/deploy/navila-nano-w8a8-w4a16}
ROWS=${ROWS:-navila-nano-ros navila-nano navila-nano-w8a8-w4a16 navila-nano-blind random forward expert}
DECODING=${DECODING:-choose_kind}   # how the models pick one of the ten actions
ROS_EPISODES=${ROS_EPISODES:-0}     # navila-nano-ros on the first N episodes of a tier (0: all;
                                    # N: reported on its own in <tier>/report-ros)
export MUJOCO_GL=${MUJOCO_GL:-egl}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

TIERS=("$@")
[[ ${#TIERS[@]} -gt 0 ]] || TIERS=(A B C)

count() { case $1 in C) echo 100 ;; *) echo 50 ;; esac; }

deploy() {  # the W8A8 vision + W4A16 LLM ONNX set of docs/deployment.md, built again when
            # $NANO's weights, config or frame heads are newer than it (a pulled or retrained
            # model) or an older nvila-core wrote it (another export format version)
  local stale
  stale=$(find "$NANO" \( -name model.safetensors -o -name config.json -o -path "*/heads/*" \) \
    -newer "$DEPLOY/export.json" 2>/dev/null || true)
  if [[ -f $DEPLOY/export.json && -z $stale ]] &&
    "$BIN/python" -c 'import sys; from nvila_core.export import load_metadata; load_metadata(sys.argv[1])' \
      "$DEPLOY" 2>/dev/null; then
    return
  fi
  "$BIN/nvila-core" quantize --model "$NANO" --recipe both --calib data/nano/train_C \
    --out "$DEPLOY-checkpoint"
  "$BIN/nvila-core" export --model "$DEPLOY-checkpoint" --out "$DEPLOY"
}

closed_loop() {  # closed_loop EPISODES DIR LABEL ARGS...
  local episodes=$1 dir=$2 label=$3; shift 3
  [[ -f $dir/summary.json ]] && { echo "$label: done ($dir)"; return; }
  "$BIN/nvila-nav-closed-loop" --episodes "$episodes" --out "$dir" --label "$label" "$@"
}

ros_graph() {  # ros_graph EPISODES DIR LABEL
  local episodes=$1 dir=$2 label=$3
  [[ -f $dir/summary.json ]] && { echo "$label: done ($dir)"; return; }
  # frames at the training data's 128x96 (the model resizes to 96 px tiles either way)
  local params=$OUT/navila_nano_graph.yaml
  printf 'navigator:\n  ros__parameters:\n    decoding: %s\nsim:\n  ros__parameters:\n    width: 128\n    height: 96\nevaluator:\n  ros__parameters:\n    max_episodes: %d\n' \
    "$DECODING" "$ROS_EPISODES" > "$params"
  "$BIN/nvila-nav-bringup" sim_eval --episodes "$episodes" --output-dir "$dir" --label "$label" \
    --policy nvila --model "$NANO" --real-time-factor "$RTF" \
    --params-file config/eval/val_unseen_100.yaml --params-file "$params" \
    --ros-args --log-level warn
}

mkdir -p "$OUT"
for tier in "${TIERS[@]}"; do
  episodes=$OUT/val_unseen_$tier.json.gz
  [[ -f $episodes ]] || "$BIN/nvila-sim" episodes --split val_unseen --tier "$tier" \
    --n "$(count "$tier")" --seed 0 --out "$episodes"
  runs=()
  for row in $ROWS; do
    dir=$OUT/$tier/$row
    case $row in
      navila-nano-ros)
        ros_graph "$episodes" "$dir" "$row"
        if [[ $ROS_EPISODES -gt 0 ]]; then  # fewer episodes than the other rows: its own report
          "$BIN/nvila-nav-report" --run "$row=$dir" --episodes "$episodes" \
            --out "$OUT/$tier/report-ros" --gifs 3
          continue
        fi ;;
      navila-nano) closed_loop "$episodes" "$dir" "$row" --model "$NANO" --decoding "$DECODING" ;;
      navila-nano-w8a8-w4a16)
        deploy
        closed_loop "$episodes" "$dir" "$row" --model "$DEPLOY" --backend onnxruntime \
          --decoding "$DECODING" ;;
      navila-nano-blind)
        closed_loop "$episodes" "$dir" "$row" --model "$BLIND" --blank-frames --decoding "$DECODING" ;;
      random|forward|expert) closed_loop "$episodes" "$dir" "$row" --policy "$row" ;;
      *) echo "unknown row $row" >&2; exit 2 ;;
    esac
    runs+=(--run "$row=$dir")
  done
  [[ ${#runs[@]} -eq 0 ]] ||
    "$BIN/nvila-nav-report" "${runs[@]}" --episodes "$episodes" --out "$OUT/$tier/report" --gifs 3
done
