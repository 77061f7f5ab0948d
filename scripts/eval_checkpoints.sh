#!/usr/bin/env bash
# The original's "Evaluate several single checkpoints in a loop", locally:
#   scripts/eval_checkpoints.sh TRAIN_DIR EVAL_PATTERN CS HS BATCH_SIZE STEP [STEP ...]
# Evaluates model.ckpt-STEP for each STEP (each also saved as inference_model_STEP), then
# prints a table step -> GAP and writes it as TRAIN_DIR/eval_checkpoints.csv. One eval.py
# process evaluates them all in turn (--checkpoint=a,b,...: one graph, one start-up).
set -euo pipefail
if [ $# -lt 6 ]; then
  sed -n '2,5p' "$0" >&2; exit 2
fi
train_dir=$1 eval_pattern=$2 cs=$3 hs=$4 batch_size=$5; shift 5
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
csv="$train_dir/eval_checkpoints.csv"
results="$train_dir/eval_results_checkpoints.json"
checkpoints=$(printf 'model.ckpt-%s.index,' "$@")
run "$PYTHON" -m youtube-8m.eval --eval_data_pattern="$eval_pattern" --model=NetVLADModelLF \
  --train_dir="$train_dir" $(original_model_flags) "${EXTRA[@]}" --batch_size="$batch_size" \
  --base_learning_rate=0.0001 --learning_rate_decay=0.8 --run_once=True \
  --checkpoint="${checkpoints%,}" --results_json="$results"
"$PYTHON" - "$results" "$csv" <<'PY'
import json, os, sys
results = json.load(open(sys.argv[1]))
rows = ["%s,%.5f,%.4f,%.4f,%d" % (r["global_step"], r["gap"], r["hit_at_one"], r["perr"],
                                  r["examples"])
        for r in (results if isinstance(results, list) else [results])]
with open(sys.argv[2] + ".tmp", "w") as handle:
  handle.write("\n".join(["step,gap,hit_at_one,perr,videos"] + rows) + "\n")
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
printf '%-10s %-9s %-9s %-9s %s\n' step GAP Hit@1 PERR videos
tail -n +2 "$csv" | tr ',' ' ' | while read -r step gap hit perr videos; do
  printf '%-10s %-9s %-9s %-9s %s\n' "$step" "$gap" "$hit" "$perr" "$videos"
done
echo "(table written to $csv)"
