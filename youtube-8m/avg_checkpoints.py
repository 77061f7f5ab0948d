r"""Averages training checkpoints into one (equal weights), one variable at a time.

    python -m youtube-8m.avg_checkpoints --prefix="$DIR/model.ckpt-" \
        --checkpoints_start_end=150010,220010 --output_path="$DIR/avg_150010_220010.ckpt"
    (or --checkpoints=122304,125397,... or --num_last_checkpoints=5)

writes ``<output_path>-0.{index,data-00000-of-00001,meta}`` (global_step 0, the other variables
averaged in float64 and cast back), or nothing on error (exit 1).
"""

import os
import re
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from . import checkpoint_utils
from . import storage
from . import utils

FLAGS = flags.FLAGS
CheckpointToolError = checkpoint_utils.CheckpointToolError
GLOBAL_STEP = checkpoint_utils.GLOBAL_STEP
_START_END_RE = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")
# The last name component of optimizer state: TF1 slot variables '<var>/<optimizer>[_<k>]'
# and Adam's non-slot accumulators 'beta1_power' / 'beta2_power'.
_OPTIMIZER_STATE_RE = re.compile(
    r"^(Adam|LazyAdam|AdamW|Momentum|RMSProp|Adagrad|AdagradDA|Adadelta|Ftrl|ProximalAdagrad|"
    r"ProximalGradientDescent|beta1_power|beta2_power)(_\d+)?$")


def define_flags():
  flags.DEFINE_string("checkpoints", None,
                      "Comma-separated checkpoints to average, each appended to --prefix (so "
                      "with --prefix=DIR/model.ckpt- bare steps); a '.index' (or '.meta', "
                      "'.data-*') suffix is accepted.")
  flags.DEFINE_string("checkpoints_start_end", None,
                      "'START,END': average every checkpoint '<prefix><step>' found next to "
                      "--prefix with START <= step <= END (inclusive).")
  flags.DEFINE_integer("num_last_checkpoints", None,
                       "Average the N newest (highest step) checkpoints '<prefix><step>' found "
                       "next to --prefix.")
  flags.DEFINE_string("prefix", "",
                      "Checkpoint prefix, e.g. 'train_dir/model.ckpt-': of the --checkpoints "
                      "entries, or of the '<prefix><digits>' range / last-N modes list.")
  flags.DEFINE_string("output_path", "/tmp/averaged.ckpt",
                      "Output prefix; the average is saved with global step 0 as "
                      "'<output_path>-0.*' (replacing an existing one once complete).")
  flags.DEFINE_string("staging_dir", None,
                      "Local directory for temporary copies of gs:// checkpoints (input or output; "
                      "default: $YT8M_STORAGE_CACHE, else <tmp>/yt8m-storage-cache).")
  flags.DEFINE_bool("exclude_optimizer_slots", False,
                    "Leave out optimizer state (*/Adam, */Adam_1, beta1_power, */Momentum, ...) "
                    "for a smaller evaluation-only checkpoint.")


def find_checkpoints(prefix):
  """[(step, checkpoint prefix)] of every '<prefix><digits>' with an index file, by step."""
  directory = os.path.dirname(prefix) or "."
  try:
    if not storage.isdir(directory):
      raise CheckpointToolError("--prefix=%r: directory %r does not exist" % (prefix, directory))
    return checkpoint_utils.list_numbered(prefix)
  except storage.StorageError as e:
    raise CheckpointToolError("--prefix=%r: cannot list %s: %s" % (prefix, directory, e))


def _describe_steps(found):
  steps = [str(step) for step, _ in found]
  if len(steps) > 20:
    steps = steps[:10] + ["..."] + steps[-10:]
  return ", ".join(steps) or "none"


