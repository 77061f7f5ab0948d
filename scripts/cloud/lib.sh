# shellcheck shell=bash
# Shared by scripts/cloud/submit_*.sh and build_image.sh: option parsing, shell quoting and the
# Vertex AI job builder. Each submit script sets YT8M_VARS (the variables of the original's
# commands that it takes), sources this file, calls yt8m_parse_args "$@" and yt8m_setup, then
# yt8m_submit per job.
#
# A job (gcloud ai custom-jobs create) runs `python3 -m youtube-8m.MODULE FLAG...` in the
# project's container image (cloud/container/Dockerfile: tensorflow[and-cuda]==2.21.0 plus
# this package and its pinned runtime dependencies; scripts/cloud/build_image.sh builds and
# pushes it). Per job, the script writes a CustomJobSpec from the config template
# (cloud/vertex-*.yaml, with render_vertex_config.py): containerSpec imageUri/command/args (the
# module flags as a YAML list, one item per flag, so values with commas such as
# --feature_names=rgb,audio stay whole), baseOutputDirectory (the job's train_dir) and
# scheduling (Spot VMs, restartJobOnWorkerRestart: a preempted worker gets SIGTERM, train.py
# exports a checkpoint, and the restarted job resumes from it).
# (The original's `gcloud ml-engine` / AI Platform Training was shut down on 2025-01-31.)
# After each job (and in a dry run, with JOB_ID as a placeholder) the script prints the gcloud
# commands that follow it: stream-logs, describe, cancel.
#
# Options of every script (the variables of the original's commands also as VAR=VALUE or
# --VAR=VALUE, or from the environment):
#   --dry-run                 print the commands, shell-quoted, one per line (the job config as
#                             a `cat > FILE <<'YT8M_EOF'` here-document), and exit 0 without
#                             calling gcloud
#   --project=P               (env PROJECT) Google Cloud project of the default image URI
#                             (default: gcloud config get-value project)
#   --image-uri=URI           (env IMAGE_URI) the container image (default
#                             REGION-docker.pkg.dev/PROJECT/yt8m/yt8m-netvlad-ensemble:VERSION,
#                             as build_image.sh pushes it; VERSION from pyproject.toml)
#   --region=R                (env REGION; default us-east1, the region of the public data
#                             bucket gs://youtube8m-ml-us-east1: no cross-region reads)
#   --config=FILE             job config template (default cloud/vertex-gpu.yaml; the
#                             distributed script: cloud/vertex-distributed.yaml)
#   --no-spot                 on-demand VMs (scheduling strategy STANDARD) instead of Spot VMs
#   --data-pattern=P          (env DATA_PATTERN) --train_data_pattern of training jobs
#   --eval-data-pattern=P     (env EVAL_DATA_PATTERN) --eval_data_pattern of evaluation jobs
#   --test-data-pattern=P     (env TEST_DATA_PATTERN) --input_data_pattern of inference jobs
#   --service-account=EMAIL   (env SERVICE_ACCOUNT) the service account the jobs run as
#                             (CustomJobSpec.serviceAccount; default: Vertex AI's custom code
#                             service agent)
#   --tensorboard=NAME        (env TENSORBOARD) a Vertex AI TensorBoard instance,
#                             projects/P/locations/REGION/tensorboards/ID, in the jobs' region,
#                             that streams the summaries train.py and eval.py write to
#                             AIP_TENSORBOARD_LOG_DIR (needs --service-account)
#   --verbosity=LEVEL         gcloud's --verbosity (default debug, as in the original's commands)
#   --job-name=NAME           instead of the original's job name (single-job scripts)
#   --evaluator-count=N       (submit_distributed_train.sh) replicas of the evaluator pool

