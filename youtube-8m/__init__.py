"""YouTube-8M Gated NetVLAD ensemble (10th place, 2nd YouTube-8M challenge), tf.compat.v1 rebuild."""

import os

# TensorFlow's default CPU allocator returns every large buffer to the OS and page-faults it
# back at the next step; its BFC pool keeps them (README, "Runtime"). TensorFlow reads this
# lazily, so setting it before the first op is enough; an explicit value in the environment wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