def select_checkpoints(prefix="", checkpoints=None, checkpoints_start_end=None,
                       num_last_checkpoints=None):
  """(mode, [checkpoint prefixes in averaging order]) of the one selection mode given."""
  given = [name for name, value in (("--checkpoints", checkpoints),
                                    ("--checkpoints_start_end", checkpoints_start_end),
                                    ("--num_last_checkpoints", num_last_checkpoints))
           if value is not None]
  if len(given) > 1:
    raise CheckpointToolError("only one selection mode may be given, got %s" % " and ".join(given))
  if not given:
    raise CheckpointToolError(
        "no checkpoints selected: give one of --checkpoints, --checkpoints_start_end "
        "or --num_last_checkpoints")
  if checkpoints is not None:
    entries = [entry.strip() for entry in checkpoints.split(",") if entry.strip()]
    if not entries:
      raise CheckpointToolError("--checkpoints=%r selects no checkpoints" % (checkpoints,))
    selected = []
    for entry in entries:
      ckpt = prefix + checkpoint_utils.strip_checkpoint_suffix(entry)
      if ckpt in selected:
        raise CheckpointToolError(
            "--checkpoints: checkpoint %r is listed twice (entry %r)" % (ckpt, entry))
      if not checkpoint_utils.checkpoint_exists(ckpt):
        raise CheckpointToolError(
            "--checkpoints: checkpoint %r (entry %r with --prefix=%r) does not exist: "
            "no file %r" % (ckpt, entry, prefix, ckpt + ".index"))
      selected.append(ckpt)
    return "checkpoints", selected
  if checkpoints_start_end is not None:
    match = _START_END_RE.match(checkpoints_start_end)
    if not match:
      raise CheckpointToolError(
          "--checkpoints_start_end=%r is malformed: expected 'START,END' with two "
          "non-negative integer steps, e.g. '150010,220010'" % (checkpoints_start_end,))
    start, end = int(match.group(1)), int(match.group(2))
    if start > end:
      raise CheckpointToolError(
          "--checkpoints_start_end=%r is malformed: START (%d) is greater than END (%d)"
          % (checkpoints_start_end, start, end))
    found = find_checkpoints(prefix)
    in_range = [ckpt for step, ckpt in found if start <= step <= end]
    if not in_range:
      raise CheckpointToolError(
          "--checkpoints_start_end=%r: no checkpoint '%s<step>' with %d <= step <= %d "
          "(steps found next to --prefix: %s)"
          % (checkpoints_start_end, prefix, start, end, _describe_steps(found)))
    return "checkpoints_start_end", in_range
  if num_last_checkpoints < 1:
    raise CheckpointToolError(
        "--num_last_checkpoints=%d: must be at least 1" % num_last_checkpoints)
  found = find_checkpoints(prefix)
  if len(found) < num_last_checkpoints:
    raise CheckpointToolError(
        "--num_last_checkpoints=%d: only %d checkpoint(s) '%s<step>' found (steps: %s)"
        % (num_last_checkpoints, len(found), prefix, _describe_steps(found)))
  return "num_last_checkpoints", [ckpt for _, ckpt in found[-num_last_checkpoints:]]


def is_optimizer_slot(name):
  """True for optimizer state: '<var>/Adam', '<var>/Adam_1', 'beta1_power', ... ."""
  return bool(_OPTIMIZER_STATE_RE.match(name.rsplit("/", 1)[-1]))


def check_compatible(checkpoint_prefixes, all_specs):
  """The {name: (shape, tf.DType)} all checkpoints share; CheckpointToolError on mismatch."""
  first, ref = checkpoint_prefixes[0], all_specs[0]
  for ckpt, specs in zip(checkpoint_prefixes[1:], all_specs[1:]):
    for names, problem in ((set(ref) - set(specs), "lacks variable(s) %s present in %r"),
                           (set(specs) - set(ref), "has variable(s) %s absent from %r")):
      names = sorted(names)
      if names:
        preview = ", ".join(map(repr, names[:5])) + (
            ", ... (%d in all)" % len(names) if names[5:] else "")
        raise CheckpointToolError("checkpoint %r %s" % (ckpt, problem % (preview, first)))
    for name in sorted(ref):
      for what, value, ref_value in (("shape", list(specs[name][0]), list(ref[name][0])),
                                     ("dtype", specs[name][1].name, ref[name][1].name)):
        if value != ref_value:
          raise CheckpointToolError("variable %r has %s %s in checkpoint %r but %s in %r"
                                    % (name, what, value, ckpt, ref_value, first))
  for name, (shape, dtype) in sorted(ref.items()):
    if name != GLOBAL_STEP and not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
      raise CheckpointToolError("variable %r in %r has dtype %s, which cannot be averaged"
                                % (name, first, dtype.name))
  if GLOBAL_STEP in ref and ref[GLOBAL_STEP][0] != ():
    raise CheckpointToolError("variable 'global_step' in %r is not a scalar (shape %s)"
                              % (first, list(ref[GLOBAL_STEP][0])))
  return ref


