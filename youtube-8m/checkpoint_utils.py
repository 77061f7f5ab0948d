"""V2 checkpoints (a prefix such as ``train_dir/model.ckpt-5010`` with ``.index``, ``.data-*``
and usually ``.meta`` files), local or gs://: naming, discovery, local copies, atomic writes."""

import contextlib
import glob
import os
import re
import resource
import sys
import time

from absl import logging
import numpy as np
import tensorflow as tf

from . import interrupts
from . import progress as progress_lib
from . import storage
from . import utils

SUFFIX_RE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_STEP_RE = re.compile(r"^(?P<base>.+)-(?P<step>\d+)$")

TRAIN_CHECKPOINT_BASENAME = "model.ckpt"
GLOBAL_STEP = "global_step"
# The single data shard that SaveV2 / tf1.train.Saver(sharded=False) write.
DATA_SUFFIX = ".data-00000-of-00001"
# >= EIGEN_MAX_ALIGN_BYTES, so TF can wrap fed numpy arrays without a copy.
FEED_ALIGNMENT = 64


def strip_checkpoint_suffix(name):
  """'model.ckpt-10.index' -> 'model.ckpt-10' (also .meta and .data-*)."""
  return SUFFIX_RE.sub("", name)


def parse_step(prefix, basename=None):
  """The step of '.../<basename>-<step>' (any basename if None), else None."""
  match = _STEP_RE.match(os.path.basename(strip_checkpoint_suffix(prefix)))
  if not match or basename not in (None, match.group("base")):
    return None
  return int(match.group("step"))


def checkpoint_exists(prefix):
  """True if the checkpoint's index file (written last) exists."""
  return storage.exists(prefix + ".index")


def list_numbered(prefix):
  """[(step, prefix + digits)] of the checkpoints '<prefix><digits>' with an index, by step."""
  pattern = re.compile(re.escape(os.path.basename(prefix)) + r"(\d+)\.index$")
  matches = [pattern.match(os.path.basename(path)) for path in storage.glob(prefix + "*.index")]
  return sorted((int(match.group(1)), prefix + match.group(1)) for match in matches if match)


def list_checkpoints(directory):
  """[(step, prefix)] of every '<directory>/model.ckpt-<step>' with an index file, by step."""
  return list_numbered(os.path.join(directory, TRAIN_CHECKPOINT_BASENAME + "-"))


def newest_checkpoint(directory):
  """(step, prefix) of the newest model.ckpt-<step> in directory, or None (not the 'checkpoint'
  state file, which the original's tools re-point at their outputs)."""
  found = list_checkpoints(directory)
  return found[-1] if found else None


def resolve_checkpoint(train_dir, name):
  """The prefix of checkpoint (or checkpoint file) name: under train_dir unless absolute."""
  name = strip_checkpoint_suffix(name)
  if os.path.isabs(name) or "://" in name:
    return name
  return os.path.join(train_dir, name)


def existing_checkpoint(train_dir, name, flag="checkpoint_file"):
  """resolve_checkpoint, refusing (IOError naming --flag) a checkpoint without its index."""
  prefix = resolve_checkpoint(train_dir, name)
  if not checkpoint_exists(prefix):
    raise IOError("--%s: no checkpoint %s (missing %s.index)" % (flag, prefix, prefix))
  return prefix


class CheckpointToolError(ValueError):
  """A problem with a checkpoint tool's flags or input checkpoints; nothing has been written."""


class UnreadableCheckpointError(IOError):
  """TensorFlow cannot read a checkpoint's files (e.g. a truncated or corrupt data file)."""


def tf_error_line(error, path, users_path):
  """The first line of a TensorFlow error that says what went wrong (utils.message_lines),
  path (a temporary or local copy) replaced by users_path."""
  lines = utils.message_lines(str(getattr(error, "message", error)))
  text = (lines[0] if lines else type(error).__name__).replace(path, users_path)
  return re.sub(r"\.tempstate\d+", "", text)  # TF's BundleWriter's temporary names


@contextlib.contextmanager
def reading(name, local_prefix=None):
  """Raises TF's errors reading checkpoint name (at local_prefix) as UnreadableCheckpointError."""
  try:
    yield
  except (tf.errors.OpError, IndexError) as error:  # IndexError: CheckpointReader's short read
    raise UnreadableCheckpointError("cannot read checkpoint %s (truncated or corrupt?): %s" % (
        name, tf_error_line(error, local_prefix or name, name))) from error


@contextlib.contextmanager
def writing(prefix, tmp_prefix=None):
  """Raises TF's and the OS's errors writing checkpoint prefix (at tmp_prefix) as one IOError."""
  try:
    yield
  except tf.errors.OpError as error:
    raise IOError("cannot write checkpoint %s: %s" % (
        prefix, tf_error_line(error, tmp_prefix or prefix, prefix))) from error
  except OSError as error:  # e.g. the Saver's .meta, written by Python's file API
    raise IOError("cannot write checkpoint %s: %s" % (prefix, utils.one_line(str(error)))
                  ) from error


