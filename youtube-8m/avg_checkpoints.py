r"""Average several training checkpoints into one (equal weights), streaming one variable at a time.

Usage (from the repository root)::

  # every checkpoint DIR/model.ckpt-<step> with 150010 <= step <= 220010
  python -m youtube-8m.avg_checkpoints --checkpoints_start_end="150010,220010" \
      --prefix="$DIR/model.ckpt-" --output_path="$DIR/avg_c10h400_150010_220010.ckpt"
  # an explicit list (each entry gets --prefix prepended; "122304.index" is accepted too)
  python -m youtube-8m.avg_checkpoints --prefix="$DIR/model.ckpt-" \
      --output_path="$DIR/avg_c32h512_122304_etc_19.ckpt" --checkpoints=122304,125397,133210
  # the N newest checkpoints (by step) next to the prefix
  python -m youtube-8m.avg_checkpoints --num_last_checkpoints=5 --prefix="$DIR/model.ckpt-" \
      --output_path="$DIR/avg_last5.ckpt"

The result is saved with global step 0, i.e. as ``<output_path>-0.index``,
``<output_path>-0.data-00000-of-00001`` and ``<output_path>-0.meta``; evaluate it with
``eval.py --checkpoint_file=<basename of output_path>-0``.

Semantics
* Exactly one selection mode: ``--checkpoints`` (comma list), ``--checkpoints_start_end``
  ("START,END", inclusive) or ``--num_last_checkpoints`` (N newest by step). Giving several
  or none is an error.
* Range and last-N modes list the files next to the prefix whose name is exactly
  ``basename(prefix) + <digits> + ".index"``; digits elsewhere in the directory or in the
  prefix never matter, and other files (``model.ckpt-5010x.index``, earlier averages such as
  ``avg_c10h400_...ckpt-0.index``, ...) are ignored.
* Every variable except ``global_step`` is averaged: arithmetic mean with equal weights,
  accumulated in float64, then cast back to the variable's own stored dtype (float16 stays
  float16, float32 stays float32, ...). Integer and bool variables (other than global_step)
  are averaged, rounded to the nearest integer (ties to even, ``np.rint``) and cast back.
  ``global_step`` is written with value 0 in the dtype the inputs store it in (int32 for
  this project's training graphs; int32 if the inputs have none).
* ``--exclude_optimizer_slots`` leaves out optimizer state (``<var>/Adam``, ``<var>/Adam_1``,
  ``beta1_power``, ``beta2_power`` and the standard TF1 slot names of Momentum, RMSProp,
  Adagrad, AdagradDA, Adadelta, Ftrl, ProximalAdagrad; see ``is_optimizer_slot``) for a
  ~3x smaller evaluation-only checkpoint. By default they are averaged like everything else
  (as the original tool did), so the output can also seed further training.
* All inputs are checked (existence, identical variable names, shapes and dtypes) before
  anything is written; any problem is a clear error and exit code 1 with no output files.
* The training directory's ``checkpoint`` state file is never read or modified.
* Output is written under a temporary prefix in the output directory and then renamed
  (data, meta, index last; uploaded in that order for a gs:// output, see below).
  Re-running over an existing average replaces it only once the new files are complete
  (its old index is removed just before the renames, so an interruption can never pair the
  new data with the old index).

Cloud Storage: ``--prefix`` and ``--output_path`` may be gs:// URLs (any mix with local
paths), through the project's storage layer (``storage.py``; STORAGE_EMULATOR_HOST selects
a local emulator). Checkpoints are listed next to a gs:// prefix with one listing; the
selected ones (their ``.index`` and data files, not the ``.meta``) are downloaded into a
temporary local directory (``--staging_dir``, default the system temp dir; the free space is
checked first) and read from there. A gs:// output is written in that directory and then
uploaded with storage.copy: data file, ``.meta``, and the ``.index`` last (an existing
average's index is deleted first). Nothing is uploaded when anything fails before, and the
remote ``checkpoint`` state file is never touched. The temporary directory is removed at the
end, on success or error.

Memory: tensors are streamed. For each variable, each checkpoint's tensor is read in turn
(one tensor at a time) and added into a float64 accumulator of that variable's shape; the
mean is cast into a 64-byte aligned numpy array of the stored dtype. Variables are done
largest first, so a big variable's transient accumulator + input tensor (~3x its size for
float32) is paid while few results are held. The results (1x the output size) are then fed
through ``tf.compat.v1.placeholder``s to a single ``SaveV2`` op: TF wraps aligned numpy
feeds without copying (unaligned ones would be copied, i.e. 2x) and SaveV2 streams them into
one data shard. The peak is therefore about max(1x output, results so far + 3x the current
variable) + the TensorFlow runtime (~0.5 GiB), independent of the number of checkpoints.
The ``.meta`` graph is built from variables with never-run ``tf.zeros`` initializers (Fill
ops, no data) and exported without running anything. The peak RSS is logged at the end.

TensorFlow is imported lazily so that flag and selection errors are reported instantly.
"""

