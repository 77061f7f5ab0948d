#!/usr/bin/env bash
# The original's "Average select checkpoints", locally:
#   scripts/avg_select.sh TRAIN_DIR CS HS RANGE_NAME STEP1,STEP2,...
# writes TRAIN_DIR/avg_c${CS}h${HS}_${RANGE_NAME}.ckpt-0.*
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,4p' "$0" >&2; exit 2
fi
train_dir=$1 cs=$2 hs=$3 range_name=$4 steps=$5; shift 5
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run "$PYTHON" -m youtube-8m.avg_checkpoints --prefix="${train_dir}/model.ckpt-" \
  --output_path="${train_dir}/avg_c${cs}h${hs}_${range_name}.ckpt" --checkpoints="$steps" "$@"
