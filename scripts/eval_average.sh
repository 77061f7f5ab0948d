#!/usr/bin/env bash
# The original's "Evaluate an averaged checkpoint", locally:
#   scripts/eval_average.sh TRAIN_DIR EVAL_PATTERN CS HS BATCH_SIZE NAME
# evaluates TRAIN_DIR/avg_c${CS}h${HS}_${NAME}.ckpt-0 and saves the single-model inference
# checkpoint inference_model_avg_c${CS}h${HS}_${NAME}.ckpt-0 for the ensemble step.
set -euo pipefail
if [ $# -lt 6 ]; then
  sed -n '2,5p' "$0" >&2; exit 2
fi
train_dir=$1 eval_pattern=$2 cs=$3 hs=$4 batch_size=$5 checkpoint=$6
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run "$PYTHON" -m youtube-8m.eval --eval_data_pattern="$eval_pattern" --train_dir="$train_dir" \
  $(original_model_flags) "${EXTRA[@]}" --batch_size="$batch_size" --base_learning_rate=0.0001 \
  --learning_rate_decay=0.8 --run_once=True \
  --checkpoint="avg_c${cs}h${hs}_${checkpoint}.ckpt-0.index" \
  --results_json="$train_dir/eval_results_avg_c${cs}h${hs}_${checkpoint}.json"
