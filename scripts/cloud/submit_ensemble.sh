#!/usr/bin/env bash
# The original's ensemble/float16 steps 1-5, one job per call, on Vertex AI:
#
#   bash scripts/cloud/submit_ensemble.sh STEP [--dry-run] VARS...
#
#   1  train.py 10 steps of the n-model float16 graph (creates the ensemble checkpoint)
#   2  eval.py --create_meta_only: inference_model_10 (32*n+1 float16 tensors) and its meta graph
#   3  overwrite_float16_ckpt.py: fill it from the n single models -> ${INFERENCE_MODEL_NAME}-0
#   4  eval.py --checkpoint_file=${INFERENCE_MODEL_NAME}-0 with MIXING_WEIGHTS (tune them)
#   5  as 4 + --force_output_model_name=True (writes inference_model.* for the submission tgz)
#
# e.g. (the original's step 0 variables):
#   bash scripts/cloud/submit_ensemble.sh 1 --dry-run BUCKET_NAME=gs://... \
#       ENSEMBLE_DIR=ensemble_YHLS MODEL1_PARAM="24 1440" MODEL2_PARAM="32 1024" \
#       MODEL3_PARAM="16 800" MODEL4_PARAM="32 512" MIXING_WEIGHTS="0.25 0.25 0.25 0.25"
#   bash scripts/cloud/submit_ensemble.sh 3 BUCKET_NAME=gs://... ENSEMBLE_DIR=ensemble_YHLS \
#       INFERENCE_MODEL_NAME=inference_model_ensemble_YHLS \
#       MODEL1_CKPT=gs://.../single_models/c24h1440-inference_model_0 MODEL2_CKPT=... ...
#
# Job names yt8m_train_ensemble_${ENSEMBLE_DIR}_<YYYYmmdd_HHMMSS> (as the original's,
# for every step).
# Variables (VAR=value, --VAR=value or environment; lists separated by spaces or commas):
#   BUCKET_NAME ENSEMBLE_DIR                                   every step
#   MODEL1_PARAM .. MODELn_PARAM ("CLUSTER_SIZE HIDDEN_SIZE"),  steps 1 2 4 5: n = how many
#   MIXING_WEIGHTS (n weights)                                 are set, from MODEL1_PARAM on
#   MODEL1_CKPT .. MODELn_CKPT (single-model checkpoints)      step 3
#   INFERENCE_MODEL_NAME                                       steps 3 4 5
#   DATA_PATTERN (step 1), EVAL_DATA_PATTERN (steps 2 4 5): default the original's globs.
set -euo pipefail
YT8M_VARS="BUCKET_NAME ENSEMBLE_DIR MIXING_WEIGHTS INFERENCE_MODEL_NAME"
for i in $(seq 1 32); do YT8M_VARS+=" MODEL${i}_PARAM MODEL${i}_CKPT"; done
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 1 ] || yt8m_die "give exactly one STEP (1-5) (see --help)"
step=${YT8M_POSITIONAL[0]}
[[ $step =~ ^[1-5]$ ]] || yt8m_die "STEP must be 1, 2, 3, 4 or 5, got '$step'"
yt8m_setup single
yt8m_require ENSEMBLE_DIR

count_models() {  # count_models SUFFIX: n such that MODEL1_SUFFIX..MODELn_SUFFIX are set
  local n=0 i var
  while var="MODEL$((n + 1))_$1"; [ -n "${!var:-}" ]; do n=$((n + 1)); done
  for i in $(seq $((n + 2)) 32); do
    var="MODEL${i}_$1"
    [ -z "${!var:-}" ] || yt8m_die "$var is set but MODEL$((n + 1))_$1 is not"
  done
  echo "$n"
}

n_param=$(count_models PARAM)
n_ckpt=$(count_models CKPT)
if [ "$step" = 3 ]; then
  yt8m_require INFERENCE_MODEL_NAME MODEL1_CKPT
  n=$n_ckpt
  if [ "$n_param" -gt 0 ] && [ "$n_param" != "$n" ]; then
    yt8m_die "$n MODELi_CKPT but $n_param MODELi_PARAM: one checkpoint per model, in model order"
  fi
