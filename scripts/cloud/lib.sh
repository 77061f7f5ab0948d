# shellcheck shell=bash
# Shared by scripts/cloud/submit_*.sh: option parsing, shell quoting, the package upload and the
# command builders of the two backends. Each submit script sets YT8M_VARS (the seed variables it
# takes), sources this file, calls yt8m_parse_args "$@" and yt8m_setup, then yt8m_submit per job.
#
# Backends (--backend=..., env BACKEND; default vertex):
#   ai-platform  gcloud ai-platform jobs submit training JOB --package-path=REPO/youtube-8m
#                --module-name=youtube-8m.X --staging-bucket=$BUCKET_NAME --region=R
#                --config=CONFIG [--runtime-version=V] [--python-version=V] -- MODULE_FLAGS
#                (the successor of the seed's `gcloud ml-engine jobs submit training`; gcloud
#                builds the sdist itself with the repo root's setup.py, the parent of
#                --package-path). Legacy AI Platform Training was shut down on 2025-01-31.
#   vertex       1. builds the sdist of setup.py (python setup.py egg_info sdist, into a temp dir)
#                2. gcloud storage cp it to $BUCKET_NAME/packages/<timestamp>/ (once per run)
#                3. per job: writes a CustomJobSpec from the config template (cloud/vertex-*.yaml,
#                   with render_vertex_config.py)
#                   whose pools get packageUris, pythonModule and args - the module flags as a
#                   YAML list, one item per flag, so values with commas ('rgb,audio', the
#                   two-glob --train_data_pattern) need no escaping (gcloud's --args would split
#                   them on commas unless given with its ^DELIM^ syntax), and
#                4. gcloud ai custom-jobs create --region=R --display-name=JOB --config=FILE
#                   (--python-package-uris is not used: gcloud applies it only to pools built
#                   from --worker-pool-spec, not to pools read from --config).
#
# Options of every script (seed variables also as VAR=VALUE or --VAR=VALUE, or from the
# environment):
#   --dry-run                 print the commands, shell-quoted, one per line (the job config of a
#                             Vertex job as a `cat > FILE <<'YT8M_EOF'` here-document), and exit 0
#                             without calling gcloud or building anything
#   --backend=ai-platform|vertex   (env BACKEND; default vertex)
#   --region=R                (env REGION; default us-central1, the seed's)
#   --config=FILE             job config (default: cloudml-gpu.yaml at the repo root for
#                             ai-platform, cloud/vertex-gpu.yaml for vertex; the distributed
#                             script: cloud/cloudml-distributed.yaml / cloud/vertex-distributed.yaml)
#   --runtime-version=V --python-version=V   (ai-platform; override the config's values)
#   --executor-image-uri=URI  (vertex; overrides the config's executorImageUri)
#   --package-uri=gs://...    (vertex; use this uploaded package instead of building one)
#   --data-pattern=P          (env DATA_PATTERN) --train_data_pattern of training jobs
#   --eval-data-pattern=P     (env EVAL_DATA_PATTERN) --eval_data_pattern of evaluation jobs
#   --verbosity=LEVEL         gcloud's --verbosity (default debug, as the seed)
#   --job-name=NAME           instead of the seed's job name (single-job scripts)
#   --evaluator-count=N       (vertex, submit_distributed_train.sh) replicas of the evaluator pool

YT8M_CLOUD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
YT8M_REPO_ROOT="$(cd "$YT8M_CLOUD_DIR/../.." && pwd)"
YT8M_SCRIPT="$(basename "$0")"
YT8M_SEED_TRAIN_PATTERN='gs://youtube8m-ml-us-east1/2/frame/train/train*.tfrecord,gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord'
YT8M_SEED_EVAL_PATTERN='gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord'
# Options also read from the environment (the seed's own variables come on top, per script).
YT8M_ENV_OPTIONS="BACKEND REGION DATA_PATTERN EVAL_DATA_PATTERN RUNTIME_VERSION PYTHON_VERSION
  EXECUTOR_IMAGE_URI PACKAGE_URI"

yt8m_die() { echo "$YT8M_SCRIPT: error: $*" >&2; exit 2; }
yt8m_note() { echo "$YT8M_SCRIPT: note: $*" >&2; }