# What a tf.compat.v1.train.Saver killed while saving leaves: BundleWriter's
# '<file>.tempstate<digits>' and file_io.atomic_write_string_to_file's '<file>.tmp<32 hex>'.
_SAVER_TEMP_RE = re.compile(r"\.(tempstate\d+|tmp[0-9a-f]{32})$")


def remove_interrupted_saves(directory):
  """Removes a killed Saver's temporary files and the data or meta files of steps without an
  index in directory; only while its Saver is not running (train.py's chief at start)."""
  paths = (storage.glob(os.path.join(directory, TRAIN_CHECKPOINT_BASENAME + "-*")) +
           storage.glob(os.path.join(directory, "checkpoint.tmp*")))
  indexed = {path[:-len(".index")] for path in paths if path.endswith(".index")}
  for path in paths:
    prefix = strip_checkpoint_suffix(path)
    if _SAVER_TEMP_RE.search(path) or (prefix != path and prefix not in indexed and
                                       parse_step(prefix, TRAIN_CHECKPOINT_BASENAME) is not None):
      logging.info("Removing %s, left by an interrupted save", path)
      storage.remove(path)


@contextlib.contextmanager
def saving(directory, prefix):
  """A context for a Saver.save of prefix in the local directory: if it fails (even in the last
  .meta), prefix's files go and the `checkpoint` state file is restored, then the error goes on."""
  state_path = os.path.join(directory, "checkpoint")
  state_before = storage.read_bytes(state_path) if os.path.isfile(state_path) else None
  try:
    yield
  except BaseException:
    for path in glob.glob(glob.escape(prefix) + ".*") + glob.glob(
        os.path.join(glob.escape(directory), "checkpoint.tmp*")):
      if os.path.isfile(path):
        os.remove(path)
    if state_before is None:
      if os.path.isfile(state_path):
        os.remove(state_path)
    elif not os.path.isfile(state_path) or storage.read_bytes(state_path) != state_before:
      utils.write_atomically(state_path, state_before)
    raise


def load_reader(prefix, copies):
  """tf.train.load_checkpoint of prefix's copy in copies (a LocalCopies)."""
  try:
    return tf.train.load_checkpoint(copies.local(prefix))
  except (tf.errors.OpError, ValueError) as error:
    raise CheckpointToolError("cannot read checkpoint %s: %s" % (prefix, error)) from error


def variable_specs(reader):
  """{name: (shape tuple, tf.DType)} of the variables of a tf.train.load_checkpoint reader."""
  dtypes = reader.get_variable_to_dtype_map()
  return {name: (tuple(int(d) for d in shape), dtypes[name])
          for name, shape in reader.get_variable_to_shape_map().items()}


def nbytes(shape, dtype):
  return int(np.prod(shape, dtype=np.int64)) * dtype.size


def check_matches_graph(prefix, variables, model_description, name=None, allow_missing=False):
  """ValueError naming each graph variable the checkpoint (a local copy of name) lacks
  (unless allow_missing) or stores with another shape or dtype."""
  with reading(name or prefix, prefix):
    specs = variable_specs(tf.train.load_checkpoint(prefix))
  problems = []
  for variable in variables:
    key, want_shape, want_dtype = (variable.op.name, variable.shape.as_list(),
                                   variable.dtype.base_dtype)
    if key not in specs:
      if not allow_missing:
        problems.append("%s missing" % key)
    elif list(specs[key][0]) != want_shape:
      problems.append("%s has shape %s there, the model needs %s" % (key, list(specs[key][0]),
                                                                     want_shape))
    elif specs[key][1] != want_dtype:
      problems.append("%s is %s there, the model needs %s" % (key, specs[key][1].name,
                                                              want_dtype.name))
  if problems:
    raise ValueError("Checkpoint %s does not match the model %s: %s" % (
        name or prefix, model_description, join_problems(problems, 5)))


def join_problems(problems, limit):
  """The first limit problems, '; '-separated, and how many more there are."""
  more = len(problems) - limit
  return "; ".join(problems[:limit]) + (" (and %d more)" % more if more > 0 else "")


def _checkpoint_files(prefix):
  """<prefix>.index, .meta and .data-* (those that exist)."""
  return [path for path in storage.glob(prefix + ".*")
          if SUFFIX_RE.search(path) and SUFFIX_RE.sub("", path) == prefix]


def data_files(prefix):
  """The data shards '<prefix>.data-NNNNN-of-MMMMM' of a checkpoint, sorted."""
  return sorted(path for path in _checkpoint_files(prefix)
                if path[len(prefix):].startswith(".data-"))


def same_path(a, b):
  """True if a and b name the same file (local paths compared absolute, gs:// ones as text)."""
  return storage.abspath(a) == storage.abspath(b)


def _index_last(paths):
  return sorted(paths, key=lambda path: path.endswith(".index"))