import os
import re
import shutil
import tempfile
import time
import uuid

from absl import app
from absl import flags
from absl import logging
import numpy as np

from . import progress as progress_lib
from . import storage

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "checkpoints", None,
    "Comma-separated checkpoints to average. Each entry gets --prefix prepended by plain "
    "string concatenation (so with --prefix=DIR/model.ckpt- the entries are bare steps); "
    "entries may also carry a '.index' (or '.meta', '.data-*') suffix.")
flags.DEFINE_string(
    "checkpoints_start_end", None,
    "'START,END': average every checkpoint '<prefix><step>' found next to --prefix with "
    "START <= step <= END (inclusive).")
flags.DEFINE_integer(
    "num_last_checkpoints", None,
    "Average the N newest (highest step) checkpoints '<prefix><step>' found next to --prefix.")
flags.DEFINE_string(
    "prefix", "",
    "Checkpoint prefix, e.g. 'train_dir/model.ckpt-'. Prepended to --checkpoints entries; "
    "in range / last-N modes checkpoints named '<prefix><digits>' are listed.")
flags.DEFINE_string(
    "output_path", "/tmp/averaged.ckpt",
    "Output prefix; the average is saved with global step 0 as '<output_path>-0.*'. An "
    "existing average with that name is replaced once the new files are complete.")
flags.DEFINE_string(
    "staging_dir", None,
    "Local directory for the temporary copies of gs:// input checkpoints (their .index and "
    "data files) and of a gs:// output before its upload; default: the system temporary "
    "directory. Removed at the end.")
flags.DEFINE_bool(
    "exclude_optimizer_slots", False,
    "Leave out optimizer state (*/Adam, */Adam_1, beta1_power, beta2_power, */Momentum, "
    "*/RMSProp*, ...) for a smaller evaluation-only checkpoint. Default: average it too.")

GLOBAL_STEP = "global_step"
DATA_SUFFIX = ".data-00000-of-00001"

# A checkpoint entry given as one of its files is reduced to the prefix.
_FILE_SUFFIX_RE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_START_END_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
# Slot variables are named '<var>/<optimizer name>[_<k>]' (TF1 slot_creator); the Adam
# power accumulators are non-slot variables 'beta1_power' / 'beta2_power'.
_SLOT_LAST_COMPONENT_RE = re.compile(
    r"^(Adam|LazyAdam|AdamW|Momentum|RMSProp|Adagrad|AdagradDA|Adadelta|Ftrl|"
    r"ProximalAdagrad|ProximalGradientDescent)(_\d+)?$")
_NON_SLOT_ACCUMULATOR_RE = re.compile(r"^(beta1_power|beta2_power)(_\d+)?$")


class AvgCheckpointsError(Exception):
  """A user-facing problem with the flags or the input checkpoints (nothing was written)."""


# ---------------------------------------------------------------------------------------
# File system: local paths and gs:// URLs through the project's storage layer (TF-free, so
# flag and selection errors need no TensorFlow import).


def _split(path):
  directory, base = os.path.split(path)
  return directory, base


def _files_with_prefix(prefix):
  """Full paths of the files in prefix's directory whose name starts with its basename
  ([] if the directory does not exist; a missing gs:// bucket raises StorageError)."""
  directory, base = _split(prefix)
  try:
    names = storage.listdir(directory or ".")
  except (FileNotFoundError, NotADirectoryError):
    return []
  return [_join(directory, name) for name in names if name.startswith(base)]


