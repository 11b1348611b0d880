#!/usr/bin/env bash
# What DeltaLoss 50 % pruning does to navila-nano's navigation data (docs/training.md,
# "DeltaLoss on our data"): score the first $SUBSET training episodes' samples with navila-nano
# (the large model) and the instruction-only model (the weak one: no smaller navila-nano exists;
# it is scored on black frames, as it was trained), keep the top half, then fine-tune navila-nano
# for one epoch on the whole subset and on the kept half (half the steps), side by side, and
# compare validation loss, next-action accuracy and teacher-forced agreement with the expert.
#   scripts/deltaloss_study.sh          (about 40 min on 2 cores with SUBSET=240)
#   GROUP_BY=answer scripts/deltaloss_study.sh   keep half of each action kind (prune --group-by)
# Each step is skipped when its output exists (a finished run is not trained again).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/deltaloss}
LARGE=${LARGE:-models/navila-nano}
SMALL=${SMALL:-outputs/train/navila-nano-blind/02-navigation/final}
SUBSET=${SUBSET:-240}
KEEP=${KEEP:-0.5}
GROUP_BY=${GROUP_BY:-dataset}
PRUNED=pruned-by-$GROUP_BY
DATA=data/nano/train_C_$SUBSET
export OMP_NUM_THREADS=1 MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT" "$DATA"

# the subset: an index over the first $SUBSET episodes of the training rollouts (no copies)
"$PY" - "$SUBSET" "$DATA/index.json" <<'PY'
import json, sys
index = json.load(open("data/nano/train_C/index.json"))
index["episodes"] = [
    {**e, "dir": f"../train_C/{e['dir']}"} for e in index["episodes"][: int(sys.argv[1])]
]
json.dump(index, open(sys.argv[2], "w"), indent=1)
PY

data_section() {  # data_section [PRUNED_FILE]
  printf 'data:\n  seed: 0\n  num_frames: 5\n  history: recent\n  max_val_samples: 256\n'
  [[ -z ${1:-} ]] || printf '  pruned: %s\n' "$1"
  printf '  datasets:\n'
  printf '    - {name: sim-train, path: %s, split: train}\n' "$DATA"
  printf '    - {name: sim-val-unseen, path: data/nano/val_C, split: val}\n'
}
data_section | sed '1d; s/^  //' > "$OUT/mixture.yaml"
[[ -f $OUT/kept-by-$GROUP_BY.yaml ]] || OMP_NUM_THREADS=2 "$PY" -m nvila_core prune \
  --large "$LARGE" --small "$SMALL" --small-blank-frames --mixture "$OUT/mixture.yaml" \
  --keep "$KEEP" --group-by "$GROUP_BY" --batch-size 16 --out "$OUT/kept-by-$GROUP_BY.yaml"

recipe() {  # recipe NAME [PRUNED_FILE]
  cat <<YAML
name: $1
seed: 0
model: {checkpoint: $LARGE}
$(data_section "${2:-}")
defaults: {batch_size: 16, global_batch_size: 32, weight_decay: 0.01, warmup_ratio: 0.03,
  schedule: cosine, grad_clip: 1.0, log_every: 10, save_every: 100, eval_generate_samples: 64,
  device: cpu, num_workers: 1}
stages:
  - {name: finetune, trainable: [vision_tower, mm_projector, llm], lr: 2.0e-4,
     vision_lr_ratio: 1.0, epochs: 1.0}
YAML
}
recipe deltaloss-full > "$OUT/full.yaml"
recipe "deltaloss-$PRUNED" "$OUT/kept-by-$GROUP_BY.yaml" > "$OUT/$PRUNED.yaml"
for run in full "$PRUNED"; do
  "$PY" -m nvila_core train --recipe "$OUT/$run.yaml" --out "$OUT/$run" > "$OUT/$run.log" 2>&1 &
done
wait
EVAL=outputs/eval/val_unseen_C.json.gz
[[ -f $EVAL ]] || "$PY" -m nvila_nav.sim episodes --split val_unseen --tier C --n 100 --seed 0 \
  --out "$EVAL"
"$PY" -m nvila_nav.agreement --model "navila-nano=$LARGE" \
  --model "full=$OUT/full/01-finetune/final" --model "$PRUNED=$OUT/$PRUNED/01-finetune/final" \
  --episodes "$EVAL" --limit 30 --decoding choose --width 128 --height 96 \
  --out "$OUT/agreement-$PRUNED"
for run in full "$PRUNED"; do
  echo "$run: $(tail -1 "$OUT/$run/01-finetune/metrics.csv")"
done