def _average_variable(name, shape, dtype, readers, checkpoint_prefixes, copies):
  """Mean of one variable over all readers (of checkpoint_prefixes), in its dtype."""
  acc = np.zeros(shape, dtype=np.float64)
  for ckpt, reader in zip(checkpoint_prefixes, readers):
    with checkpoint_utils.reading(ckpt, copies.local(ckpt)):
      tensor = np.asarray(reader.get_tensor(name))
    if tensor.dtype.kind in "fiub":
      np.add(acc, tensor, out=acc)
    else:  # e.g. bfloat16 (ml_dtypes): convert explicitly.
      acc += tensor.astype(np.float64)
    del tensor
  acc /= len(readers)
  if dtype.is_integer or dtype.is_bool:  # round to nearest, ties to even
    np.rint(acc, out=acc)
  out = checkpoint_utils.aligned_empty(shape, dtype.as_numpy_dtype)
  np.copyto(out, acc, casting="unsafe")
  return out


def _write_meta(meta_path, specs):
  """Exports a MetaGraphDef of zero-initialized variables {name: (shape, dtype)} and a saver."""
  graph = tf.Graph()
  with graph.as_default():
    var_list = {}
    # Sorted: 'a/b' is created before 'a/b/Adam' and keeps its exact name (the saver maps
    # names through var_list anyway).
    for name, (shape, dtype) in sorted(specs.items()):
      with tf.compat.v1.name_scope("avg_checkpoints_init"):
        initial_value = tf.zeros(shape, dtype=dtype)
      variable = tf.compat.v1.Variable(initial_value, name=name, trainable=False, dtype=dtype)
      if name == GLOBAL_STEP:
        graph.add_to_collection(tf.compat.v1.GraphKeys.GLOBAL_STEP, variable)
      var_list[name] = variable
    saver = tf.compat.v1.train.Saver(var_list=var_list, sharded=False,
                                     write_version=tf.compat.v1.train.SaverDef.V2)
    tf.compat.v1.train.export_meta_graph(filename=meta_path, graph=graph,
                                         saver_def=saver.as_saver_def(), clear_devices=True)


def check_inputs(checkpoint_prefixes, output_prefix):
  """The largest input's data bytes; CheckpointToolError if an input is missing or the output."""
  if not checkpoint_prefixes:
    raise CheckpointToolError("no checkpoints to average")
  if len(set(checkpoint_prefixes)) != len(checkpoint_prefixes):
    raise CheckpointToolError("a checkpoint is listed twice: %s" % checkpoint_prefixes)
  input_bytes = []
  for ckpt in checkpoint_prefixes:
    if not checkpoint_utils.checkpoint_exists(ckpt):
      raise CheckpointToolError("checkpoint %r does not exist: no file %r"
                                % (ckpt, ckpt + ".index"))
    if checkpoint_utils.same_path(ckpt, output_prefix):
      raise CheckpointToolError(
          "output %r is one of the input checkpoints; choose another --output_path"
          % output_prefix)
    files = checkpoint_utils.data_files(ckpt)
    if not files:
      raise CheckpointToolError("checkpoint %r has no data file %r"
                                % (ckpt, ckpt + ".data-*"))
    input_bytes.append(sum(storage.size(path) for path in files))
  try:  # a missing bucket is reported now, not after the averaging
    storage.isdir(os.path.dirname(output_prefix) or ".")
  except storage.StorageError as e:
    raise CheckpointToolError("output %s: %s" % (output_prefix, e))
  return max(input_bytes)


