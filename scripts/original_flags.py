"""The model flags of the original's commands (its README's), shared by main_job.py and the bench
scripts.

The shell scripts take theirs from common.sh (original_model_flags).
"""


def original_model_flags(cluster=None, hidden=None, iterations=300):
  """The original's flags for NetVLADModelLF; without cluster/hidden for an ensemble, whose
  repeated --netvlad_cluster_size / --netvlad_hidden_size the caller gives per model."""
  flags = ["--frame_features", "--feature_names=rgb,audio", "--feature_sizes=1024,128"]
  if cluster is not None:
    flags += ["--netvlad_cluster_size=%d" % cluster, "--netvlad_hidden_size=%d" % hidden]
  # --netvlad_relu=False is accepted without effect, as in the original (relu6 stays).
  return flags + ["--moe_l2=1e-6", "--iterations=%d" % iterations, "--netvlad_relu=False",
                  "--gating=True", "--moe_prob_gating=True"]
