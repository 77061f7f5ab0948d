#!/usr/bin/env bash
# Run this first on a GPU machine (after `pip install '.[gpu]'` in the Python you pass):
#
#   bash scripts/gpu_check.sh [--num_gpu=N] [--steps=S] [--work_dir=DIR]
#
# It shows what TensorFlow sees and whether the project's graphs run on it:
#   1. python -m youtube-8m.gpu_check: TensorFlow's CUDA/cuDNN build info, each CUDA library
#      that build needs loaded (or the one that cannot be, in one line), then the GPUs
#      TensorFlow lists (name, compute capability); on a machine with NVIDIA GPUs (device nodes
#      /dev/nvidia*, or NVIDIA_VISIBLE_DEVICES) a failure stops the script with its exit status;
#   2. trains a tiny Gated NetVLAD model on N towers (--num_gpu, default: every GPU; the batch
#      is 32 per tower) for S steps (default 60) on synthetic data and prints examples/sec;
#   3. trains a tiny 2-model float16 ensemble (the original's --ensemble_num --float16_flag=True
#      graph: float16 weights on the GPU) and prints its examples/sec;
#   4. evaluates the float16 ensemble (GAP, videos/sec), which also exercises inference.
# On a machine without NVIDIA GPUs, steps 2-4 still run, on CPU "towers" (--cpu_towers), and say
# so: a check of the script, not of a GPU. PYTHON selects the interpreter (default: python3 on
# PATH, else the repo's .venv, whose TensorFlow is the CPU build).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Whether a Python has TensorFlow is asked without importing it (seconds each): step 1 imports it
# and names what fails.
has_tensorflow() {
  "$1" -c "import importlib.util, sys; sys.exit(not importlib.util.find_spec('tensorflow'))" \
    2> /dev/null
}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  has_tensorflow "$PYTHON" || PYTHON=$REPO_ROOT/.venv/bin/python
fi
has_tensorflow "$PYTHON" || { echo "gpu_check.sh: $PYTHON has no tensorflow: pip install" \
  "'.[gpu]' first (or set PYTHON=...)" >&2; exit 2; }
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$REPO_ROOT"
exec "$PYTHON" scripts/gpu_check.py "$@"
