#!/usr/bin/env bash
# The install step of the container image (cloud/container/Dockerfile), also run by
# tests/test_cloud_scripts.py in a fresh venv:
#
#   bash install.sh PYTHON DIR
#
# installs DIR/dist/yt8m_netvlad_ensemble-*.whl with the exact versions of
# DIR/requirements-runtime.txt into PYTHON's environment, on top of the TensorFlow 2.21 that
# is already there (the base image's GPU build), and checks that the result imports.
set -euo pipefail
PYTHON=${1:?usage: install.sh PYTHON DIR}
DIR=${2:?usage: install.sh PYTHON DIR}
shopt -s nullglob
wheels=("$DIR"/dist/yt8m_netvlad_ensemble-*.whl)
[ ${#wheels[@]} -eq 1 ] || { echo "install.sh: expected one package wheel in $DIR/dist," \
  "found ${#wheels[@]}" >&2; exit 2; }
"$PYTHON" -m pip install -r "$DIR/requirements-runtime.txt" "${wheels[0]}"
# TensorFlow comes from the base image: the package must not have replaced or broken it.
"$PYTHON" - <<'PY'
import importlib
import tensorflow as tf
assert tf.__version__.startswith("2.21."), "TensorFlow %s, expected 2.21" % tf.__version__
importlib.import_module("youtube-8m.train")
print("yt8m install check: TensorFlow %s, GPUs: %d" % (
    tf.__version__, len(tf.config.list_physical_devices("GPU"))))
PY
