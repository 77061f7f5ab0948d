#!/usr/bin/env bash
# The original's steps 6-7 on Vertex AI: inference.py predicts the test set into a gs:// CSV (the
# Kaggle submission), either from an ensemble train_dir, also writing the submission tgz
# (step 6), or from the submission tgz (step 7):
#
#   bash scripts/cloud/submit_inference.sh [--dry-run] BUCKET_NAME=gs://... \
#       ENSEMBLE_DIR=ensemble_YHLS [--output_model_tgz=gs://.../ensemble_YHLS.tgz]
#   bash scripts/cloud/submit_inference.sh [--dry-run] BUCKET_NAME=gs://... \
#       --input_model_tgz=gs://.../ensemble_YHLS.tgz
#
# From ENSEMBLE_DIR the model is $BUCKET_NAME/$ENSEMBLE_DIR/inference_model.* (written by
# submit_ensemble.sh step 5, or build_ensemble) with its model_flags.json. The CSV is
# --output_file (default: $BUCKET_NAME/$ENSEMBLE_DIR/submission.csv from a train_dir, the tgz's
# path with .csv for .tgz from a tgz); the tgz is written after the CSV, from a model that
# predicted. Every path is a gs:// URL (the job's disk is gone when it ends).
# Job name yt8m_inference_<ENSEMBLE_DIR or the tgz's name>_<YYYYmmdd_HHMMSS>.
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME, ENSEMBLE_DIR or
# input_model_tgz, output_model_tgz, output_file, batch_size (default 512, the original's),
# TEST_DATA_PATTERN (default: the original's test glob).
set -euo pipefail
YT8M_VARS="BUCKET_NAME ENSEMBLE_DIR input_model_tgz output_model_tgz output_file batch_size"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_setup single
ENSEMBLE_DIR=${ENSEMBLE_DIR:-} input_model_tgz=${input_model_tgz:-}
output_model_tgz=${output_model_tgz:-} output_file=${output_file:-}
batch_size=${batch_size:-512}
yt8m_require_int batch_size
[ "$batch_size" -ge 1 ] || yt8m_die "batch_size must be >= 1, got '$batch_size'"

for var in input_model_tgz output_model_tgz output_file; do
  [ -z "${!var}" ] || [[ ${!var} == gs://?*/?* ]] || yt8m_die "--$var must be a gs:// URL" \
    "(gs://BUCKET/NAME: the job's local disk is gone when it ends), got '${!var}'"
done
if [ -n "$input_model_tgz" ]; then
  [ -z "$ENSEMBLE_DIR" ] || yt8m_die "give ENSEMBLE_DIR (a train_dir) or --input_model_tgz" \
    "(a submission tgz), not both"
  [ -z "$output_model_tgz" ] || yt8m_die "--output_model_tgz packs the model of a train_dir:" \
    "give it with ENSEMBLE_DIR, not with --input_model_tgz"
  [[ $input_model_tgz == *.tgz || $input_model_tgz == *.tar.gz ]] || yt8m_die \
    "--input_model_tgz must name a .tgz (or .tar.gz) file, got '$input_model_tgz'"
  name=$(basename "$input_model_tgz"); name=${name%.tgz}; name=${name%.tar.gz}
  output_file=${output_file:-${input_model_tgz%/*}/$name.csv}
  model_flags=(--input_model_tgz="$input_model_tgz")
else
  [ -n "$ENSEMBLE_DIR" ] || yt8m_die "give ENSEMBLE_DIR (the train_dir under BUCKET_NAME with" \
    "inference_model.*) or --input_model_tgz=gs://... (the submission tgz)"
  [[ $ENSEMBLE_DIR != */* && $ENSEMBLE_DIR != gs:* ]] || yt8m_die "ENSEMBLE_DIR is a" \
    "directory name under BUCKET_NAME (as in submit_ensemble.sh), got '$ENSEMBLE_DIR'"
  name=$ENSEMBLE_DIR
  output_file=${output_file:-$BUCKET_NAME/$ENSEMBLE_DIR/submission.csv}
  model_flags=(--train_dir="$BUCKET_NAME/$ENSEMBLE_DIR")
  [ -z "$output_model_tgz" ] || model_flags+=(--output_model_tgz="$output_model_tgz")
fi
[[ $output_file == *.csv ]] || yt8m_die "--output_file must name a .csv file, got '$output_file'"

yt8m_submit "${JOB_NAME:-yt8m_inference_${name//[^A-Za-z0-9_]/_}_$(date +%Y%m%d_%H%M%S)}" \
  inference "${model_flags[@]}" --input_data_pattern="$TEST_DATA_PATTERN" \
  --output_file="$output_file" --batch_size="$batch_size"
