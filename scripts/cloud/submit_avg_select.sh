#!/usr/bin/env bash
# The original's "Average select checkpoints" job (avg_checkpoints.py over a list of steps), on
# Vertex AI:
#
#   bash scripts/cloud/submit_avg_select.sh [--dry-run] \
#       BUCKET_NAME=gs://... cs=32 hs=512 batch_size=160 RANGE_NAME=122304_etc_19 \
#       CHECKPOINTS=122304,125397,133210,137879,140959,145600,150210,153324,156475,159900,164900,168029,172960,176234,181138,186032,189900,202410,207267
#
# Job name yt8m_avgckpt_c${cs}h${hs}_${RANGE_NAME}; writes
# $BUCKET_NAME/c${cs}h${hs}_${batch_size}/avg_c${cs}h${hs}_${RANGE_NAME}.ckpt-0.*
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME cs hs batch_size RANGE_NAME,
# CHECKPOINTS (the steps, separated by commas or spaces; the original's commands write them inline).
set -euo pipefail
YT8M_VARS="BUCKET_NAME cs hs batch_size RANGE_NAME CHECKPOINTS"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup single
yt8m_require cs hs batch_size RANGE_NAME CHECKPOINTS
yt8m_require_int cs hs batch_size
yt8m_split CHECKPOINTS
[ ${#YT8M_LIST[@]} -gt 0 ] || yt8m_die "CHECKPOINTS has no checkpoint step"
for step in "${YT8M_LIST[@]}"; do yt8m_require_int step; done
checkpoints=$(IFS=,; echo "${YT8M_LIST[*]}")

yt8m_submit "${JOB_NAME:-yt8m_avgckpt_c${cs}h${hs}_${RANGE_NAME}}" avg_checkpoints \
  --prefix="${BUCKET_NAME}/c${cs}h${hs}_${batch_size}/model.ckpt-" \
  --output_path="$BUCKET_NAME/c${cs}h${hs}_${batch_size}/avg_c${cs}h${hs}_${RANGE_NAME}.ckpt" \
  --checkpoints="$checkpoints"
