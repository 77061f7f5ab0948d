#!/usr/bin/env bash
# The install step of the container image (cloud/container/Dockerfile), also run by
# tests/test_cloud_scripts.py in a fresh venv:
#
#   bash install.sh [--tensorflow=REQUIREMENT] [--cuda] PYTHON DIR
#
# installs DIR/dist/yt8m_netvlad_ensemble-*.whl with the exact versions of
# DIR/requirements-runtime.txt into PYTHON's environment, together with --tensorflow's
# TensorFlow 2.21 (the image: 'tensorflow[and-cuda]==2.21.0'; the test: its CPU build) or, without
# it, on top of the TensorFlow 2.21 already there, and checks that the result imports.
# --cuda (the image; needs root) then gives the dynamic loader the lib/ directories of the
# installed NVIDIA wheels (pip puts them on no loader path; TensorFlow dlopens e.g.
# libcudnn.so.9 by name) in /etc/ld.so.conf.d/yt8m-nvidia.conf + ldconfig, and fails unless
# `python -m youtube-8m.gpu_check --libraries_only` loads every CUDA library TensorFlow's build
# needs. A CPU-only TensorFlow fails it (exit 2) before anything is written to /etc.
set -euo pipefail
usage="usage: install.sh [--tensorflow=REQUIREMENT] [--cuda] PYTHON DIR"
TENSORFLOW=() CUDA=0
while [ $# -gt 0 ]; do
  case $1 in
    --tensorflow=?*) TENSORFLOW=("${1#--tensorflow=}") ;;
    --cuda) CUDA=1 ;;
    -*) echo "install.sh: unknown option '$1' ($usage)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
[ $# -eq 2 ] || { echo "install.sh: expected PYTHON and DIR ($usage)" >&2; exit 2; }
PYTHON=$1 DIR=$2
# A relative path to PYTHON stays valid after the cd below (not resolved: a venv's python is a
# symlink whose target is another environment).
case $PYTHON in */*) PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON") ;; esac
shopt -s nullglob
wheels=("$DIR"/dist/yt8m_netvlad_ensemble-*.whl)
[ ${#wheels[@]} -eq 1 ] || { echo "install.sh: expected one package wheel in $DIR/dist," \
  "found ${#wheels[@]}" >&2; exit 2; }
# One pip run: the resolver sees TensorFlow's requirements and the exact runtime pins together.
"$PYTHON" -m pip install "${TENSORFLOW[@]}" -r "$DIR/requirements-runtime.txt" "${wheels[0]}"
# From an empty directory: `python -m youtube-8m...` below must find the installed package, not
# a checkout in the current directory.
checks=$(mktemp -d)
trap 'rm -rf "$checks"' EXIT
cd "$checks"
# TensorFlow is the one asked for or the one that was there: the package must not have
# replaced or broken it.
"$PYTHON" - <<'PY'
import importlib
import tensorflow as tf
assert tf.__version__.startswith("2.21."), "TensorFlow %s, expected 2.21" % tf.__version__
importlib.import_module("youtube-8m.train")
print("yt8m install check: TensorFlow %s, GPUs: %d" % (
    tf.__version__, len(tf.config.list_physical_devices("GPU"))))
PY
[ "$CUDA" = 1 ] || exit 0
library_dirs=$("$PYTHON" -m youtube-8m.gpu_check --print_library_dirs)
if [ -n "$library_dirs" ]; then
  printf '%s\n' "$library_dirs" > /etc/ld.so.conf.d/yt8m-nvidia.conf
  ldconfig
fi
"$PYTHON" -m youtube-8m.gpu_check --libraries_only
