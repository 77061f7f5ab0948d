#!/usr/bin/env bash
# The original's "Evaluate an averaged checkpoint" job (eval.py on avg_c${cs}h${hs}_${checkpoint}
# .ckpt-0, as written by submit_avg_range.sh / submit_avg_select.sh), on Vertex AI:
#
#   bash scripts/cloud/submit_eval_average.sh [--dry-run] \
#       BUCKET_NAME=gs://... cs=32 hs=512 batch_size=160 checkpoint=122304_etc_19
#
# Job name yt8m_eval_c${cs}h${hs}_${checkpoint}. Variables (VAR=value, --VAR=value or
# environment): BUCKET_NAME cs hs batch_size, checkpoint (the average's RANGE_NAME or
# ${ckpt_start}_${ckpt_end}), EVAL_DATA_PATTERN (default: the original's validate glob).
set -euo pipefail
YT8M_VARS="BUCKET_NAME cs hs batch_size checkpoint"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup single
yt8m_require cs hs batch_size checkpoint
yt8m_require_int cs hs batch_size

yt8m_submit "${JOB_NAME:-yt8m_eval_c${cs}h${hs}_${checkpoint}}" eval \
  --eval_data_pattern="$EVAL_DATA_PATTERN" \
  --train_dir="$BUCKET_NAME/c${cs}h${hs}_${batch_size}" \
  --frame_features --feature_names=rgb,audio --feature_sizes=1024,128 --batch_size=1024 \
  --base_learning_rate=0.0001 --netvlad_cluster_size="$cs" --netvlad_hidden_size="$hs" \
  --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False --gating=True \
  --moe_prob_gating=True --run_once=True \
  --checkpoint="avg_c${cs}h${hs}_${checkpoint}.ckpt-0.index"
