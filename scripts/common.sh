# Shared by the scripts of the original's workflow: the original's model flags for one (cluster,
# hidden) model.
# Source it after setting cs and hs (cluster size, hidden size).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Extra flags for every eval/train call, e.g. EXTRA_FLAGS="--num_classes=40 --iterations=20".
read -r -a EXTRA <<< "${EXTRA_FLAGS:-}"
original_model_flags() {
  echo --frame_features --feature_names=rgb,audio --feature_sizes=1024,128 \
    --netvlad_cluster_size="$cs" --netvlad_hidden_size="$hs" --moe_l2=1e-6 \
    --iterations="${iterations:-300}" --netvlad_relu=False --gating=True --moe_prob_gating=True
}
run() {  # prints the command (as a user would type it), then runs it from the repo root
  echo "+ $*" >&2
  (cd "$REPO_ROOT" && "$@")
}
