"""Small helpers shared by the command-line tools: flags, atomic writes, error lines."""

import contextlib
import gzip
import json
import os
import re
import sys
import tarfile
import zlib

import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from . import interrupts
from . import storage

MODEL_FLAGS_FILE = "model_flags.json"
EVAL_STATE_FILE = "eval_state.json"  # eval.py's polling: the checkpoints it evaluated


def parse_feature_flags(feature_names, feature_sizes):
  """'rgb,audio', '1024,128' -> (['rgb', 'audio'], [1024, 128]) with checks naming the flags."""
  names = [name.strip() for name in feature_names.split(",") if name.strip()]
  try:
    sizes = [int(size) for size in feature_sizes.split(",") if size.strip()]
  except ValueError:
    raise ValueError("--feature_sizes must be a comma list of integers, got %r"
                     % feature_sizes)
  if not names:
    raise ValueError("--feature_names is empty")
  if len(names) != len(sizes):
    raise ValueError("--feature_names (%d names: %s) and --feature_sizes (%d sizes: %s) "
                     "must have the same length" % (len(names), feature_names, len(sizes),
                                                    feature_sizes))
  if any(size <= 0 for size in sizes):
    raise ValueError("--feature_sizes must be positive, got %r" % feature_sizes)
  return names, sizes


def write_atomically(path, data):
  """Writes bytes or str to path via a temporary file + rename: never a half-written file."""
  # temp + rename locally, one upload on gs://
  storage.write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)


def model_flags_path(train_dir):
  return os.path.join(train_dir, MODEL_FLAGS_FILE)


def write_model_flags(train_dir, model_flags):
  storage.makedirs(train_dir)
  write_atomically(model_flags_path(train_dir), json.dumps(model_flags, indent=1,
                                                           sort_keys=True) + "\n")


@contextlib.contextmanager
def reading_tgz(tgz_path, fileobj):
  """The tarfile of the gzip tar fileobj (the contents of tgz_path) for the block, then read to
  its end: gzip's length and CRC check also catch a tgz cut after its last member. Truncated
  or corrupt: ValueError naming tgz_path."""
  try:
    with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
      yield archive
      while archive.fileobj.read(1 << 20):
        interrupts.check("reading %s" % tgz_path)
  except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
    raise ValueError("%s is truncated or not a tgz: %s" % (tgz_path, one_line(str(error))))


def message_lines(message):
  """The lines of a TensorFlow or Python error message that say what went wrong: without
  TensorFlow's "Graph execution error:" header, its "Detected at node ... Node: '...'" stack
  and [[node]] trailers, and without the traceback of an error raised in a py_func."""
  lines, in_stack = [], False
  for line in message.splitlines():
    line = line.strip()
    if line.startswith("Traceback (most recent call last)"):
      break
    if line.startswith("Detected at node"):
      in_stack = True
    elif in_stack and line.startswith("Node: '"):
      in_stack = False
    elif line and not in_stack and line != "Graph execution error:" and not line.startswith(
        "[["):
      lines.append(line)
  return lines


def one_line(message):
  """message_lines(message) as one line."""
  # An exception raised in a py_func (e.g. by the readers' file generator) comes as
  # "<ExceptionClass>: <message>".
  return re.sub(r"^\w*Error: ", "", " ".join(message_lines(message)))


def define_shared_flags(tool, *definers):
  """Runs each definer (e.g. model_graph.define_flags) and lists the flags it defines in the
  --help of tool (the calling tool's __name__): absl lists only the main module's own flags."""
  before = set(flags.FLAGS)
  for define in definers:
    define()
  module = sys.argv[0] if tool == "__main__" else tool  # absl's name of the main module
  for name in sorted(set(flags.FLAGS) - before):
    flags.FLAGS.register_key_flag_for_module(module, flags.FLAGS[name])


def tool_main(main_function):
  """Wraps a command-line tool's main: positional arguments refused, graph mode
  (tf.compat.v1), INFO logging, SIGTERM/SIGINT handled (interrupts.handling: a clean stop at
  the next safe point, one line), and expected input errors and TensorFlow runtime errors
  printed as one clear line with exit status 1 (the traceback at --verbosity=1)."""
  spec = main_function.__globals__.get("__spec__")
  tool = (spec.name if spec else main_function.__module__).rsplit(".", 1)[-1]

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
    tf.compat.v1.disable_eager_execution()
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.INFO)
    try:
      with interrupts.handling(tool):
        return main_function(argv)
    # StorageError is an OSError; tf.errors.OpError: e.g. a checkpoint that fails to restore.
    except (ValueError, IOError, OSError, KeyError, tf.errors.OpError) as error:
      logging.debug("%s", error, exc_info=True)
      message = one_line(error.message if isinstance(error, tf.errors.OpError) else str(error))
      logging.error("%s", message)
      raise SystemExit("ERROR: %s" % message)

  return wrapped