YT8M_CLOUD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
YT8M_REPO_ROOT="$(cd "$YT8M_CLOUD_DIR/../.." && pwd)"
YT8M_SCRIPT="$(basename "$0")"
YT8M_ORIGINAL_TRAIN_PATTERN='gs://youtube8m-ml-us-east1/2/frame/train/train*.tfrecord,gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord'
YT8M_ORIGINAL_EVAL_PATTERN='gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord'
YT8M_ORIGINAL_TEST_PATTERN='gs://youtube8m-ml-us-east1/2/frame/test/test*.tfrecord'
YT8M_IMAGE_NAME=yt8m/yt8m-netvlad-ensemble  # Artifact Registry repository/image
# The jobs run where the data is: the public bucket gs://youtube8m-ml-us-east1 is in us-east1.
YT8M_DEFAULT_REGION=us-east1
# Options also read from the environment (the original's own variables come on top, per script).
YT8M_ENV_OPTIONS="REGION DATA_PATTERN EVAL_DATA_PATTERN TEST_DATA_PATTERN PROJECT IMAGE_URI"
YT8M_ENV_OPTIONS+=" SERVICE_ACCOUNT TENSORBOARD"

yt8m_die() { echo "$YT8M_SCRIPT: error: $*" >&2; exit 2; }
yt8m_note() { echo "$YT8M_SCRIPT: note: $*" >&2; }