def average_checkpoints(checkpoint_prefixes, output_prefix, exclude_optimizer_slots=False):
  """Averages checkpoint prefixes into '<output_prefix>.*'; returns a summary dict (errors
  before anything is written)."""
  start_time = time.time()
  checkpoint_prefixes = list(checkpoint_prefixes)
  largest_input = check_inputs(checkpoint_prefixes, output_prefix)
  with checkpoint_utils.LocalCopies() as copies:
    readers = [checkpoint_utils.load_reader(ckpt, copies) for ckpt in checkpoint_prefixes]
    specs = check_compatible(checkpoint_prefixes,
                             [checkpoint_utils.variable_specs(r) for r in readers])
    averaged = [name for name in specs if name != GLOBAL_STEP and not (
        exclude_optimizer_slots and is_optimizer_slot(name))]
    skipped = [name for name in specs if name != GLOBAL_STEP and name not in averaged]
    global_step_dtype = specs[GLOBAL_STEP][1] if GLOBAL_STEP in specs else tf.int32
    logging.info("averaging %d variables over %d checkpoints (%d skipped%s); largest input "
                 "checkpoint data: %.1f MiB", len(averaged), len(checkpoint_prefixes),
                 len(skipped), " as optimizer slots" if skipped else "",
                 largest_input / 2.0**20)
    sizes = {name: checkpoint_utils.nbytes(*specs[name]) for name in averaged}
    tensors = checkpoint_utils.convert_largest_first(
        [(name, size, size) for name, size in sizes.items()],  # read and written: the same
        lambda name: _average_variable(name, *specs[name], readers, checkpoint_prefixes,
                                       copies), "averaging %d variables" % len(averaged))
    del readers
  out_specs = {name: specs[name] for name in averaged}
  out_specs[GLOBAL_STEP] = ((), global_step_dtype)
  if checkpoint_utils.checkpoint_exists(output_prefix):
    logging.info("replacing the existing checkpoint %s", output_prefix)
  output_bytes = checkpoint_utils.write_tensors(
      output_prefix, tensors, global_step_dtype,
      lambda tmp_prefix: _write_meta(tmp_prefix + ".meta", out_specs))
  files = [output_prefix + suffix for suffix in (".index", checkpoint_utils.DATA_SUFFIX, ".meta")]
  return dict(checkpoints=checkpoint_prefixes, output_prefix=output_prefix, files=files,
              averaged=averaged, skipped=skipped, global_step_dtype=global_step_dtype.name,
              output_data_bytes=output_bytes, largest_input_data_bytes=largest_input,
              peak_memory_mib=checkpoint_utils.peak_rss_mib(), seconds=time.time() - start_time)


@utils.tool_main
def main(unused_argv):
  if FLAGS.staging_dir:  # where checkpoint_utils makes its local copies
    os.makedirs(FLAGS.staging_dir, exist_ok=True)
    os.environ["YT8M_STORAGE_CACHE"] = FLAGS.staging_dir
  mode, selected = select_checkpoints(
      prefix=FLAGS.prefix, checkpoints=FLAGS.checkpoints,
      checkpoints_start_end=FLAGS.checkpoints_start_end,
      num_last_checkpoints=FLAGS.num_last_checkpoints)
  steps = [checkpoint_utils.parse_step(ckpt) for ckpt in selected]
  logging.info("mode: --%s; %d checkpoints selected, steps (in order): %s", mode,
               len(selected), ", ".join("?" if s is None else str(s) for s in steps))
  output_prefix = FLAGS.output_path + "-0"
  if FLAGS.prefix and output_prefix.startswith(FLAGS.prefix) and (
      output_prefix[len(FLAGS.prefix):].isdigit()):
    logging.warning("the output %s matches '--prefix<step>': later range / last-N runs "
                    "will select it as a training checkpoint", output_prefix)
  summary = average_checkpoints(selected, output_prefix,
                                exclude_optimizer_slots=FLAGS.exclude_optimizer_slots)
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


if __name__ == "__main__":
  define_flags()
  app.run(main)
