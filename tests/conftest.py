"""Shared fixtures: the package importer, CLI runner and tiny synthetic datasets."""

import fcntl
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)
sys.path.append(os.path.join(REPO_ROOT, "scripts"))
import cli_forkserver  # pylint: disable=g-import-not-at-top,wrong-import-position

# Tiny model settings used by CLI tests: few classes, few clusters, small hidden size.
TINY_NUM_CLASSES = 40
TINY_FLAGS = ["--frame_features", "--feature_names=rgb,audio", "--feature_sizes=1024,128",
              "--num_classes=%d" % TINY_NUM_CLASSES, "--iterations=20", "--moe_l2=1e-6",
              "--netvlad_relu=False", "--gating=True", "--moe_prob_gating=True"]


def yt8m(module):
  """Imports youtube-8m.<module> (the package name has a dash)."""
  return importlib.import_module("youtube-8m." + module)


def write_records(path, records):
  """Writes serialized records to a TFRecord file at path; returns path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (conftest stays light)
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


def cli_env(env=None):
  """os.environ with TensorFlow's C++ logs quiet, plus `env`."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  full_env.update(env or {})
  return full_env


_forkserver = None


def forkserver():
  """The session's cli_forkserver.Client (None with YT8M_TEST_FORKSERVER=0)."""
  global _forkserver
  if _forkserver is None and os.environ.get("YT8M_TEST_FORKSERVER", "1") != "0":
    _forkserver = cli_forkserver.Client(tempfile.mkdtemp(prefix="yt8m_forkserver_"), cli_env())
  return _forkserver


_shim = []


def script_python():
  """The Python for a script's PYTHON=...: one whose `-m youtube-8m.<tool>` runs are forked
  by the session's fork server (cli_forkserver.python_shim); sys.executable without it."""
  server = forkserver()
  if server is None:
    return sys.executable
  if not _shim:
    _shim.append(cli_forkserver.python_shim(
        server, os.path.join(os.path.dirname(server.socket_path), "python")))
  return _shim[0]


def run(argv, check=True, timeout=600, env=None):
  """Runs argv from the repo root (env: the whole environment, default cli_env()) and returns
  the CompletedProcess (text stdout/stderr); check: a non-zero exit fails the test.

  `python -m youtube-8m.<tool>` runs as a fork of a process that imported TensorFlow already
  (scripts/cli_forkserver.py) unless env changes what a process reads at start-up."""
  env = cli_env() if env is None else env
  server = forkserver()
  if server is not None and server.can_serve(argv, REPO_ROOT, env):
    result = server.run(argv, REPO_ROOT, env, timeout)
  else:
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout, env=env)
  if check and result.returncode != 0:
    raise AssertionError("%s failed (exit %d):\n%s" % (" ".join(argv[:4]), result.returncode,
                                                      result.stderr[-4000:]))
  return result


def corrupt(path):
  """Flips one byte in every 256 of a file (its size unchanged): every tensor's CRC fails."""
  with open(path, "rb") as handle:
    data = bytearray(handle.read())
  data[::256] = bytes(b ^ 0xFF for b in data[::256])
  with open(path, "wb") as handle:
    handle.write(data)


def run_cli(module, *args, check=True, timeout=600, env=None):
  """Runs `python -m youtube-8m.<module> args...` (env added to cli_env())."""
  return run([sys.executable, "-m", "youtube-8m." + module] + list(args), check=check,
             timeout=timeout, env=cli_env(env))


class ForkedProcess(object):
  """A tool the fork server runs in the background, with what the tests use of a Popen:
  pid, args, returncode, poll, wait, communicate, send_signal, terminate, kill.

  stdout/stderr: None (this process's), subprocess.DEVNULL, subprocess.PIPE (read by
  communicate), subprocess.STDOUT (stderr only) or a file object."""

  def __init__(self, server, argv, env, stdout=None, stderr=None, text=False):
    self.args, self.returncode, self._text = argv, None, text
    self._pipes, opened, fds = {}, [], []
    for index, target in enumerate((stdout, stderr)):
      if target is None:
        fds.append(index + 1)
      elif target == subprocess.STDOUT and index == 1:
        fds.append(fds[0])
      elif target == subprocess.DEVNULL:
        opened.append(open(os.devnull, "wb"))
        fds.append(opened[-1].fileno())
      elif target == subprocess.PIPE:
        self._pipes[index] = tempfile.TemporaryFile()
        fds.append(self._pipes[index].fileno())
      else:
        fds.append(target.fileno())
    try:
      self._child = server.spawn(argv, REPO_ROOT, env, fds[0], fds[1])
    finally:
      for handle in opened:
        handle.close()
    self.pid = self._child.pid
    self._done = threading.Event()
    threading.Thread(target=self._wait_for_exit, daemon=True).start()

  def _wait_for_exit(self):
    try:
      self.returncode = self._child.wait()[0]
    except Exception:  # pylint: disable=broad-except (the server died: reported as a failure)
      self.returncode = 255
    self._done.set()

  def poll(self):
    return self.returncode if self._done.is_set() else None

  def wait(self, timeout=None):
    if not self._done.wait(timeout):
      raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def communicate(self, timeout=None):
    self.wait(timeout)
    outputs = []
    for index in (0, 1):
      pipe = self._pipes.get(index)
      if pipe is None:
        outputs.append(None)
        continue
      pipe.seek(0)
      data = pipe.read()
      pipe.close()
      outputs.append(data.decode(errors="replace").replace("\r\n", "\n") if self._text
                     else data)
    self._pipes = {}
    return tuple(outputs)

  def send_signal(self, signum):
    if not self._done.is_set():
      try:
        os.kill(self.pid, signum)
      except ProcessLookupError:
        pass

  def terminate(self):
    self.send_signal(signal.SIGTERM)

  def kill(self):
    self.send_signal(signal.SIGKILL)


