"""What the benchmarks share: running a tool as a child process and measuring it.

Peak memory is the child's own peak RSS (os.wait4's ru_maxrss), so a benchmark that never
imports TensorFlow itself reports only what the tool used.
"""

import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(command, log_path, env=None):
  """Runs command from the repo root, output to log_path; exits naming the log if it fails.

  env: variables added to this process's environment (TF_CPP_MIN_LOG_LEVEL=2 by default).
  Returns (wall seconds, the child's peak RSS in MiB, the log's text).
  """
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  full_env.update(env or {})
  start = time.time()
  with open(log_path, "w") as log:
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=full_env)
    _, status, usage = os.wait4(process.pid, 0)
  seconds = time.time() - start
  with open(log_path) as handle:
    text = handle.read()
  code = os.waitstatus_to_exitcode(status)
  if code != 0:
    sys.exit("%s failed (exit %d), see %s:\n%s" % (" ".join(command[:4]), code, log_path,
                                                   text[-3000:]))
  return seconds, usage.ru_maxrss / 1024.0, text


def allocator_setting():
  """The CPU allocator the tools run with (youtube-8m/__init__.py defaults to BFC)."""
  return "TF_CPU_ALLOCATOR_USE_BFC=%s" % os.environ.get("TF_CPU_ALLOCATOR_USE_BFC",
                                                        "true (package default)")
