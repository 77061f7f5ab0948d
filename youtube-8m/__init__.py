"""YouTube-8M Gated NetVLAD ensemble (10th place, 2nd YouTube-8M challenge), tf.compat.v1 rebuild."""

from . import runtime_settings

# Before TensorFlow is imported: it reads these settings when it starts.
runtime_settings.apply()