def spawn_cli(module, *args, env=None, stdout=None, stderr=None, text=False):
  """`python -m youtube-8m.<module> args...` in the background, through the fork server (a
  ForkedProcess, without a TensorFlow import of its own; a Popen where the server cannot run
  it)."""
  argv = [sys.executable, "-m", "youtube-8m." + module] + list(args)
  full_env = cli_env(env)
  server = forkserver()
  if server is not None and server.can_serve(argv, REPO_ROOT, full_env):
    return ForkedProcess(server, argv, full_env, stdout=stdout, stderr=stderr, text=text)
  return subprocess.Popen(argv, cwd=REPO_ROOT, env=full_env, stdout=stdout, stderr=stderr,
                          text=text)


def shared_dir(tmp_path_factory, name, make):
  """A directory that make(path) fills once per test run: under pytest-xdist, the first
  worker to ask makes it in the run's shared temporary directory (a file lock keeps the
  others waiting) and every worker gets the same one; without xdist, a new one. Tests only
  read it (a test that changes such files works on a copy)."""
  if "PYTEST_XDIST_WORKER" not in os.environ:
    path = str(tmp_path_factory.mktemp(name))
    make(path)
    return path
  root = tmp_path_factory.getbasetemp().parent  # shared by this run's workers
  path, done = root / name, root / (name + ".done")
  with open(str(root / (name + ".lock")), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(str(path), ignore_errors=True)  # a worker that failed making it
      path.mkdir()
      make(str(path))
      done.touch()
  return str(path)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """A small frame-level dataset: 4 train files, the 60 held-out validate files + 2 more,
  2 test files, labels among the first TINY_NUM_CLASSES classes, some videos > 300 frames.
  Made once per test run (shared_dir): tests only read it."""
  output_dir = shared_dir(tmp_path_factory, "yt8m_data", lambda path: yt8m(
      "synthetic_data").generate(
          path, num_train_files=4, num_validate_files=62, num_test_files=2,
          videos_per_file=40, validate_videos_per_file=4, test_videos_per_file=10,
          num_classes=TINY_NUM_CLASSES, seed=7, difficulty=0.2, min_frames=40, max_frames=330,
          levels="both"))
  frame = os.path.join(output_dir, "frame")
  return {"dir": output_dir,
          "train_pattern": "%s/train*.tfrecord,%s/validate*.tfrecord" % (frame, frame),
          "validate_pattern": "%s/validate*.tfrecord" % frame,
          "test_pattern": "%s/test*.tfrecord" % frame,
          "video_dir": os.path.join(output_dir, "video")}


def pytest_configure(config):
  # Tests that start processes (a tool through run/run_cli/spawn_cli, a script, a cluster,
  # the fork server), build the package in a fresh venv, or do a tool's work in-process (models
  # over the held-out files): `pytest -m "not slow"` leaves them out (fast feedback, under two
  # minutes on 2 cores); the full suite runs them all.
  config.addinivalue_line(
      "markers", "slow: starts tool or script processes, builds the package in a venv, or does "
      "a tool's work in-process")
  # In-process tests build graphs from explicit configs; flags keep their defaults and must
  # not try to parse pytest's own command line.
  from absl import flags
  for module in ("frame_level_models", "video_level_models", "model_graph"):
    yt8m(module)
  flags.FLAGS.mark_as_parsed()
  # pytest-xdist's --dist loadfile hands out modules in collection order (below: the longest
  # first), not by their number of tests: reordered that way, a module of one long test
  # (the main job) would start last and run alone at the end.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


# Seconds each slow module takes on the AVX2 host (measured one module at a time, `-n 0`, under
# nice on a shared machine, 2026-12-07 evening; see docs/measurements.md; the main job's from
# that evening's fresh-clone run, the budgeted build's the afternoon's less the 52 s that
# commit 593a83a took off its test): the modules run the longest first, so that two workers end
# at about the same time. A module not listed comes after them, in file order; a stale figure
# costs balance only.
MODULE_SECONDS = {
    "test_main_job.py": 219, "test_pipeline.py": 177, "test_cloud_scripts.py": 175,
    "test_gpu_check.py": 139, "test_faults_input.py": 121, "test_gcs_pipeline.py": 120,
    "test_ensemble.py": 117, "test_faults.py": 115, "test_budget_build.py": 80,
    "test_compute_dtype.py": 58, "test_progress.py": 55, "test_distributed.py": 49,
    "test_original_compat.py": 46, "test_avg_checkpoints.py": 15, "test_cli_forkserver.py": 15,
}


def pytest_collection_modifyitems(config, items):
  del config
  items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0))


# GCS emulator fixtures (a real gcp-storage-emulator process on 127.0.0.1).
from gcs_emulator import gcs_bucket, gcs_emulator  # noqa: E402,F401
