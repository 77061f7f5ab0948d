"""Shared fixtures: the package importer, CLI runner and tiny synthetic datasets."""

import importlib
import os
import subprocess
import sys
import tempfile

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


def start_cli(module, *args, env=None, **popen_kwargs):
  """Starts `python -m youtube-8m.<module> args...` in the background; returns the Popen."""
  return subprocess.Popen([sys.executable, "-m", "youtube-8m." + module] + list(args),
                          cwd=REPO_ROOT, env=cli_env(env), **popen_kwargs)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """A small frame-level dataset: 4 train files, the 60 held-out validate files + 2 more,
  2 test files, labels among the first TINY_NUM_CLASSES classes, some videos > 300 frames."""
  output_dir = str(tmp_path_factory.mktemp("yt8m_data"))
  yt8m("synthetic_data").generate(
      output_dir, num_train_files=4, num_validate_files=62, num_test_files=2,
      videos_per_file=40, validate_videos_per_file=4, test_videos_per_file=10,
      num_classes=TINY_NUM_CLASSES, seed=7, difficulty=0.2, min_frames=40, max_frames=330,
      levels="both")
  frame = os.path.join(output_dir, "frame")
  return {"dir": output_dir,
          "train_pattern": "%s/train*.tfrecord,%s/validate*.tfrecord" % (frame, frame),
          "validate_pattern": "%s/validate*.tfrecord" % frame,
          "test_pattern": "%s/test*.tfrecord" % frame,
          "video_dir": os.path.join(output_dir, "video")}


def pytest_configure(config):
  # Tests that start processes (a tool through run/run_cli/start_cli, a script, a cluster,
  # the fork server) or build the package in a fresh venv: `pytest -m "not slow"` leaves them
  # out (fast feedback, under two minutes on 2 cores); the full suite runs them all.
  config.addinivalue_line(
      "markers", "slow: starts tool or script processes (or builds the package in a venv)")
  # In-process tests build graphs from explicit configs; flags keep their defaults and must
  # not try to parse pytest's own command line.
  from absl import flags
  for module in ("frame_level_models", "video_level_models", "model_graph"):
    yt8m(module)
  flags.FLAGS.mark_as_parsed()


# GCS emulator fixtures (a real gcp-storage-emulator process on 127.0.0.1).
from gcs_emulator import gcs_bucket, gcs_emulator  # noqa: E402,F401