yt8m_usage() {  # the script's header comment, then the common options (from this file)
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo
  awk '/^# Options of every script/ { on = 1 } on && !/^#/ { exit }
       on { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

# yt8m_parse_args "$@": options and the variables of the original's commands; positional
# arguments go to YT8M_POSITIONAL.
yt8m_parse_args() {
  local allowed=" ${YT8M_VARS:-} " arg name value upper
  YT8M_POSITIONAL=()
  DRY_RUN=0 SPOT=1 CONFIG="" JOB_NAME="" VERBOSITY=debug EVALUATOR_COUNT=""
  local option
  for option in $YT8M_ENV_OPTIONS; do printf -v "$option" '%s' "${!option:-}"; done
  while [ $# -gt 0 ]; do
    arg=$1; shift
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      --no-spot) SPOT=0 ;;
      -h|--help) yt8m_usage; exit 0 ;;
      --backend=*) yt8m_die "--backend is gone: AI Platform Training was shut down on" \
        "2025-01-31, and every job goes to Vertex AI in the project's container" ;;
      --*=* | [A-Za-z_]*=*)
        name=${arg#--}; name=${name%%=*}; value=${arg#*=}
        upper=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
        if [[ $allowed == *" $name "* ]]; then
          printf -v "$name" '%s' "$value"
        elif [[ " ${YT8M_ENV_OPTIONS} CONFIG JOB_NAME VERBOSITY EVALUATOR_COUNT " \
                == *" $upper "* ]]; then
          printf -v "$upper" '%s' "$value"
        else
          yt8m_die "unknown option or variable '$arg' (see --help)"
        fi ;;
      -*) yt8m_die "unknown option '$arg' (options take their value as --name=value; see --help)" ;;
      *) YT8M_POSITIONAL+=("$arg") ;;
    esac
  done
}
# yt8m_require VAR...: every VAR must be non-empty; names all the missing ones.
yt8m_require() {
  local var missing=()
  for var in "$@"; do [ -n "${!var:-}" ] || missing+=("$var"); done
  if [ ${#missing[@]} -gt 0 ]; then
    yt8m_die "required variable(s) not set: ${missing[*]} (give VAR=value or --VAR=value, or" \
      "set them in the environment; see --help)"
  fi
}

yt8m_require_int() {  # yt8m_require_int VAR...
  local var
  for var in "$@"; do
    [[ ${!var} =~ ^[0-9]+$ ]] || yt8m_die "$var must be a non-negative integer, got '${!var}'"
  done
}

# yt8m_split VAR: the words of a list variable ("24 1440", "24,1440" or "(24 1440)") into
# YT8M_LIST.
yt8m_split() {
  local text=${!1:-}
  text=${text//[,()]/ }
  read -r -a YT8M_LIST <<< "$text"
}

yt8m_q() {  # shell-quotes one word (as Python's shlex.quote)
  if [[ -n $1 && $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

yt8m_line() {  # the shell-quoted command line of its arguments
  local out="" word
  for word in "$@"; do out+="${out:+ }$(yt8m_q "$word")"; done
  printf '%s' "$out"
}

yt8m_run_line() {  # prints (dry run) or echoes to stderr and runs one shell line
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
    (eval "$1") || yt8m_die "command failed (exit $?): $1"
  fi
}

yt8m_write_file() {  # yt8m_write_file PATH CONTENT: a here-document (dry run) or the file
  if [ "$DRY_RUN" = 1 ]; then
    printf "cat > %s <<'YT8M_EOF'\n%sYT8M_EOF\n" "$(yt8m_q "$1")" "$2"
  else
    printf '%s' "$2" > "$1" || yt8m_die "cannot write $1"
    printf '+ wrote %s:\n%s' "$1" "$2" >&2
  fi
}


yt8m_resolve_config() {  # sets CONFIG to the absolute path of $1
  local path=$1
  [ -f "$path" ] || yt8m_die "config file '$path' not found"
  CONFIG="$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
}

yt8m_package_version() {  # the version in pyproject.toml (no Python needed)
  sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$YT8M_REPO_ROOT/pyproject.toml" | head -n 1
}

# yt8m_default_image: sets IMAGE_URI (if empty) to the Artifact Registry image that
# build_image.sh pushes: REGION-docker.pkg.dev/PROJECT/yt8m/yt8m-netvlad-ensemble:VERSION.
yt8m_default_image() {
  [ -z "$IMAGE_URI" ] || return 0
  if [ -z "$PROJECT" ] && command -v gcloud > /dev/null; then
    PROJECT=$(gcloud config get-value project 2> /dev/null || true)
  fi
  [ -n "$PROJECT" ] || yt8m_die "no Google Cloud project: give --project=P (or PROJECT=P, or" \
    "'gcloud config set project P'), or the image itself with --image-uri=URI"
  local version
  version=$(yt8m_package_version)
  [ -n "$version" ] || yt8m_die "no version = \"...\" line in $YT8M_REPO_ROOT/pyproject.toml"
  IMAGE_URI="$REGION-docker.pkg.dev/$PROJECT/$YT8M_IMAGE_NAME:$version"
}

yt8m_defaults() {  # the region and the data patterns, unless given
  REGION=${REGION:-$YT8M_DEFAULT_REGION}
  DATA_PATTERN=${DATA_PATTERN:-$YT8M_ORIGINAL_TRAIN_PATTERN}
  EVAL_DATA_PATTERN=${EVAL_DATA_PATTERN:-$YT8M_ORIGINAL_EVAL_PATTERN}
  TEST_DATA_PATTERN=${TEST_DATA_PATTERN:-$YT8M_ORIGINAL_TEST_PATTERN}
}

yt8m_check_bucket() {  # BUCKET_NAME: set, a gs:// URL; the trailing slash dropped
  yt8m_require BUCKET_NAME
  [[ $BUCKET_NAME == gs://?* ]] || yt8m_die "BUCKET_NAME must be a gs:// URL (the original's" \
    "gs://\${USER}_yt8m_train_bucket), got '$BUCKET_NAME'"
  BUCKET_NAME=${BUCKET_NAME%/}
}

yt8m_need_gcloud() {  # a real run needs gcloud
  [ "$DRY_RUN" = 1 ] || command -v gcloud > /dev/null || yt8m_die "gcloud is not on PATH" \
    "(install the Google Cloud SDK and run 'gcloud init'), or use --dry-run to print the" \
    "commands"
}

# yt8m_setup single|distributed: defaults, checks, and the tools of a real run.
yt8m_setup() {
  local kind=$1
  yt8m_defaults
  PYTHON=${PYTHON:-$YT8M_REPO_ROOT/.venv/bin/python}
  [ -x "$PYTHON" ] || PYTHON=python3
  if [ -z "$CONFIG" ]; then
    if [ "$kind" = distributed ]; then CONFIG=$YT8M_REPO_ROOT/cloud/vertex-distributed.yaml
    else CONFIG=$YT8M_REPO_ROOT/cloud/vertex-gpu.yaml; fi
  fi
  if [ "$CONFIG" = youtube-8m/cloudml-gpu.yaml ] || [ "$(basename "$CONFIG")" = cloudml-gpu.yaml ]
  then
    yt8m_die "$CONFIG is the original's AI Platform config (AI Platform Training was shut down on" \
      "2025-01-31); its Vertex AI equivalent is cloud/vertex-gpu.yaml, the default"
  fi
  yt8m_resolve_config "$CONFIG"
  if [ -n "$EVALUATOR_COUNT" ]; then
    [ "$kind" = distributed ] || yt8m_die "--evaluator-count is for the distributed config"
    yt8m_require_int EVALUATOR_COUNT
  fi
  yt8m_check_tensorboard
  yt8m_check_bucket
  yt8m_need_gcloud
  yt8m_default_image
  # Check the template now rather than after the first job.
  "$PYTHON" "$YT8M_CLOUD_DIR/render_vertex_config.py" "$CONFIG" --image-uri="$IMAGE_URI" \
    --python-module=x --output-dir=gs://x/y ${EVALUATOR_COUNT:+"--replica-count=3:$EVALUATOR_COUNT"} \
    ${YT8M_JOB_FIELDS[@]+"${YT8M_JOB_FIELDS[@]}"} > /dev/null \
    || yt8m_die "$CONFIG is not a usable Vertex AI job config template"
  YT8M_JOB_CONFIG_DIR=""
  YT8M_EXTRA_POOLS=()  # "@@pool=N @@python-module=M FLAG..." for render_vertex_config.py
}

# yt8m_check_tensorboard: --tensorboard/--service-account, checked before any job (Vertex AI
# would refuse the job only after the image is built).
yt8m_check_tensorboard() {
  YT8M_JOB_FIELDS=()
  if [ -n "$SERVICE_ACCOUNT" ]; then
    [[ $SERVICE_ACCOUNT =~ ^[^@[:space:]]+@[^@[:space:]]+$ ]] || yt8m_die "--service-account" \
      "must be a service account e-mail (NAME@PROJECT.iam.gserviceaccount.com), got" \
      "'$SERVICE_ACCOUNT'"
    YT8M_JOB_FIELDS+=("--service-account=$SERVICE_ACCOUNT")
  fi
  [ -n "$TENSORBOARD" ] || return 0
  [[ $TENSORBOARD =~ ^projects/[^/]+/locations/([^/]+)/tensorboards/[0-9]+$ ]] \
    || yt8m_die "--tensorboard must be a TensorBoard instance name" \
      "projects/PROJECT/locations/REGION/tensorboards/ID (gcloud ai tensorboards list" \
      "--region=$REGION), got '$TENSORBOARD'"
  [ "${BASH_REMATCH[1]}" = "$REGION" ] || yt8m_die "--tensorboard is in" \
    "${BASH_REMATCH[1]} but the jobs run in $REGION (--region): a job can only use a" \
    "TensorBoard instance of its own region"
  [ -n "$SERVICE_ACCOUNT" ] || yt8m_die "--tensorboard needs --service-account=EMAIL: Vertex" \
    "AI uploads a job's TensorBoard logs only when it runs as a user-managed service account" \
    "(see 'Vertex AI TensorBoard' in docs/cloud.md)"
  YT8M_JOB_FIELDS+=("--tensorboard=$TENSORBOARD")
}

# yt8m_output_dir FLAG...: the directory the job writes (its --train_dir, else the directory of
# --output_path or --output_file), which becomes the job's baseOutputDirectory.
yt8m_output_dir() {
  local flag
  for flag in "$@"; do
    case $flag in --train_dir=*) printf '%s' "${flag#--train_dir=}"; return ;; esac
  done
  for flag in "$@"; do
    case $flag in --output_path=*|--output_file=*) flag=${flag#--output_*=}
      printf '%s' "${flag%/*}"; return ;;
    esac
  done
  printf '%s' "$BUCKET_NAME"
}

# yt8m_submit JOB_NAME MODULE FLAG...: one job running `python3 -m youtube-8m.MODULE FLAG...`.
yt8m_submit() {
  local job=$1 module=youtube-8m.$2; shift 2
  [ ${#job} -le 128 ] || yt8m_die "display name '$job' is longer than 128 characters"
  if [ -z "$YT8M_JOB_CONFIG_DIR" ]; then
    if [ "$DRY_RUN" = 1 ]; then YT8M_JOB_CONFIG_DIR=$(mktemp -d -u -t yt8m-vertex.XXXXXX)
    else YT8M_JOB_CONFIG_DIR=$(mktemp -d -t yt8m-vertex.XXXXXX); fi
    [ "$DRY_RUN" != 1 ] || printf 'mkdir -p %s\n' "$(yt8m_q "$YT8M_JOB_CONFIG_DIR")"
  fi
  local render=("$PYTHON" "$YT8M_CLOUD_DIR/render_vertex_config.py" "$CONFIG"
    "--image-uri=$IMAGE_URI" "--python-module=$module" "--output-dir=$(yt8m_output_dir "$@")")
  [ "$SPOT" = 1 ] || render+=(--no-spot)
  [ -z "$EVALUATOR_COUNT" ] || render+=("--replica-count=3:$EVALUATOR_COUNT")
  render+=(${YT8M_JOB_FIELDS[@]+"${YT8M_JOB_FIELDS[@]}"})
  local spec file="$YT8M_JOB_CONFIG_DIR/$job.yaml"
  spec=$("${render[@]}" -- "$@" ${YT8M_EXTRA_POOLS[@]+"${YT8M_EXTRA_POOLS[@]}"}) \
    || yt8m_die "cannot write the Vertex AI job config from $CONFIG"
  yt8m_write_file "$file" "$spec"$'\n'
  yt8m_create_job "$job" "$(yt8m_line gcloud "--verbosity=$VERBOSITY" ai custom-jobs create \
    "--region=$REGION" "--display-name=$job" "--config=$file")"
}

# yt8m_create_job NAME LINE: runs (or, in a dry run, prints) the create command, then prints
# the commands that follow the job, with the job's resource name from gcloud's output
# ("CustomJob [projects/N/locations/R/customJobs/ID] is submitted successfully.").
yt8m_create_job() {
  local job=$1 line=$2 id=JOB_ID output
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$line"
  else
    printf '+ %s\n' "$line" >&2
    output=$(eval "$line" 2>&1) || { printf '%s\n' "$output" >&2
      yt8m_die "command failed: $line"; }
    printf '%s\n' "$output" >&2
    id=$(printf '%s\n' "$output" | grep -o 'projects/[^/[:space:]]*/locations/[^/[:space:]]*/customJobs/[0-9][0-9]*' \
      | head -n 1 || true)
    if [ -z "$id" ]; then
      yt8m_note "no customJobs/ID in gcloud's output: find the job with 'gcloud ai" \
        "custom-jobs list --region=$REGION --filter=displayName=$job'"
      id=JOB_ID
    fi
  fi
  yt8m_follow "$job" "$id"
}

yt8m_follow() {  # yt8m_follow NAME ID: the commands that follow one job (stdout)
  local job=$1 id=$2 verb
  if [ "$id" = JOB_ID ]; then
    printf '# follow %s (JOB_ID: the customJobs/... name that the create command prints):\n' "$job"
  else
    printf '# follow %s:\n' "$job"
  fi
  for verb in stream-logs describe cancel; do
    printf '#   %s\n' "$(yt8m_line gcloud ai custom-jobs "$verb" "$id" "--region=$REGION")"
  done
}