def _exists(path):
  """storage.exists, with storage failures (e.g. a missing bucket) as AvgCheckpointsError."""
  try:
    return storage.exists(path)
  except storage.StorageError as e:
    raise AvgCheckpointsError(str(e))


def _join(directory, name):
  if not directory:
    return name
  return directory.rstrip("/") + "/" + name if storage.is_gcs(directory) else os.path.join(
      directory, name)


def data_files(prefix):
  """The data shard files '<prefix>.data-NNNNN-of-MMMMM' of a checkpoint."""
  pattern = re.compile(re.escape(os.path.basename(prefix)) + r"\.data-\d{5}-of-\d{5}$")
  return sorted(path for path in _files_with_prefix(prefix)
                if pattern.match(os.path.basename(path)))


def checkpoint_data_bytes(prefix):
  """Total size of a checkpoint's data shards in bytes."""
  return sum(storage.size(path) for path in data_files(prefix))


# ---------------------------------------------------------------------------------------
# Selection.


def find_checkpoints(prefix):
  """[(step, checkpoint_prefix)] for every '<prefix><digits>.index' next to prefix, by step.

  Only files whose name is exactly basename(prefix) + digits + '.index' count; the step is
  those digits, so digits in the directory or in the prefix itself never matter. The
  directory may be local or gs:// (one listing).
  """
  directory, base = _split(prefix)
  listing_dir = directory or "."
  try:
    names = storage.listdir(listing_dir)
  except (FileNotFoundError, NotADirectoryError):
    names = None
  except storage.StorageError as e:
    raise AvgCheckpointsError("--prefix=%r: cannot list %s: %s" % (prefix, listing_dir, e))
  if names is None:
    raise AvgCheckpointsError(
        "--prefix=%r: directory %r does not exist" % (prefix, listing_dir))
  pattern = re.compile(re.escape(base) + r"(\d+)\.index$")
  found = []
  for name in names:
    match = pattern.match(name)
    if match:
      digits = match.group(1)
      found.append((int(digits), prefix + digits))
  found.sort()
  return found


def step_of(checkpoint_prefix, prefix=""):
  """The step of '<prefix><digits>' (else of trailing '-<digits>'), or None."""
  if prefix and checkpoint_prefix.startswith(prefix):
    rest = checkpoint_prefix[len(prefix):]
    if rest.isdigit():
      return int(rest)
  match = re.search(r"-(\d+)$", os.path.basename(checkpoint_prefix))
  return int(match.group(1)) if match else None


def parse_start_end(value):
  """'START,END' -> (start, end) with 0 <= start <= end; else AvgCheckpointsError."""
  match = _START_END_RE.match(value or "")
  if not match:
    raise AvgCheckpointsError(
        "--checkpoints_start_end=%r is malformed: expected 'START,END' with two "
        "non-negative integer steps, e.g. '150010,220010'" % (value,))
  start, end = int(match.group(1)), int(match.group(2))
  if start > end:
    raise AvgCheckpointsError(
        "--checkpoints_start_end=%r is malformed: START (%d) is greater than END (%d)"
        % (value, start, end))
  return start, end