else
  yt8m_require MODEL1_PARAM MIXING_WEIGHTS
  [ "$step" = 1 ] || [ "$step" = 2 ] || yt8m_require INFERENCE_MODEL_NAME
  n=$n_param
  yt8m_split MIXING_WEIGHTS
  weights=("${YT8M_LIST[@]}")
  [ ${#weights[@]} -eq "$n" ] || yt8m_die "MIXING_WEIGHTS has ${#weights[@]} weights for $n" \
    "models (MODEL1_PARAM..MODEL${n}_PARAM)"
  # The repeated flags of the original's commands, one triple per model in model order.
  repeated=()
  for i in $(seq 1 "$n"); do
    var="MODEL${i}_PARAM"
    yt8m_split "$var"
    [ ${#YT8M_LIST[@]} -eq 2 ] || yt8m_die "$var must be 'CLUSTER_SIZE HIDDEN_SIZE', got" \
      "'${!var}'"
    cluster=${YT8M_LIST[0]} hidden=${YT8M_LIST[1]} weight=${weights[$((i - 1))]}
    [[ $cluster =~ ^[0-9]+$ && $hidden =~ ^[0-9]+$ ]] || yt8m_die "$var must be two integers" \
      "'CLUSTER_SIZE HIDDEN_SIZE', got '${!var}'"
    [[ $weight =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || yt8m_die "MIXING_WEIGHTS item $i" \
      "is not a number: '$weight'"
    repeated+=(--netvlad_cluster_size="$cluster" --netvlad_hidden_size="$hidden"
      --ensemble_wts="$weight")
  done
fi

job=${JOB_NAME:-yt8m_train_ensemble_${ENSEMBLE_DIR}_$(date +%Y%m%d_%H%M%S)}
train_dir=$BUCKET_NAME/$ENSEMBLE_DIR
common_tail=(--moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False
  --gating=True --moe_prob_gating=True)
case $step in
  1)
    yt8m_submit "$job" train \
      --train_data_pattern="$DATA_PATTERN" --model=NetVLADModelLF \
      --train_dir="$train_dir" --frame_features --feature_names=rgb,audio \
      --feature_sizes=1024,128 --batch_size=10 --base_learning_rate=0.00003 \
      "${repeated[@]}" "${common_tail[@]}" \
      --max_steps=10 --export_model_steps=2000 --ensemble_num="$n" --float16_flag=True ;;
  2)
    yt8m_submit "$job" eval \
      --eval_data_pattern="$EVAL_DATA_PATTERN" --model=NetVLADModelLF \
      --train_dir="$train_dir" --frame_features --feature_names=rgb,audio \
      --feature_sizes=1024,128 --batch_size=500 --base_learning_rate=0.0001 \
      "${repeated[@]}" "${common_tail[@]}" \
      --run_once=True --ensemble_num="$n" --float16_flag=True --create_meta_only ;;
  3)
    ckpts=()
    for i in $(seq 1 "$n"); do var="MODEL${i}_CKPT"; ckpts+=("${!var}"); done
    yt8m_submit "$job" overwrite_float16_ckpt \
      --train_dir="$train_dir" --inference_model=inference_model_10 \
      --out_name="$INFERENCE_MODEL_NAME" \
      --checkpoints="$(IFS=,; echo "${ckpts[*]}")" ;;
  4|5)
    extra=()
    [ "$step" = 4 ] || extra=(--force_output_model_name=True)
    yt8m_submit "$job" eval \
      --eval_data_pattern="$EVAL_DATA_PATTERN" --model=NetVLADModelLF \
      --train_dir="$train_dir" --frame_features --feature_names=rgb,audio \
      --feature_sizes=1024,128 --batch_size=1024 --base_learning_rate=0.0001 \
      "${repeated[@]}" "${common_tail[@]}" \
      --run_once=True --ensemble_num="$n" --float16_flag=True \
      --checkpoint_file="${INFERENCE_MODEL_NAME}-0" "${extra[@]}" ;;
esac