def write_checkpoint(prefix, write_fn):
  """Writes a checkpoint (write_fn(tmp_prefix) on local disk) that appears under prefix only when
  complete (an old index goes first: no reader pairs it with new data); returns prefix."""
  remote = storage.is_gcs(prefix)
  name = os.path.basename(prefix)
  with (storage.temporary_dir("yt8m-write", storage.default_cache_dir()) if remote else
        contextlib.nullcontext(os.path.dirname(prefix))) as directory:
    if not remote:
      storage.remove_orphans(directory, name)
    tmp_prefix = interrupts.temporary(os.path.join(directory, storage.temp_name(name)), prefix=True)
    try:
      with writing(prefix, tmp_prefix):
        write_fn(tmp_prefix)
      # The last safe point: the checkpoint is complete under its temporary name only.
      interrupts.check("writing the checkpoint %s" % prefix)
      written = _index_last(storage.glob(tmp_prefix + ".*"))
      if storage.exists(prefix + ".index"):
        storage.remove(prefix + ".index")
        suffixes = {path[len(tmp_prefix):] for path in written}
        for stale in _checkpoint_files(prefix):  # e.g. data shards of another count
          if stale[len(prefix):] not in suffixes:
            storage.remove(stale)
      for path in written:  # the index last
        storage.publish(path, prefix + path[len(tmp_prefix):])
    except OSError as error:
      if error.errno not in storage.WRITE_ERRNOS:
        raise
      raise storage.write_error(prefix, error, "write checkpoint") from error
    finally:
      for path in storage.glob(glob.escape(tmp_prefix) + "*"):
        storage.remove(path)
      interrupts.release(tmp_prefix)
  return prefix


@contextlib.contextmanager
def local_copy(prefix):
  """Yields prefix itself, or a temporary local download of a gs:// checkpoint."""
  if not storage.is_gcs(prefix):
    yield prefix
    return
  files = _checkpoint_files(prefix)
  if not any(path.endswith(".index") for path in files):
    raise IOError("checkpoint %s not found (no %s.index)" % (prefix, prefix))
  with storage.temporary_dir("yt8m-ckpt", storage.default_cache_dir()) as directory:
    local_prefix = os.path.join(directory, os.path.basename(prefix))
    for path in _index_last(files):
      storage.copy(path, local_prefix + path[len(prefix):])
    yield local_prefix


class LocalCopies(contextlib.ExitStack):
  """Local copies of several checkpoints, each made once (local_copy), all removed on exit:
  ``with LocalCopies() as copies: reader_of(copies.local(prefix))``."""

  def __init__(self):
    super().__init__()
    self._local = {}

  def local(self, prefix):
    if prefix not in self._local:
      interrupts.check("reading the checkpoint %s" % prefix)
      start = time.time()
      local = self.enter_context(local_copy(prefix))
      if local != prefix:
        logging.info("Staged %s (%.1f MiB) in %.1f s", prefix, sum(
            storage.size(path) for path in storage.glob(local + ".*")) / 2.0**20,
                     time.time() - start)
      self._local[prefix] = local
    return self._local[prefix]


def aligned_empty(shape, dtype):
  """np.empty with FEED_ALIGNMENT-aligned data, which TensorFlow feeds without a copy."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  buf = np.empty(nbytes + FEED_ALIGNMENT, dtype=np.uint8)
  offset = (-buf.ctypes.data) % FEED_ALIGNMENT
  return buf[offset:offset + nbytes].view(dtype).reshape(shape)


def write_checkpoint_tensors(prefix, tensors):
  """Saves {name: ndarray} as the checkpoint prefix with one SaveV2 op (not atomic)."""
  names = sorted(tensors)
  graph = tf.Graph()
  with graph.as_default():
    placeholders = [tf.compat.v1.placeholder(tf.as_dtype(tensors[name].dtype), tensors[name].shape,
                                             "value_%d" % i) for i, name in enumerate(names)]
    save_op = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                                shape_and_slices=[""] * len(names), tensors=placeholders)
  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(save_op, feed_dict={ph: tensors[name] for ph, name in zip(placeholders, names)})


def convert_largest_first(items, convert, what):
  """{name: convert(name)} of items [(name, bytes read, bytes written)], the largest read
  first (its transient inputs are paid while few results are held), with a progress line."""
  tensors = {}
  progress = progress_lib.Progress(what, sum(item[2] for item in items), "MiB", scale=2**20)
  for name, _, written in sorted(items, key=lambda item: (-item[1], item[0])):
    interrupts.check("%s, %d of %d tensors done" % (what, len(tensors), len(items)))
    tensors[name] = convert(name)
    progress.update(written)
  progress.finish()
  return tensors


def write_tensors(output_prefix, tensors, global_step_dtype, meta_fn):
  """Writes {name: ndarray} (freed once written) and global_step = 0 as the checkpoint
  output_prefix, meta_fn(tmp_prefix) writing '<tmp_prefix>.meta'; returns the data bytes."""
  tensors[GLOBAL_STEP] = np.zeros((), global_step_dtype.as_numpy_dtype)
  data_bytes = sum(int(tensor.nbytes) for tensor in tensors.values())

  def write(tmp_prefix):
    write_checkpoint_tensors(tmp_prefix, tensors)
    tensors.clear()
    meta_fn(tmp_prefix)

  storage.makedirs(os.path.dirname(output_prefix) or ".")
  write_checkpoint(output_prefix, write)
  return data_bytes


def peak_rss_mib():
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0
