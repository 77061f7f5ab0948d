"""What the scripts share: running a tool (or any command) as a child process.

Peak memory is the child's own peak RSS (os.wait4's ru_maxrss), so a benchmark that never
imports TensorFlow itself reports only what the tool used. After use_forkserver() (the main
job), tools are forked from a process that imported TensorFlow once (cli_forkserver.py);
benchmarks start every tool anew.
"""

import collections
import os
import subprocess
import sys
import tempfile
import time

import cli_forkserver

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FORKSERVER = []
Usage = collections.namedtuple("Usage", "ru_maxrss ru_utime ru_stime")


def use_forkserver(server_log=None):
  """Forks the tools run_child runs from now on (those a fork can run as they are started
  anew: cli_forkserver.Client.can_serve) from one process that imported TensorFlow; its own
  output goes to server_log."""
  if not _FORKSERVER:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    _FORKSERVER.append(cli_forkserver.Client(tempfile.mkdtemp(prefix="yt8m_forkserver_"), env,
                                             server_log))


def yt8m(module, *flags):
  """The command line of `python -m youtube-8m.<module> flags...`."""
  return [sys.executable, "-m", "youtube-8m." + module] + list(flags)


def run_child(command, log_path=None, env=None, echo=None, cpus=None, tag=""):
  """Runs command from the repo root, its output (stdout and stderr) to log_path; exits
  naming the command and the log if it fails.

  env: variables added to this process's environment (TF_CPP_MIN_LOG_LEVEL=2 by default).
  echo: a compiled regex; output lines it matches are also printed, as "    | line" (with
  tag: "    | tag line"). cpus: run the child on these CPUs only (sched_setaffinity).
  Returns (wall seconds, the child's peak RSS in MiB, the output's text).
  """
  seconds, usage, text = run_child_usage(command, log_path, env, echo, cpus, tag)
  return seconds, usage.ru_maxrss / 1024.0, text


def run_child_usage(command, log_path=None, env=None, echo=None, cpus=None, tag=""):
  """run_child, returning (wall seconds, the child's os.wait4 rusage, the output's text)."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  full_env.update(env or {})
  start = time.time()
  lines = []
  server = _FORKSERVER[0] if _FORKSERVER else None
  with open(log_path or os.devnull, "w") as log:
    if server is not None and server.can_serve(command, REPO_ROOT, full_env):
      read_end, write_end = os.pipe()
      try:
        child = server.spawn(command, REPO_ROOT, full_env, write_end, write_end, cpus)
      finally:
        os.close(write_end)
      output = os.fdopen(read_end, "r")
    else:
      child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=full_env, text=True, bufsize=1,
                               preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus
                               else None)
      output = child.stdout
    with output:
      for line in output:
        log.write(line)
        lines.append(line)
        if echo is not None and echo.search(line):
          # one write per line: tools running side by side (main_job.py) do not mix lines
          sys.stdout.write("    | %s%s\n" % (tag + " " if tag else "",
                                              line.split("] ", 1)[-1].rstrip()))
          sys.stdout.flush()
    if isinstance(child, subprocess.Popen):
      _, status, usage = os.wait4(child.pid, 0)
      code = os.waitstatus_to_exitcode(status)
    else:
      code, usage = child.wait()
      usage = Usage(*usage)
  seconds = time.time() - start
  text = "".join(lines)
  if code != 0:
    sys.exit("FAILED (exit %d): %s (log: %s)\n%s" % (code, " ".join(command[:4]),
                                                     log_path or "-", text[-3000:]))
  return seconds, usage, text


def allocator_setting():
  """The CPU allocator the tools run with (youtube-8m/__init__.py defaults to BFC)."""
  return "TF_CPU_ALLOCATOR_USE_BFC=%s" % os.environ.get("TF_CPU_ALLOCATOR_USE_BFC",
                                                        "true (package default)")


# The CPU and oneDNN as the tools see them (a child: this process does not import TensorFlow).
_HOST_PROBE = """
import importlib
settings = importlib.import_module("youtube-8m.runtime_settings")
print(settings.HostCpu().describe())
print(settings.onednn_state())
"""


def host_setting(env=None):
  """'CPU: <model (flags)>; oneDNN on|off (why)' for the tools run with env added."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  full_env.update(env or {})
  lines = subprocess.run([sys.executable, "-c", _HOST_PROBE], cwd=REPO_ROOT, env=full_env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  return "CPU: %s; %s" % (lines[-2], lines[-1])
