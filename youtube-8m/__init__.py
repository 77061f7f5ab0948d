"""YouTube-8M Gated NetVLAD ensemble (10th place, 2nd YouTube-8M challenge), tf.compat.v1 rebuild."""

import os

# TensorFlow's default CPU allocator returns every large buffer (a 160-video frame batch is
# 221 MB, a 3862x3862 gradient 60 MB) to the OS and page-faults it back in at the next step;
# its BFC pool keeps them. Measured on the main job's model: 96 -> 160 training examples/s,
# kernel time 73 s -> 14 s per 40 steps. Read lazily by TensorFlow, so setting it before any
# tool of the package runs its first op is enough; an explicit value in the environment wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
