#!/usr/bin/env bash
# The original's "Average all checkpoints in a range" job (avg_checkpoints.py over every
# model.ckpt-<step> with ckpt_start <= step <= ckpt_end), on Vertex AI:
#
#   bash scripts/cloud/submit_avg_range.sh [--dry-run] \
#       BUCKET_NAME=gs://... cs=10 hs=400 batch_size=160 ckpt_start=150010 ckpt_end=220010
#
# Job name yt8m_avgckpt_c${cs}h${hs}_${ckpt_start}_${ckpt_end}; writes
# $BUCKET_NAME/c${cs}h${hs}_${batch_size}/avg_c${cs}h${hs}_${ckpt_start}_${ckpt_end}.ckpt-0.*
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME cs hs batch_size ckpt_start
# ckpt_end.
set -euo pipefail
YT8M_VARS="BUCKET_NAME cs hs batch_size ckpt_start ckpt_end"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup single
yt8m_require cs hs batch_size ckpt_start ckpt_end
yt8m_require_int cs hs batch_size ckpt_start ckpt_end
[ "$ckpt_start" -le "$ckpt_end" ] || yt8m_die "ckpt_start ($ckpt_start) > ckpt_end ($ckpt_end)"

range=${ckpt_start}_${ckpt_end}
yt8m_submit "${JOB_NAME:-yt8m_avgckpt_c${cs}h${hs}_${range}}" avg_checkpoints \
  --checkpoints_start_end="${ckpt_start},${ckpt_end}" \
  --prefix="${BUCKET_NAME}/c${cs}h${hs}_${batch_size}/model.ckpt-" \
  --output_path="$BUCKET_NAME/c${cs}h${hs}_${batch_size}/avg_c${cs}h${hs}_${range}.ckpt"
