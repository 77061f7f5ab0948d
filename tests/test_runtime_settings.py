"""The process settings importing the package makes (youtube-8m/__init__.py)."""

import json
import sys

from conftest import run

# Allocates and frees a 64 MiB buffer (above glibc's largest dynamic mmap threshold, so
# plain glibc maps and unmaps it every time) ten times, after importing the package;
# prints the page faults of the last nine rounds and the BFC setting.
PROBE = """
import importlib, json, os, resource
importlib.import_module("youtube-8m")
def faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for round in range(10):
  if round == 1:
    start = faults()
  buffer = bytearray(64 << 20)  # calloc-like: zero pages touched
  buffer[::4096] = b"x" * len(buffer[::4096])
  del buffer
print(json.dumps({"faults": faults() - start,
                  "bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")}))
"""


def probe(env):
  result = run([sys.executable, "-c", PROBE], env=env)
  return json.loads(result.stdout)


def test_freed_buffers_are_reused_not_faulted_in_again():
  pages = (64 << 20) // 4096
  tuned = probe({"PATH": "/usr/bin:/bin"})
  assert tuned["faults"] < pages, tuned  # nine rounds would be ~9 x 16384 faults
  assert tuned["bfc"] == "true"
  # An explicit MALLOC_* or TF_CPU_ALLOCATOR_USE_BFC setting in the environment wins.
  plain = probe({"PATH": "/usr/bin:/bin", "MALLOC_TRIM_THRESHOLD_": "131072",
                 "TF_CPU_ALLOCATOR_USE_BFC": "false"})
  assert plain["faults"] > 8 * pages, plain
  assert plain["bfc"] == "false"
