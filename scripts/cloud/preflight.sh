#!/usr/bin/env bash
# Checks, before the first job, what the jobs will need (docs/cloud.md, "Before your first job"):
#
#   bash scripts/cloud/preflight.sh [--dry-run] BUCKET_NAME=gs://... [--region=R] [shards=N]
#
# 1. the APIs the jobs and the image build use are enabled (aiplatform, storage,
#    artifactregistry, cloudbuild);
# 2. every data pattern the jobs read (DATA_PATTERN's globs, EVAL_DATA_PATTERN,
#    TEST_DATA_PATTERN; default the original's, in gs://youtube8m-ml-us-east1) matches files:
#    `gcloud storage ls` on each, printing how many and the first `shards` (default 3);
# 3. BUCKET_NAME and the data buckets are in the jobs' region (--region, default us-east1):
#    reading data across regions is slower and billed, and a Vertex AI TensorBoard instance
#    needs its bucket in the job's region. A data bucket whose location cannot be read (no
#    storage.buckets.get there, as may be the case for a public bucket) is named in a note,
#    not checked.
# Each failed check is one line on stderr; the exit status is 1 if any failed, 0 if all
# passed (2 for bad options). --dry-run prints the gcloud commands and checks nothing.
# Variables (VAR=value, --VAR=value or environment): BUCKET_NAME, shards, and the common
# options below (--region, --data-pattern, --eval-data-pattern, --test-data-pattern, --project).
set -euo pipefail
YT8M_VARS="BUCKET_NAME shards"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
yt8m_defaults
yt8m_check_bucket
shards=${shards:-3}
yt8m_require_int shards
yt8m_need_gcloud
APIS="aiplatform.googleapis.com storage.googleapis.com artifactregistry.googleapis.com
  cloudbuild.googleapis.com"
failures=0

fail() { echo "$YT8M_SCRIPT: FAILED: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# check_line LINE: prints LINE (dry run) or runs it into OUTPUT; its status.
check_line() {
  if [ "$DRY_RUN" = 1 ]; then printf '%s\n' "$1"; OUTPUT=""; return 0; fi
  printf '+ %s\n' "$1" >&2
  OUTPUT=$(eval "$1" 2>&1)
}

# The globs (DATA_PATTERN is a comma list, as --train_data_pattern) and buckets, checked before
# anything runs.
patterns=() names=() buckets=("${BUCKET_NAME#gs://}")
buckets[0]=${buckets[0]%%/*}
for spec in "DATA_PATTERN:$DATA_PATTERN" "EVAL_DATA_PATTERN:$EVAL_DATA_PATTERN" \
    "TEST_DATA_PATTERN:$TEST_DATA_PATTERN"; do
  var=${spec%%:*}
  IFS=, read -r -a globs <<< "${spec#*:}"
  for glob in "${globs[@]}"; do
    [[ $glob == gs://?*/?* ]] || yt8m_die "$var: '$glob' is not a gs:// pattern (the jobs read" \
      "their data from Cloud Storage)"
    for i in "${!patterns[@]}"; do  # a glob in two variables is listed once
      [ "${patterns[$i]}" != "$glob" ] || { names[$i]+="/$var"; continue 2; }
    done
    patterns+=("$glob") names+=("$var")
    bucket=${glob#gs://}; bucket=${bucket%%/*}
    [[ " ${buckets[*]} " == *" $bucket "* ]] || buckets+=("$bucket")
  done
done

# 1. APIs
if check_line "$(yt8m_line gcloud services list --enabled ${PROJECT:+"--project=$PROJECT"} \
    "--format=value(config.name)")"; then
  if [ "$DRY_RUN" != 1 ]; then
    for api in $APIS; do
      if grep -qx "$api" <<< "$OUTPUT"; then ok "API $api is enabled"
      else fail "API $api is not enabled: gcloud services enable $api"; fi
    done
  fi
else
  fail "cannot list the enabled APIs (gcloud services list): ${OUTPUT##*$'\n'}"
fi

# 2. data
for i in "${!patterns[@]}"; do
  var=${names[$i]} glob=${patterns[$i]}
  if check_line "$(yt8m_line gcloud storage ls "$glob")"; then
    [ "$DRY_RUN" = 1 ] && continue
    files=$(grep -c '^gs://' <<< "$OUTPUT" || true)
    if [ "$files" -gt 0 ]; then
      ok "$var: $files file(s) match $glob; the first $shards:"
      grep '^gs://' <<< "$OUTPUT" | head -n "$shards" | sed 's/^/    /'
    else
      fail "$var: no file matches $glob"
    fi
  else
    fail "$var: gcloud storage ls $glob: ${OUTPUT##*$'\n'}"
  fi
done

# 3. regions
region_lower=$(tr 'A-Z' 'a-z' <<< "$REGION")
for bucket in "${buckets[@]}"; do
  if check_line "$(yt8m_line gcloud storage buckets describe "gs://$bucket" \
      "--format=value(location)")"; then
    [ "$DRY_RUN" = 1 ] && continue
    location=$(tr 'A-Z' 'a-z' <<< "${OUTPUT##*$'\n'}")
    if [ "$location" = "$region_lower" ]; then
      ok "gs://$bucket is in $location, the jobs' region"
    elif [ "$bucket" = "${buckets[0]}" ]; then
      fail "BUCKET_NAME gs://$bucket is in $location but the jobs run in $REGION: use a" \
        "bucket in $REGION (gcloud storage buckets create gs://NAME --location=$REGION)" \
        "or --region=$location"
    else
      fail "data bucket gs://$bucket is in $location but the jobs run in $REGION:" \
        "--region=$location, or a copy of the data in $REGION"
    fi
  elif [ "$bucket" = "${buckets[0]}" ]; then
    fail "BUCKET_NAME: cannot read the location of gs://$bucket (${OUTPUT##*$'\n'}); create" \
      "it with: gcloud storage buckets create gs://$bucket --location=$REGION"
  else
    yt8m_note "the location of data bucket gs://$bucket cannot be read (${OUTPUT##*$'\n'});" \
      "not checked"
  fi
done

[ "$DRY_RUN" = 1 ] && exit 0
if [ "$failures" -gt 0 ]; then
  echo "$YT8M_SCRIPT: $failures check(s) failed" >&2
  exit 1
fi
echo "preflight passed: the jobs can run in $REGION"
