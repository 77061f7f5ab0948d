"""YouTube-8M Gated NetVLAD ensemble (10th place, 2nd YouTube-8M challenge), tf.compat.v1 rebuild."""

import ctypes
import os
import sys

# TensorFlow's default CPU allocator returns every large buffer to the OS and page-faults it
# back at the next step; its BFC pool keeps them (README, "Runtime"). TensorFlow reads this
# lazily, so setting it before the first op is enough; an explicit value in the environment wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

# Serialized videos (~350 KB strings) are allocated with malloc, outside the BFC pool: glibc
# maps each one and unmaps it when freed, so every record's pages are faulted in anew (half
# the input pipeline's CPU time). Keep freed memory in the heap instead, as the PyTorch peer
# does (README, "Runtime"). glibc reads its MALLOC_* variables only at start-up; mallopt
# applies the same settings now. Any MALLOC_* setting in the environment wins.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def _keep_freed_memory():
  if not sys.platform.startswith("linux") or any(
      name in os.environ for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")):
    return
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # not glibc
    return
  mallopt(_M_MMAP_MAX, 0)
  mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)  # the largest int mallopt takes


_keep_freed_memory()
