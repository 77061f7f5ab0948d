#!/usr/bin/env bash
# The original's "Average all checkpoints in a range", locally:
#   scripts/avg_range.sh TRAIN_DIR CS HS START END
# writes TRAIN_DIR/avg_c${CS}h${HS}_${START}_${END}.ckpt-0.* (the training 'checkpoint' file
# is left alone). Extra avg_checkpoints flags may follow, e.g. --exclude_optimizer_slots.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,5p' "$0" >&2; exit 2
fi
train_dir=$1 cs=$2 hs=$3 ckpt_start=$4 ckpt_end=$5; shift 5
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run "$PYTHON" -m youtube-8m.avg_checkpoints --checkpoints_start_end="${ckpt_start},${ckpt_end}" \
  --prefix="${train_dir}/model.ckpt-" \
  --output_path="${train_dir}/avg_c${cs}h${hs}_${ckpt_start}_${ckpt_end}.ckpt" "$@"