yt8m_usage() {  # the script's header comment, then the common options (from this file)
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo
  awk '/^# Options of every script/ { on = 1 } on && !/^#/ { exit }
       on { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

# yt8m_parse_args "$@": options and seed variables; positional arguments go to YT8M_POSITIONAL.
yt8m_parse_args() {
  local allowed=" ${YT8M_VARS:-} " arg name value upper
  YT8M_POSITIONAL=()
  DRY_RUN=0 CONFIG="" JOB_NAME="" VERBOSITY=debug EVALUATOR_COUNT=""
  local option
  for option in $YT8M_ENV_OPTIONS; do printf -v "$option" '%s' "${!option:-}"; done
  while [ $# -gt 0 ]; do
    arg=$1; shift
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      -h|--help) yt8m_usage; exit 0 ;;
      --*=* | [A-Za-z_]*=*)
        name=${arg#--}; name=${name%%=*}; value=${arg#*=}
        upper=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
        if [[ $allowed == *" $name "* ]]; then
          printf -v "$name" '%s' "$value"
        elif [[ " ${YT8M_ENV_OPTIONS//$'\n'/ } CONFIG JOB_NAME VERBOSITY EVALUATOR_COUNT " \
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
  if [ "$path" = youtube-8m/cloudml-gpu.yaml ] && [ ! -e "$path" ]; then
    yt8m_note "the seed's youtube-8m/cloudml-gpu.yaml is cloudml-gpu.yaml at the repo root here"
    path=$YT8M_REPO_ROOT/cloudml-gpu.yaml
  fi
  [ -f "$path" ] || yt8m_die "config file '$path' not found"
  CONFIG="$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
}

# yt8m_setup single|distributed: defaults, checks, and the tools of a real run.
yt8m_setup() {
  local kind=$1
  BACKEND=${BACKEND:-vertex}
  REGION=${REGION:-us-central1}
  DATA_PATTERN=${DATA_PATTERN:-$YT8M_SEED_TRAIN_PATTERN}
  EVAL_DATA_PATTERN=${EVAL_DATA_PATTERN:-$YT8M_SEED_EVAL_PATTERN}
  PYTHON=${PYTHON:-$YT8M_REPO_ROOT/.venv/bin/python}
  [ -x "$PYTHON" ] || PYTHON=python3
  case $BACKEND in
    ai-platform)
      if [ -z "$CONFIG" ]; then
        if [ "$kind" = distributed ]; then CONFIG=$YT8M_REPO_ROOT/cloud/cloudml-distributed.yaml
        else CONFIG=$YT8M_REPO_ROOT/cloudml-gpu.yaml; fi
      fi
      yt8m_resolve_config "$CONFIG"
      grep -q '^trainingInput:' "$CONFIG" || yt8m_die "$CONFIG has no 'trainingInput:' at column" \
        "0: not an AI Platform job config (Vertex AI configs go with --backend=vertex)"
      [ -z "$EVALUATOR_COUNT" ] || yt8m_die "--evaluator-count is for --backend=vertex (AI" \
        "Platform: evaluatorType/evaluatorCount in the config)"
      [ -z "$EXECUTOR_IMAGE_URI$PACKAGE_URI" ] || yt8m_die "--executor-image-uri and" \
        "--package-uri are for --backend=vertex"
      yt8m_note "legacy AI Platform Training was shut down on 2025-01-31; --backend=vertex" \
        "submits the same jobs to Vertex AI" ;;
    vertex)
      if [ -z "$CONFIG" ]; then
        if [ "$kind" = distributed ]; then CONFIG=$YT8M_REPO_ROOT/cloud/vertex-distributed.yaml
        else CONFIG=$YT8M_REPO_ROOT/cloud/vertex-gpu.yaml; fi
      fi
      yt8m_resolve_config "$CONFIG"
      [ -z "$RUNTIME_VERSION$PYTHON_VERSION" ] || yt8m_die "--runtime-version and" \
        "--python-version are for --backend=ai-platform (Vertex AI: the executor image)"
      if [ -n "$EVALUATOR_COUNT" ]; then
        [ "$kind" = distributed ] || yt8m_die "--evaluator-count is for the distributed config"
        yt8m_require_int EVALUATOR_COUNT
      fi
      if [ -n "$PACKAGE_URI" ] && [[ $PACKAGE_URI != gs://* ]]; then
        yt8m_die "--package-uri must be a gs:// URI, got '$PACKAGE_URI'"
      fi
      # Check the template now rather than after the package upload.
      "$PYTHON" "$YT8M_CLOUD_DIR/render_vertex_config.py" "$CONFIG" --package-uri=gs://x/y.tar.gz \
        --python-module=x ${EVALUATOR_COUNT:+"--replica-count=3:$EVALUATOR_COUNT"} > /dev/null \
        || yt8m_die "$CONFIG is not a usable Vertex AI job config template" ;;
    *) yt8m_die "--backend must be ai-platform or vertex, got '$BACKEND'" ;;
  esac
  yt8m_require BUCKET_NAME
  [[ $BUCKET_NAME == gs://?* ]] || yt8m_die "BUCKET_NAME must be a gs:// URL (the seed's" \
    "gs://\${USER}_yt8m_train_bucket), got '$BUCKET_NAME'"
  BUCKET_NAME=${BUCKET_NAME%/}
  if [ "$DRY_RUN" != 1 ]; then
    command -v gcloud > /dev/null || yt8m_die "gcloud is not on PATH (install the Google Cloud" \
      "SDK and run 'gcloud init'), or use --dry-run to print the commands"
  fi
  YT8M_JOB_CONFIG_DIR=""
  YT8M_EXTRA_POOLS=()  # vertex: "@@pool=N @@python-module=M FLAG..." for render_vertex_config.py
}

yt8m_check_job_id() {  # AI Platform job ids: a letter, then letters, digits and underscores
  [[ $1 =~ ^[A-Za-z][A-Za-z0-9_]{0,127}$ ]] || yt8m_die "job name '$1' is not a valid AI" \
    "Platform job id (a letter, then up to 127 letters, digits or underscores)"
}

# Vertex: build the sdist and upload it once per run (unless --package-uri was given).
yt8m_stage_package() {
  [ -z "$PACKAGE_URI" ] || return 0
  local fullname sdist_dir sdist built
  fullname=$(cd "$YT8M_REPO_ROOT" && "$PYTHON" setup.py --fullname 2> /dev/null | tail -n 1) \
    || yt8m_die "cannot read the package name from setup.py with $PYTHON"
  [ -n "$fullname" ] || yt8m_die "setup.py --fullname printed nothing"
  if [ "$DRY_RUN" = 1 ]; then sdist_dir=$(mktemp -d -u -t yt8m-sdist.XXXXXX)
  else sdist_dir=$(mktemp -d -t yt8m-sdist.XXXXXX); fi
  sdist="$sdist_dir/$fullname.tar.gz"
  yt8m_run_line "mkdir -p $(yt8m_q "$sdist_dir") && cd $(yt8m_q "$YT8M_REPO_ROOT") && $(yt8m_line \
    "$PYTHON" setup.py -q egg_info --egg-base "$sdist_dir" sdist --dist-dir "$sdist_dir")"
  if [ "$DRY_RUN" != 1 ] && [ ! -f "$sdist" ]; then
    built=$(find "$sdist_dir" -maxdepth 1 -name '*.tar.gz' | head -n 1)
    [ -n "$built" ] || yt8m_die "no sdist was built in $sdist_dir"
    yt8m_note "the sdist is $(basename "$built"), not $fullname.tar.gz"
    sdist=$built
  fi
  PACKAGE_URI="$BUCKET_NAME/packages/$(date +%Y%m%d_%H%M%S)/$(basename "$sdist")"
  yt8m_run_line "$(yt8m_line gcloud storage cp "$sdist" "$PACKAGE_URI")"
}

# yt8m_submit JOB_NAME MODULE FLAG...: one job running `python -m youtube-8m.MODULE FLAG...`.
yt8m_submit() {
  local job=$1 module=youtube-8m.$2; shift 2
  case $BACKEND in
    ai-platform)
      yt8m_check_job_id "$job"
      local cmd=(gcloud "--verbosity=$VERBOSITY" ai-platform jobs submit training "$job"
        "--package-path=$YT8M_REPO_ROOT/youtube-8m" "--module-name=$module"
        "--staging-bucket=$BUCKET_NAME" "--region=$REGION" "--config=$CONFIG")
      [ -z "$RUNTIME_VERSION" ] || cmd+=("--runtime-version=$RUNTIME_VERSION")
      [ -z "$PYTHON_VERSION" ] || cmd+=("--python-version=$PYTHON_VERSION")
      yt8m_run_line "$(yt8m_line "${cmd[@]}" -- "$@")" ;;
    vertex)
      [ ${#job} -le 128 ] || yt8m_die "display name '$job' is longer than 128 characters"
      yt8m_stage_package
      if [ -z "$YT8M_JOB_CONFIG_DIR" ]; then
        if [ "$DRY_RUN" = 1 ]; then YT8M_JOB_CONFIG_DIR=$(mktemp -d -u -t yt8m-vertex.XXXXXX)
        else YT8M_JOB_CONFIG_DIR=$(mktemp -d -t yt8m-vertex.XXXXXX); fi
        [ "$DRY_RUN" != 1 ] || printf 'mkdir -p %s\n' "$(yt8m_q "$YT8M_JOB_CONFIG_DIR")"
      fi
      local render=("$PYTHON" "$YT8M_CLOUD_DIR/render_vertex_config.py" "$CONFIG"
        "--package-uri=$PACKAGE_URI" "--python-module=$module")
      [ -z "$EXECUTOR_IMAGE_URI" ] || render+=("--executor-image-uri=$EXECUTOR_IMAGE_URI")
      [ -z "$EVALUATOR_COUNT" ] || render+=("--replica-count=3:$EVALUATOR_COUNT")
      local spec file="$YT8M_JOB_CONFIG_DIR/$job.yaml"
      spec=$("${render[@]}" -- "$@" ${YT8M_EXTRA_POOLS[@]+"${YT8M_EXTRA_POOLS[@]}"}) \
        || yt8m_die "cannot write the Vertex AI job config from $CONFIG"
      yt8m_write_file "$file" "$spec"$'\n'
      yt8m_run_line "$(yt8m_line gcloud "--verbosity=$VERBOSITY" ai custom-jobs create \
        "--region=$REGION" "--display-name=$job" "--config=$file")" ;;
  esac
}