def _describe_steps(found, limit=20):
  steps = [str(step) for step, _ in found]
  if len(steps) > limit:
    steps = steps[:limit // 2] + ["..."] + steps[-limit // 2:]
  return ", ".join(steps) if steps else "none"


def select_checkpoints(prefix="", checkpoints=None, checkpoints_start_end=None,
                       num_last_checkpoints=None):
  """Resolves the selection flags to (mode, [checkpoint prefixes]) in averaging order.

  Exactly one of checkpoints / checkpoints_start_end / num_last_checkpoints must be given
  (not None). Every returned checkpoint has an index file. Raises AvgCheckpointsError.
  """
  given = [name for name, value in (("--checkpoints", checkpoints),
                                    ("--checkpoints_start_end", checkpoints_start_end),
                                    ("--num_last_checkpoints", num_last_checkpoints))
           if value is not None]
  if len(given) > 1:
    raise AvgCheckpointsError(
        "only one selection mode may be given, got %s" % " and ".join(given))
  if not given:
    raise AvgCheckpointsError(
        "no checkpoints selected: give one of --checkpoints, --checkpoints_start_end "
        "or --num_last_checkpoints")

  if checkpoints is not None:
    entries = [entry.strip() for entry in checkpoints.split(",")]
    entries = [entry for entry in entries if entry]
    if not entries:
      raise AvgCheckpointsError("--checkpoints=%r selects no checkpoints" % (checkpoints,))
    selected = []
    for entry in entries:
      ckpt = prefix + _FILE_SUFFIX_RE.sub("", entry)
      if ckpt in selected:
        raise AvgCheckpointsError(
            "--checkpoints: checkpoint %r is listed twice (entry %r)" % (ckpt, entry))
      if not _exists(ckpt + ".index"):
        raise AvgCheckpointsError(
            "--checkpoints: checkpoint %r (entry %r with --prefix=%r) does not exist: "
            "no file %r" % (ckpt, entry, prefix, ckpt + ".index"))
      selected.append(ckpt)
    return "checkpoints", selected

  if checkpoints_start_end is not None:
    start, end = parse_start_end(checkpoints_start_end)
    found = find_checkpoints(prefix)
    in_range = [(step, ckpt) for step, ckpt in found if start <= step <= end]
    if not in_range:
      raise AvgCheckpointsError(
          "--checkpoints_start_end=%r: no checkpoint '%s<step>' with %d <= step <= %d "
          "(steps found next to --prefix: %s)"
          % (checkpoints_start_end, prefix, start, end, _describe_steps(found)))
    return "checkpoints_start_end", [ckpt for _, ckpt in in_range]

  if num_last_checkpoints < 1:
    raise AvgCheckpointsError(
        "--num_last_checkpoints=%d: must be at least 1" % num_last_checkpoints)
  found = find_checkpoints(prefix)
  if len(found) < num_last_checkpoints:
    raise AvgCheckpointsError(
        "--num_last_checkpoints=%d: only %d checkpoint(s) '%s<step>' found (steps: %s)"
        % (num_last_checkpoints, len(found), prefix, _describe_steps(found)))
  return "num_last_checkpoints", [ckpt for _, ckpt in found[-num_last_checkpoints:]]


# ---------------------------------------------------------------------------------------
# Averaging.


def is_optimizer_slot(name):
  """True for optimizer state: '<var>/Adam', '<var>/Adam_1', 'beta1_power', ... ."""
  last = name.rsplit("/", 1)[-1]
  return bool(_SLOT_LAST_COMPONENT_RE.match(last) or _NON_SLOT_ACCUMULATOR_RE.match(last))


def _open_readers(local_prefixes, names=None):
  """tf.train.load_checkpoint of each (local) prefix; errors name the checkpoint as given."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  readers = []
  for local, ckpt in zip(local_prefixes, names or local_prefixes):
    try:
      readers.append(tf.train.load_checkpoint(local))
    except (tf.errors.OpError, ValueError) as e:
      raise AvgCheckpointsError("cannot read checkpoint %r: %s" % (ckpt, e)) from e
  return readers


def _names_preview(names, limit=5):
  names = sorted(names)
  shown = ", ".join(repr(n) for n in names[:limit])
  return shown + (", ... (%d in all)" % len(names) if len(names) > limit else "")


def check_compatible(checkpoint_prefixes, readers):
  """{name: (shape, tf.DType)} common to all checkpoints; AvgCheckpointsError on mismatch."""
  first = checkpoint_prefixes[0]
  ref_shapes = readers[0].get_variable_to_shape_map()
  ref_dtypes = readers[0].get_variable_to_dtype_map()
  for ckpt, reader in zip(checkpoint_prefixes[1:], readers[1:]):
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    missing = set(ref_shapes) - set(shapes)
    if missing:
      raise AvgCheckpointsError(
          "checkpoint %r lacks variable(s) %s present in %r"
          % (ckpt, _names_preview(missing), first))
    extra = set(shapes) - set(ref_shapes)
    if extra:
      raise AvgCheckpointsError(
          "checkpoint %r has variable(s) %s absent from %r"
          % (ckpt, _names_preview(extra), first))
    for name in sorted(ref_shapes):
      if list(shapes[name]) != list(ref_shapes[name]):
        raise AvgCheckpointsError(
            "variable %r has shape %s in checkpoint %r but %s in %r"
            % (name, list(shapes[name]), ckpt, list(ref_shapes[name]), first))
      if dtypes[name] != ref_dtypes[name]:
        raise AvgCheckpointsError(
            "variable %r has dtype %s in checkpoint %r but %s in %r"
            % (name, dtypes[name].name, ckpt, ref_dtypes[name].name, first))
  specs = {}
  for name in sorted(ref_shapes):
    dtype = ref_dtypes[name]
    if name != GLOBAL_STEP and not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
      raise AvgCheckpointsError(
          "variable %r in %r has dtype %s, which cannot be averaged"
          % (name, first, dtype.name))
    specs[name] = (tuple(int(d) for d in ref_shapes[name]), dtype)
  return specs


def _checkpoint_utils():
  from . import checkpoint_utils  # pylint: disable=g-import-not-at-top  # imports TensorFlow
  return checkpoint_utils


def _aligned_empty(shape, dtype):
  """np.empty(shape, dtype) whose data is 64-byte aligned (zero-copy TF feeds)."""
  return _checkpoint_utils().aligned_empty(shape, dtype)


def _nbytes(shape, dtype):
  return int(np.prod(shape, dtype=np.int64)) * dtype.size


def _average_variable(name, shape, dtype, readers, checkpoint_prefixes):
  """Mean of one variable over all readers in its stored dtype (one input tensor at a time)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  np_dtype = np.dtype(dtype.as_numpy_dtype)
  acc = np.zeros(shape, dtype=np.float64)
  for ckpt, reader in zip(checkpoint_prefixes, readers):
    try:
      tensor = reader.get_tensor(name)
    except tf.errors.OpError as e:
      raise AvgCheckpointsError(
          "cannot read variable %r from checkpoint %r: %s" % (name, ckpt, e)) from e
    tensor = np.asarray(tensor)
    if tensor.shape != shape:
      raise AvgCheckpointsError(
          "variable %r in checkpoint %r has shape %s, expected %s"
          % (name, ckpt, list(tensor.shape), list(shape)))
    if tensor.dtype.kind in "fiub":
      np.add(acc, tensor, out=acc)
    else:  # e.g. bfloat16 (ml_dtypes): convert explicitly.
      acc += tensor.astype(np.float64)
    del tensor
  acc /= len(readers)
  if dtype.is_integer or dtype.is_bool:
    np.rint(acc, out=acc)
  out = _aligned_empty(shape, np_dtype)
  np.copyto(out, acc, casting="unsafe")
  return out


def _write_data_and_index(tmp_prefix, tensors):
  """Saves {name: ndarray} as a single-shard V2 checkpoint '<tmp_prefix>.{index,data-*}'.

  The streaming writer shared with the ensemble tools (checkpoint_utils): one SaveV2 op fed
  through placeholders; aligned numpy feeds are wrapped, not copied.
  """
  _checkpoint_utils().write_checkpoint_tensors(tmp_prefix, tensors)


def _write_meta(meta_path, specs):
  """Exports a MetaGraphDef with one variable per {name: (shape, tf.DType)} and a saver_def.

  Initializers are tf.zeros (Fill ops for big shapes) that are never run, so no tensor data
  is created. The saver maps checkpoint names to the variables, so
  import_meta_graph(...).restore(sess, '<output_path>-0') works.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  with graph.as_default():
    var_list = {}
    # Sorted so that 'a/b' is created before 'a/b/Adam' and keeps its exact name.
    for name in sorted(specs):
      shape, dtype = specs[name]
      with tf.compat.v1.name_scope("avg_checkpoints_init"):
        initial_value = tf.zeros(shape, dtype=dtype)
      variable = tf.compat.v1.Variable(initial_value=initial_value, name=name,
                                       trainable=False, dtype=dtype)
      if variable.op.name != name:
        logging.warning("meta graph: variable %r got graph name %r (restore still maps it)",
                        name, variable.op.name)
      if name == GLOBAL_STEP:
        graph.add_to_collection(tf.compat.v1.GraphKeys.GLOBAL_STEP, variable)
      var_list[name] = variable
    saver = tf.compat.v1.train.Saver(var_list=var_list, sharded=False,
                                     write_version=tf.compat.v1.train.SaverDef.V2)
    tf.compat.v1.train.export_meta_graph(filename=meta_path, graph=graph,
                                         saver_def=saver.as_saver_def(), clear_devices=True)


def _remove_quietly(paths):
  for path in paths:
    try:
      if storage.exists(path):
        storage.remove(path)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not remove %s: %s", path, e)


def _same_path(a, b):
  if storage.is_gcs(a) or storage.is_gcs(b):
    return a.rstrip("/") == b.rstrip("/")
  return os.path.abspath(a) == os.path.abspath(b)


def _stage_inputs(checkpoint_prefixes, files, work_dir):
  """Local prefixes to read the checkpoints from: gs:// checkpoints' .index and data files
  are downloaded under work_dir (one subdirectory each: basenames may repeat); local ones
  are used in place."""
  local_prefixes = []
  staged_bytes, start = 0, time.time()
  for i, ckpt in enumerate(checkpoint_prefixes):
    if not storage.is_gcs(ckpt):
      local_prefixes.append(ckpt)
      continue
    local = os.path.join(work_dir, "in%d" % i, os.path.basename(ckpt))
    os.makedirs(os.path.dirname(local))
    for path in files[ckpt] + [ckpt + ".index"]:
      storage.copy(path, local + path[len(ckpt):])
      staged_bytes += os.path.getsize(local + path[len(ckpt):])
    local_prefixes.append(local)
  if staged_bytes:
    logging.info("staged %d gs:// checkpoint(s) (%.1f MiB) into %s in %.1f s",
                 sum(1 for c in checkpoint_prefixes if storage.is_gcs(c)),
                 staged_bytes / 2.0**20, work_dir, time.time() - start)
  return local_prefixes


def _check_staging_space(work_dir, needed):
  free = shutil.disk_usage(work_dir).free
  if needed > free:
    raise AvgCheckpointsError(
        "staging gs:// checkpoints needs about %.1f MiB in %s but only %.1f MiB are free; "
        "point --staging_dir at a larger local disk" % (needed / 2.0**20, work_dir,
                                                         free / 2.0**20))


def _publish(tmp_prefix, output_prefix):
  """Moves the complete checkpoint '<tmp_prefix>.*' to output_prefix: an existing index
  first removed, then data, .meta and the .index last, so the output is never seen
  half-written. A local output is renamed; a gs:// one uploaded (storage.copy) from the
  local tmp_prefix."""
  final_data, final_index, final_meta = (output_prefix + DATA_SUFFIX,
                                         output_prefix + ".index", output_prefix + ".meta")
  if storage.exists(final_index):
    logging.info("replacing the existing checkpoint %s", output_prefix)
    storage.remove(final_index)  # First: the old data never pairs with the new index or v.v.
  stale = [path for path in data_files(output_prefix) if path != final_data]
  _remove_quietly(stale)
  move = storage.copy if storage.is_gcs(output_prefix) else (
      lambda src, dst: storage.rename(src, dst, overwrite=True))
  for suffix, final in ((DATA_SUFFIX, final_data), (".meta", final_meta),
                        (".index", final_index)):
    move(tmp_prefix + suffix, final)
  return [final_index, final_data, final_meta]


def average_checkpoints(checkpoint_prefixes, output_prefix, exclude_optimizer_slots=False,
                        staging_dir=None):
  """Averages checkpoints into '<output_prefix>.{data-00000-of-00001,index,meta}'.

  Args:
    checkpoint_prefixes: checkpoint prefixes ('dir/model.ckpt-5010', local or gs://), each
      with an index file.
    output_prefix: prefix of the averaged checkpoint (main() passes '<output_path>-0'),
      local or gs://.
    exclude_optimizer_slots: leave out optimizer state (see is_optimizer_slot).
    staging_dir: local directory for the temporary copies of gs:// inputs and of a gs://
      output (default: the system temporary directory); removed at the end.

  Returns:
    A summary dict: checkpoints, output_prefix, files, averaged / skipped variable names,
    global_step dtype, output and largest input data sizes (bytes), peak_memory_mib,
    seconds.

  Raises:
    AvgCheckpointsError: bad or incompatible inputs; nothing has been written then.
  """
  start_time = time.time()
  checkpoint_prefixes = list(checkpoint_prefixes)
  if not checkpoint_prefixes:
    raise AvgCheckpointsError("no checkpoints to average")
  if len(set(checkpoint_prefixes)) != len(checkpoint_prefixes):
    raise AvgCheckpointsError("a checkpoint is listed twice: %s" % checkpoint_prefixes)
  files = {}
  for ckpt in checkpoint_prefixes:
    if not _exists(ckpt + ".index"):
      raise AvgCheckpointsError("checkpoint %r does not exist: no file %r"
                                % (ckpt, ckpt + ".index"))
    if _same_path(ckpt, output_prefix):
      raise AvgCheckpointsError(
          "output %r is one of the input checkpoints; choose another --output_path"
          % output_prefix)
    files[ckpt] = data_files(ckpt)
    if not files[ckpt]:
      raise AvgCheckpointsError("checkpoint %r has no data file %r"
                                % (ckpt, ckpt + ".data-*"))
  input_bytes = {ckpt: sum(storage.size(path) for path in files[ckpt])
                 for ckpt in checkpoint_prefixes}
  largest_input = max(input_bytes.values())

  remote_output = storage.is_gcs(output_prefix)
  if remote_output:
    try:  # a missing bucket is reported now, not after the averaging
      storage.isdir(_split(output_prefix)[0])
    except storage.StorageError as e:
      raise AvgCheckpointsError("output %s: %s" % (output_prefix, e))
  work_dir = None
  if remote_output or any(storage.is_gcs(ckpt) for ckpt in checkpoint_prefixes):
    if staging_dir:
      os.makedirs(staging_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix="avg_checkpoints-", dir=staging_dir or None)
  try:
    if work_dir:
      _check_staging_space(work_dir, sum(
          input_bytes[c] for c in checkpoint_prefixes if storage.is_gcs(c)) + (
              largest_input if remote_output else 0))
    local_prefixes = _stage_inputs(checkpoint_prefixes, files, work_dir)
    return _average_and_write(checkpoint_prefixes, local_prefixes, output_prefix,
                              exclude_optimizer_slots, largest_input, work_dir, start_time)
  finally:
    if work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


def _average_and_write(checkpoint_prefixes, local_prefixes, output_prefix,
                       exclude_optimizer_slots, largest_input, work_dir, start_time):
  # 1. Check every input before writing anything.
  readers = _open_readers(local_prefixes, checkpoint_prefixes)
  specs = check_compatible(checkpoint_prefixes, readers)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  averaged, skipped = [], []
  for name in specs:
    if name == GLOBAL_STEP:
      continue
    if exclude_optimizer_slots and is_optimizer_slot(name):
      skipped.append(name)
    else:
      averaged.append(name)
  global_step_dtype = specs[GLOBAL_STEP][1] if GLOBAL_STEP in specs else tf.int32
  if GLOBAL_STEP in specs and specs[GLOBAL_STEP][0] != ():
    raise AvgCheckpointsError("variable 'global_step' in %r is not a scalar (shape %s)"
                              % (checkpoint_prefixes[0], list(specs[GLOBAL_STEP][0])))
  logging.info("averaging %d variables over %d checkpoints (%d skipped%s); largest input "
               "checkpoint data: %.1f MiB", len(averaged), len(checkpoint_prefixes),
               len(skipped), " as optimizer slots" if skipped else "",
               largest_input / 2.0**20)

  # 2. Stream: one variable at a time, one input tensor at a time. Largest variables first:
  # their float64 accumulator and input tensor are transient, so they are best paid while
  # few averaged results are held yet (the peak then stays close to 1x the output).
  tensors = {}
  by_size = sorted(averaged, key=lambda n: (-_nbytes(*specs[n]), n))
  # In bytes: the variables are largest first, so a count of them would mislead the ETA.
  progress = progress_lib.Progress("averaging %d variables" % len(by_size), sum(
      _nbytes(*specs[n]) for n in by_size), "MiB", scale=2**20)
  for name in by_size:
    shape, dtype = specs[name]
    tensors[name] = _average_variable(name, shape, dtype, readers, checkpoint_prefixes)
    progress.update(_nbytes(shape, dtype))
  progress.finish()
  del readers
  global_step = _aligned_empty((), global_step_dtype.as_numpy_dtype)
  global_step[...] = 0
  tensors[GLOBAL_STEP] = global_step
  out_specs = {name: specs[name] for name in averaged}
  out_specs[GLOBAL_STEP] = ((), global_step_dtype)

  # 3. Write under a temporary prefix (in the output directory, or in the local work
  # directory for a gs:// output), then rename / upload (data, meta, index last).
  out_dir, out_base = _split(output_prefix)
  if storage.is_gcs(output_prefix):
    tmp_dir = os.path.join(work_dir, "out")
    os.makedirs(tmp_dir)
  else:
    tmp_dir = out_dir
    storage.makedirs(out_dir)
  tmp_prefix = os.path.join(tmp_dir, ".%s.tmp-%d-%s" % (out_base, os.getpid(),
                                                        uuid.uuid4().hex[:8]))
  try:
    _write_data_and_index(tmp_prefix, tensors)
    output_bytes = storage.size(tmp_prefix + DATA_SUFFIX)
    del tensors
    _write_meta(tmp_prefix + ".meta", out_specs)
    written = _publish(tmp_prefix, output_prefix)
  finally:
    _remove_quietly(_files_with_prefix(tmp_prefix))

  summary = {
      "checkpoints": checkpoint_prefixes,
      "output_prefix": output_prefix,
      "files": written,
      "averaged": averaged,
      "skipped": skipped,
      "global_step_dtype": global_step_dtype.name,
      "output_data_bytes": output_bytes,
      "largest_input_data_bytes": largest_input,
      "peak_memory_mib": _checkpoint_utils().peak_rss_mib(),
      "seconds": time.time() - start_time,
  }
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
  try:
    mode, selected = select_checkpoints(
        prefix=FLAGS.prefix, checkpoints=FLAGS.checkpoints,
        checkpoints_start_end=FLAGS.checkpoints_start_end,
        num_last_checkpoints=FLAGS.num_last_checkpoints)
    steps = [step_of(ckpt, FLAGS.prefix) for ckpt in selected]
    logging.info("mode: --%s; %d checkpoints selected, steps (in order): %s", mode,
                 len(selected), ", ".join("?" if s is None else str(s) for s in steps))
    output_prefix = FLAGS.output_path + "-0"
    if FLAGS.prefix and step_of(output_prefix, FLAGS.prefix) is not None and (
        output_prefix.startswith(FLAGS.prefix)):
      logging.warning("the output %s matches '--prefix<step>': later range / last-N runs "
                      "will select it as a training checkpoint", output_prefix)
    summary = average_checkpoints(selected, output_prefix,
                                  exclude_optimizer_slots=FLAGS.exclude_optimizer_slots,
                                  staging_dir=FLAGS.staging_dir)
  except (AvgCheckpointsError, OSError) as e:  # OSError: storage (StorageError, missing files)
    logging.error("avg_checkpoints: error: %s", e)
    return 1
  logging.info("averaged %d variables, skipped %d%s, global_step=0 (%s)",
               len(summary["averaged"]), len(summary["skipped"]),
               " (optimizer slots)" if summary["skipped"] else "",
               summary["global_step_dtype"])
  logging.info("wrote %s (%s) in %.1f s", output_prefix,
               ", ".join(os.path.basename(f) for f in summary["files"]), summary["seconds"])
  logging.info("peak memory: %.1f MiB; largest input checkpoint data: %.1f MiB; "
               "output data: %.1f MiB", summary["peak_memory_mib"],
               summary["largest_input_data_bytes"] / 2.0**20,
               summary["output_data_bytes"] / 2.0**20)
  return 0


if __name__ == "__main__":
  app.run(main)
