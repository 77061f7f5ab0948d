#!/usr/bin/env bash
# The original's "Train" job (same module flags) with the distributed job config: a chief (master),
# workers and parameter servers, every replica running youtube-8m.train, which takes its role
# from TF_CONFIG, on Vertex AI (cloud/vertex-distributed.yaml):
#
#   bash scripts/cloud/submit_distributed_train.sh [--dry-run] \
#       BUCKET_NAME=gs://... cs=100 hs=800 batch_size=160 [--evaluator-count=1]
#
# --evaluator-count=N (Vertex AI) adds the config's evaluator pool (workerpool3). train.py does
# not evaluate, so that pool runs youtube-8m.eval instead, with the original's evaluation flags
# for the same train_dir but without --run_once/--checkpoint: eval.py then evaluates every new
# checkpoint as the trainers export it (it polls until it is stopped).
# Job name yt8m_train_c${cs}h${hs}_${batch_size}_dist; train_dir as submit_train.sh's.
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME cs hs batch_size, DATA_PATTERN
# and, for the evaluator, EVAL_DATA_PATTERN.
set -euo pipefail
YT8M_VARS="BUCKET_NAME cs hs batch_size"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup distributed
yt8m_require cs hs batch_size
yt8m_require_int cs hs batch_size
train_dir=$BUCKET_NAME/c${cs}h${hs}_${batch_size}

if [ "${EVALUATOR_COUNT:-0}" -gt 0 ]; then
  YT8M_EXTRA_POOLS=(@@pool=3 @@python-module=youtube-8m.eval
    --eval_data_pattern="$EVAL_DATA_PATTERN" --model=NetVLADModelLF --train_dir="$train_dir"
    --frame_features --feature_names=rgb,audio --feature_sizes=1024,128 --batch_size=1024
    --base_learning_rate=0.0001 --netvlad_cluster_size="$cs" --netvlad_hidden_size="$hs"
    --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False
    --gating=True --moe_prob_gating=True)
fi

yt8m_submit "${JOB_NAME:-yt8m_train_c${cs}h${hs}_${batch_size}_dist}" train \
  --train_data_pattern="$DATA_PATTERN" \
  --train_dir="$train_dir" \
  --frame_features --feature_names=rgb,audio --feature_sizes=1024,128 --batch_size="$batch_size" \
  --base_learning_rate=0.0001 --netvlad_cluster_size="$cs" --netvlad_hidden_size="$hs" \
  --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False --gating=True \
  --moe_prob_gating=True --max_steps=500000 --export_model_steps=5000 --num_epochs=10
