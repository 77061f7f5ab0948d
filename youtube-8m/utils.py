"""Small helpers shared by the command-line tools: model_flags.json, atomic writes, logging."""

import json
import os

import tensorflow as tf
from absl import app
from absl import logging

from . import storage

MODEL_FLAGS_FILE = "model_flags.json"


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


def read_model_flags(train_dir, required=True):
  """The dict of train_dir/model_flags.json (None if absent and not required)."""
  path = model_flags_path(train_dir)
  if not storage.exists(path):
    if required:
      raise IOError("Cannot find %s. Did you run train.py (or eval.py) on this train_dir?"
                    % path)
    return None
  try:
    return json.loads(storage.read_text(path))
  except ValueError as error:
    raise ValueError("%s is not valid JSON: %s" % (path, error))


def write_model_flags(train_dir, model_flags):
  storage.makedirs(train_dir)
  write_atomically(model_flags_path(train_dir), json.dumps(model_flags, indent=1,
                                                           sort_keys=True) + "\n")


def tool_main(main_function):
  """Wraps a command-line tool's main: positional arguments refused, graph mode
  (tf.compat.v1), INFO logging, and expected input errors printed as one clear line with
  exit status 1 (no traceback)."""

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
    tf.compat.v1.disable_eager_execution()
    logging.set_verbosity(logging.INFO)
    try:
      return main_function(argv)
    except (ValueError, IOError, OSError, KeyError) as error:  # StorageError is an OSError
      logging.error("%s", error)
      raise SystemExit("ERROR: %s" % (error,))

  return wrapped
