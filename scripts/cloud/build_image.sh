#!/usr/bin/env bash
# Builds the container image of the Vertex AI jobs (cloud/container/Dockerfile: Python 3.11 +
# tensorflow[and-cuda]==2.21.0 + this package's wheel and requirements-runtime.txt; the build
# fails unless TensorFlow's CUDA libraries load) and pushes it to Artifact Registry, where
# scripts/cloud/submit_*.sh find it by default:
#
#   bash scripts/cloud/build_image.sh [--dry-run] [--builder=cloud-build|docker] PROJECT=my-project
#
# 1. builds the wheel (python -m build, or pip wheel where `build` is not installed) from a copy
#    of pyproject.toml, setup.py, README.md and youtube-8m/ (nothing is written into the repo) into a
#    temporary build context with the Dockerfile, install.sh and requirements-runtime.txt;
# 2. creates the Docker repository REGION-docker.pkg.dev/PROJECT/yt8m if it does not exist;
# 3. --builder=cloud-build (default): gcloud builds submit (no local Docker needed);
#    --builder=docker: docker build + docker push (after `gcloud auth configure-docker
#    REGION-docker.pkg.dev`).
# The image is REGION-docker.pkg.dev/PROJECT/yt8m/yt8m-netvlad-ensemble:VERSION (VERSION from
# pyproject.toml) unless --image-uri=... names another. Rebuild it after changing the code: the
# jobs run the package inside the image.
set -euo pipefail
YT8M_VARS="builder"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
yt8m_parse_args "$@"
[ ${#YT8M_POSITIONAL[@]} -eq 0 ] || yt8m_die "unexpected argument '${YT8M_POSITIONAL[0]}'"
builder=${builder:-cloud-build}
case $builder in cloud-build|docker) ;; *) yt8m_die "--builder must be cloud-build or docker," \
  "got '$builder'" ;; esac
REGION=${REGION:-$YT8M_DEFAULT_REGION}
PYTHON=${PYTHON:-$YT8M_REPO_ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if [ "$DRY_RUN" != 1 ]; then
  command -v gcloud > /dev/null || yt8m_die "gcloud is not on PATH (install the Google Cloud" \
    "SDK and run 'gcloud init'), or use --dry-run to print the commands"
  [ "$builder" != docker ] || command -v docker > /dev/null || yt8m_die "docker is not on PATH"
fi
yt8m_default_image
[[ $IMAGE_URI == *-docker.pkg.dev/* ]] || yt8m_note "$IMAGE_URI is not an Artifact Registry" \
  "image: no repository is created for it"

if [ "$DRY_RUN" = 1 ]; then context=$(mktemp -d -u -t yt8m-image.XXXXXX)
else context=$(mktemp -d -t yt8m-image.XXXXXX); fi
if "$PYTHON" -c "import build" 2> /dev/null; then
  wheel_cmd=$(yt8m_line "$PYTHON" -m build --wheel --outdir "$context/dist" "$context/src")
else
  wheel_cmd=$(yt8m_line "$PYTHON" -m pip wheel --no-deps --wheel-dir "$context/dist" \
    "$context/src")
fi
container=$YT8M_REPO_ROOT/cloud/container
yt8m_run_line "$(yt8m_line mkdir -p "$context/src") && $(yt8m_line cp -r \
  "$YT8M_REPO_ROOT/pyproject.toml" "$YT8M_REPO_ROOT/setup.py" "$YT8M_REPO_ROOT/README.md" \
  "$YT8M_REPO_ROOT/youtube-8m" \
  "$context/src/") && $(yt8m_line cp "$container/Dockerfile" "$container/install.sh" \
  "$YT8M_REPO_ROOT/requirements-runtime.txt" "$context/")"
yt8m_run_line "$wheel_cmd && $(yt8m_line rm -rf "$context/src")"
if [[ $IMAGE_URI =~ ^([a-z0-9-]+)-docker\.pkg\.dev/([^/]+)/([^/]+)/ ]]; then
  location=${BASH_REMATCH[1]} project=${BASH_REMATCH[2]} repository=${BASH_REMATCH[3]}
  yt8m_run_line "$(yt8m_line gcloud artifacts repositories describe "$repository" \
    "--project=$project" "--location=$location") > /dev/null 2>&1 || $(yt8m_line gcloud \
    artifacts repositories create "$repository" "--project=$project" "--location=$location" \
    --repository-format=docker)"
fi
if [ "$builder" = cloud-build ]; then
  yt8m_run_line "$(yt8m_line gcloud "--verbosity=$VERBOSITY" builds submit \
    ${PROJECT:+"--project=$PROJECT"} "--tag=$IMAGE_URI" "$context")"
else
  yt8m_run_line "$(yt8m_line docker build -t "$IMAGE_URI" "$context") && $(yt8m_line docker \
    push "$IMAGE_URI")"
fi
[ "$DRY_RUN" = 1 ] || yt8m_note "pushed $IMAGE_URI"
