#!/usr/bin/env bash
# The original's "Evaluate several single checkpoints in a loop": one evaluation job per checkpoint
# step, each with --checkpoint=model.ckpt-${CKPT}.index, on Vertex AI:
#
#   bash scripts/cloud/submit_eval_loop.sh [--dry-run] \
#       BUCKET_NAME=gs://... cs=10 hs=400 batch_size=160 \
#       CKPTS="170010 180010 190010 200010 210010 220010"
#
# Job names yt8m_eval_c${cs}h${hs}_${CKPT}_<HH>H<MM>M<SS>S (the original's $(date +%HH%MM%SS)).
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME cs hs batch_size (of the
# train_dir c${cs}h${hs}_${batch_size}), CKPTS (steps separated by spaces or commas),
# EVAL_DATA_PATTERN (default: the original's validate glob).
set -euo pipefail
YT8M_VARS="BUCKET_NAME cs hs batch_size CKPTS"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup single
yt8m_require cs hs batch_size CKPTS
yt8m_require_int cs hs batch_size
[ -z "$JOB_NAME" ] || yt8m_die "--job-name does not apply: this script submits one job per CKPT"
yt8m_split CKPTS
[ ${#YT8M_LIST[@]} -gt 0 ] || yt8m_die "CKPTS has no checkpoint step"
ckpts=("${YT8M_LIST[@]}")

for CKPT in "${ckpts[@]}"; do
  yt8m_require_int CKPT
  yt8m_submit "yt8m_eval_c${cs}h${hs}_${CKPT}_$(date +%HH%MM%SS)" eval \
    --eval_data_pattern="$EVAL_DATA_PATTERN" --model=NetVLADModelLF \
    --train_dir="$BUCKET_NAME/c${cs}h${hs}_${batch_size}" --frame_features \
    --feature_names=rgb,audio --feature_sizes=1024,128 --batch_size=1024 \
    --base_learning_rate=0.0001 --netvlad_cluster_size="$cs" --netvlad_hidden_size="$hs" \
    --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False \
    --gating=True --moe_prob_gating=True --run_once=True --checkpoint="model.ckpt-${CKPT}.index"
done
