#!/usr/bin/env bash
# The original's "Train" job (one Gated NetVLAD model, float32) on Vertex AI:
#
#   bash scripts/cloud/submit_train.sh [--dry-run] \
#       BUCKET_NAME=gs://${USER}_yt8m_train_bucket cs=100 hs=800 batch_size=160
#
# Job name yt8m_train_c${cs}h${hs}_${batch_size}; train_dir $BUCKET_NAME/c${cs}h${hs}_${batch_size}.
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME cs hs batch_size, DATA_PATTERN
# (default: the original's train + validate globs).
set -euo pipefail
YT8M_VARS="BUCKET_NAME cs hs batch_size"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup single
yt8m_require cs hs batch_size
yt8m_require_int cs hs batch_size

yt8m_submit "${JOB_NAME:-yt8m_train_c${cs}h${hs}_${batch_size}}" train \
  --train_data_pattern="$DATA_PATTERN" \
  --train_dir="$BUCKET_NAME/c${cs}h${hs}_${batch_size}" \
  --frame_features --feature_names=rgb,audio --feature_sizes=1024,128 --batch_size="$batch_size" \
  --base_learning_rate=0.0001 --netvlad_cluster_size="$cs" --netvlad_hidden_size="$hs" \
  --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False --gating=True \
  --moe_prob_gating=True --max_steps=500000 --export_model_steps=5000 --num_epochs=10
