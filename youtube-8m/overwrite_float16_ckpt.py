r"""Fills an in-graph ensemble checkpoint with the weights of single models (seed step 3).

    python -m youtube-8m.overwrite_float16_ckpt --train_dir=ENSEMBLE_DIR \
        --inference_model=inference_model_10 --out_name=inference_model_ensemble_YHLS \
        --checkpoints="single/c24h1440-inference_model_0,single/c32h1024-inference_model_0,..."

The template ``ENSEMBLE_DIR/<inference_model>`` is the 32*n+1-tensor checkpoint that
``eval.py --create_meta_only`` writes for the n-model ensemble graph (float16 kernels with
--float16_flag). Its variables are filled from the single-model checkpoints given in model
order, and the result is written as ``ENSEMBLE_DIR/<out_name>-0.{data-00000-of-00001,index,
meta}``; the ``.meta`` is a copy of the template's clean inference meta graph, so the output
can be evaluated with ``eval.py --checkpoint_file=<out_name>-0`` and used by inference.py.

Mapping (exact, by scope component; works for any number of models):
* model 0 lives directly in ``tower/``: template ``tower/X`` <- ``tower/X`` of source 0;
* model i >= 1 lives in ``tower/model{i}/``: template ``tower/model{i}/X`` <- ``tower/X`` of
  source i (``model1`` never matches ``model10``);
* ``global_step`` is written as 0 (the template's dtype, int32).

Before anything is written the tool checks that the number of sources equals the number of
models in the template, that every template variable has its source variable with the same
shape and a convertible dtype; errors name the variable and the source. Each value is
converted ONCE from the source's stored dtype to the template's (float32 -> float16 rounds
to nearest even for the four float16 kernels of each model; everything else is copied).

Memory: one variable at a time is read from its source and converted into a 64-byte
aligned array of the output dtype; the arrays are then written by one SaveV2 op
(checkpoint_utils.write_checkpoint_tensors, shared with avg_checkpoints). The peak is about
the output size (~2.1 bytes per parameter for a float16 ensemble) + the largest source
tensor + the TensorFlow runtime, instead of the original's 8 bytes per parameter (float64
copies) plus TensorFlow's copies. Measured on the seed's 4-model ensemble (510,054,040
parameters, scripts/bench_ensemble.py): peak RSS 1528 MiB, of which 491 MiB is the
TensorFlow runtime (3.1 bytes per parameter in all; the original needed more than 4 GB).
Output files are written under a temporary prefix and renamed (index last); the
train_dir's ``checkpoint`` state file is never touched.

Cloud Storage: --train_dir and every --checkpoints entry may be gs:// URLs (through
storage.py; STORAGE_EMULATOR_HOST selects a local emulator). Existence is checked first
(errors name the gs:// path), then the template and the sources are downloaded into a
temporary local directory for TensorFlow to read (removed at the end); a gs:// output is
written locally and then uploaded: data file, ``.meta``, and the ``.index`` last (nothing is
uploaded on error).
"""

import atexit
import contextlib
import os
import re
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from . import checkpoint_utils
from . import progress as progress_lib
from . import storage
from . import utils

FLAGS = flags.FLAGS

GLOBAL_STEP = "global_step"
DEFAULT_OUT_NAME = "inference_model_float16_mean_ensemble"
_MODEL_SCOPE_RE = re.compile(r"^model(\d+)$")


class EnsembleCheckpointError(ValueError):
  """A problem with the template or the source checkpoints; nothing has been written."""


def define_flags():
  flags.DEFINE_string("train_dir", "/tmp/yt8m_model/",
                      "Ensemble directory: holds the template checkpoint; the output goes here.")
  flags.DEFINE_string("inference_model", "",
                      "Template checkpoint prefix relative to train_dir, e.g. inference_model_10 "
                      "(written by eval.py --create_meta_only on the ensemble graph).")
  flags.DEFINE_string("out_name", DEFAULT_OUT_NAME,
                      "Output prefix relative to train_dir; '-0' is appended.")
  flags.DEFINE_string("checkpoints", "",
                      "Comma list of the single-model checkpoint prefixes (full paths, a "
                      "'.index' suffix is accepted), one per model of the template, in model "
                      "order.")


# ---------------------------------------------------------------------------------------
# gs:// checkpoints: TensorFlow reads and writes local files only.


class CheckpointStager(object):
  """Local copies of gs:// checkpoints for TensorFlow to read (local prefixes pass through).

  local(prefix) downloads a gs:// checkpoint's files once (checkpoint_utils.local_copy);
  close() removes them all.
  """

  def __init__(self):
    self._stack = contextlib.ExitStack()
    self._local = {}

  def local(self, prefix):
    if prefix not in self._local:
      start = time.time()
      local = self._stack.enter_context(checkpoint_utils.local_copy(prefix))
      if local != prefix:
        logging.info("Staged %s (%.1f MiB) in %.1f s", prefix, sum(
            os.path.getsize(p) for p in storage.glob(local + ".*")) / 2.0**20,
                     time.time() - start)
      self._local[prefix] = local
    return self._local[prefix]

  def close(self):
    self._stack.close()
    self._local = {}


# Shared by specs_from_checkpoint and read_plan_tensors, so that each gs:// checkpoint is
# downloaded once; overwrite() and build_ensemble's main() close it when done (and atexit).
STAGED = CheckpointStager()
atexit.register(STAGED.close)


def same_path(a, b):
  if storage.is_gcs(a) or storage.is_gcs(b):
    return a == b
  return os.path.abspath(a) == os.path.abspath(b)


# ---------------------------------------------------------------------------------------
# Mapping and checks.


def parse_checkpoint_list(value, flag_name="--checkpoints"):
  """'a,b.index, c' -> ['a', 'b', 'c'] (suffixes .index/.meta/.data-* stripped)."""
  names = [checkpoint_utils.strip_checkpoint_suffix(part.strip())
           for part in (value or "").split(",") if part.strip()]
  if not names:
    raise EnsembleCheckpointError("%s is empty: give the single-model checkpoints, one per "
                                  "model, in model order" % flag_name)
  return names


def model_of(name):
  """(model index, source variable name) of an ensemble variable name.

  'tower/model3/gates/weights' -> (3, 'tower/gates/weights'); names without a 'model{i}'
  scope component belong to model 0 and keep their name.
  """
  parts = name.split("/")
  hits = [k for k, part in enumerate(parts[:-1]) if _MODEL_SCOPE_RE.match(part)]
  if not hits:
    return 0, name
  if len(hits) > 1:
    raise EnsembleCheckpointError("template variable %r has %d model{i} scopes; expected at "
                                  "most one" % (name, len(hits)))
  digits = _MODEL_SCOPE_RE.match(parts[hits[0]]).group(1)
  index = int(digits)
  if index == 0 or digits != str(index):
    raise EnsembleCheckpointError(
        "template variable %r: scope %r is not a model scope of the ensemble graph (model i "
        ">= 1 lives in tower/model{i}/, model 0 directly in tower/)" % (name, parts[hits[0]]))
  return index, "/".join(parts[:hits[0]] + parts[hits[0] + 1:])


def specs_from_checkpoint(prefix):
  """{name: (shape tuple, tf.DType)} of the variables stored in a checkpoint (local or
  gs://: staged by STAGED)."""
  try:
    reader = tf.train.load_checkpoint(STAGED.local(prefix))
  except (tf.errors.OpError, ValueError) as error:
    raise EnsembleCheckpointError("cannot read checkpoint %s: %s" % (prefix, error))
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  return {name: (tuple(int(d) for d in shapes[name]), dtypes[name]) for name in shapes}


def specs_from_graph(graph):
  """{name: (shape tuple, tf.DType)} of a graph's global variables."""
  with graph.as_default():
    variables = tf.compat.v1.global_variables()
  return {v.op.name: (tuple(v.shape.as_list()), v.dtype.base_dtype) for v in variables}


def nbytes(shape, dtype):
  return int(np.prod(shape, dtype=np.int64)) * tf.as_dtype(dtype).size


def _preview(items, limit=8):
  shown = items[:limit]
  more = " (and %d more)" % (len(items) - limit) if len(items) > limit else ""
  return "; ".join(shown) + more


def source_label(index, prefix):
  scope = "tower/" if index == 0 else "tower/model%d/" % index
  return "source %d (--checkpoints entry %d, model %d in %s): %s" % (index, index + 1, index,
                                                                   scope, prefix)


class Plan(object):
  """What to write: one entry per template variable, checked against the sources."""

  def __init__(self, template_specs, sources, items, global_step_dtype, source_specs):
    self.template_specs = template_specs
    self.sources = sources
    self.items = items  # [(target name, shape, target dtype, source index, source name)]
    self.global_step_dtype = global_step_dtype
    self.source_specs = source_specs

  @property
  def num_models(self):
    return len(self.sources)

  def output_bytes(self):
    return sum(nbytes(shape, dtype) for _, shape, dtype, _, _ in self.items) + tf.as_dtype(
        self.global_step_dtype).size

  def parameters(self):
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape, _, _, _ in self.items)


def plan_ensemble(template_specs, sources, template_name="the template", outputs=()):
  """Checks the template against the sources and returns the Plan (no data is read).

  Args:
    template_specs: {name: (shape, tf.DType)} of the ensemble checkpoint to write.
    sources: single-model checkpoint prefixes, one per model, in model order.
    template_name: how to name the template in messages.
    outputs: prefixes that will be written (must not be a source).
  """
  per_model = {}
  global_step_dtype = tf.int32
  for name, (shape, dtype) in template_specs.items():
    if name == GLOBAL_STEP:
      if shape != ():
        raise EnsembleCheckpointError("%s: global_step is not a scalar (shape %s)"
                                      % (template_name, list(shape)))
      global_step_dtype = dtype
      continue
    index, source_name = model_of(name)
    per_model.setdefault(index, []).append((name, shape, dtype, source_name))
  if not per_model:
    raise EnsembleCheckpointError("%s holds no model variables" % template_name)
  num_models = max(per_model) + 1
  absent = [str(i) for i in range(num_models) if i not in per_model]
  if absent:
    raise EnsembleCheckpointError(
        "%s has variables of model(s) up to %d but none of model(s) %s" % (
            template_name, num_models - 1, ", ".join(absent)))
  if len(sources) != num_models:
    raise EnsembleCheckpointError(
        "--checkpoints gives %d source checkpoint(s) but %s holds %d models (tower/%s): give "
        "exactly one single-model checkpoint per model, in model order" % (
            len(sources), template_name, num_models,
            "".join(", tower/model%d/" % i for i in range(1, num_models))))
  for index, prefix in enumerate(sources):  # all checked before anything is downloaded
    if not checkpoint_utils.checkpoint_exists(prefix):
      raise EnsembleCheckpointError("%s does not exist (no file %s.index)"
                                    % (source_label(index, prefix), prefix))
    if any(same_path(prefix, output) for output in outputs):
      raise EnsembleCheckpointError("%s is also the output; choose another output name"
                                    % source_label(index, prefix))
  source_specs = [specs_from_checkpoint(prefix) for prefix in sources]

  items, problems = [], []
  for index in range(num_models):
    available = source_specs[index]
    for name, shape, dtype, source_name in sorted(per_model[index]):
      where = source_label(index, sources[index])
      if source_name not in available:
        problems.append("%s has no variable %r (needed for %s variable %r)" % (
            where, source_name, template_name, name))
        continue
      source_shape, source_dtype = available[source_name]
      if source_shape != shape:
        problems.append("variable %r has shape %s in %s but %s variable %r needs %s" % (
            source_name, list(source_shape), where, template_name, name, list(shape)))
        continue
      if source_dtype != dtype and not (source_dtype.is_floating and dtype.is_floating):
        problems.append("variable %r is %s in %s but %s variable %r is %s (only floating "
                        "types are converted)" % (source_name, source_dtype.name, where,
                                                 template_name, name, dtype.name))
        continue
      items.append((name, shape, dtype, index, source_name))
  if problems:
    raise EnsembleCheckpointError("%d problem(s): %s" % (len(problems), _preview(problems)))
  return Plan(template_specs, list(sources), items, global_step_dtype, source_specs)


# ---------------------------------------------------------------------------------------
# Writing.


def _convert(value, target_dtype):
  """value as a new aligned array of target_dtype: one rounding for float -> float16."""
  out = checkpoint_utils.aligned_empty(value.shape, target_dtype.as_numpy_dtype)
  with np.errstate(over="ignore"):  # overflows are counted and reported by the caller
    np.copyto(out, value, casting="unsafe")
  return out


def read_plan_tensors(plan):
  """{name: aligned ndarray} for every planned variable, read one source tensor at a time.

  Largest first: each big source tensor (transient) is read while few results are held.
  Returns (tensors, stats) where stats counts rounded / overflowing values.
  """
  readers = [tf.train.load_checkpoint(STAGED.local(prefix)) for prefix in plan.sources]
  stats = {"rounded_tensors": 0, "overflow_values": 0, "by_dtype": {}}
  tensors = {}
  order = sorted(plan.items, key=lambda item: (
      -nbytes(item[1], plan.source_specs[item[3]][item[4]][1]), item[0]))
  progress = progress_lib.Progress("converting the ensemble tensors", plan.output_bytes(),
                                   "MiB", scale=2**20)
  for name, shape, dtype, index, source_name in order:
    try:
      value = np.asarray(readers[index].get_tensor(source_name))
    except tf.errors.OpError as error:
      raise EnsembleCheckpointError("cannot read variable %r from %s: %s" % (
          source_name, source_label(index, plan.sources[index]), error))
    out = _convert(value, dtype)
    if value.dtype != out.dtype:
      stats["rounded_tensors"] += 1
      if out.dtype.kind == "f" and np.isinf(out).any():
        overflow = int(np.count_nonzero(np.isinf(out)) - np.count_nonzero(np.isinf(value)))
        if overflow:
          stats["overflow_values"] += overflow
          logging.warning("%s: %d value(s) of %r overflow %s and became +-inf", name,
                          overflow, source_name, dtype.name)
    del value
    tensors[name] = out
    stats["by_dtype"][dtype.name] = stats["by_dtype"].get(dtype.name, 0) + 1
    progress.update(int(out.nbytes))
  progress.finish()
  global_step = checkpoint_utils.aligned_empty((), plan.global_step_dtype.as_numpy_dtype)
  global_step[...] = 0
  tensors[GLOBAL_STEP] = global_step
  return tensors, stats


def write_plan(plan, output_prefix, meta_fn):
  """Reads, converts and writes the planned checkpoint atomically; returns a summary dict.

  meta_fn(tmp_prefix) writes '<tmp_prefix>.meta' (always a local path); the checkpoint is
  published by checkpoint_utils.write_checkpoint (index last; uploaded if gs://).
  """
  start = time.time()
  tensors, stats = read_plan_tensors(plan)

  def write(tmp_prefix):
    checkpoint_utils.write_checkpoint_tensors(tmp_prefix, tensors)
    meta_fn(tmp_prefix)

  storage.makedirs(os.path.dirname(output_prefix))
  checkpoint_utils.write_checkpoint(output_prefix, write)
  data_bytes = sum(int(t.nbytes) for t in tensors.values())
  tensors.clear()  # free the arrays before the caller goes on
  return {
      "output_prefix": output_prefix,
      "tensors": len(plan.items) + 1,
      "parameters": plan.parameters(),
      "data_bytes": data_bytes,
      "rounded_tensors": stats["rounded_tensors"],
      "overflow_values": stats["overflow_values"],
      "by_dtype": stats["by_dtype"],
      "peak_rss_mib": checkpoint_utils.peak_rss_mib(),
      "seconds": time.time() - start,
  }


def log_summary(plan, summary):
  for index, prefix in enumerate(plan.sources):
    count = sum(1 for item in plan.items if item[3] == index)
    params = sum(int(np.prod(item[1], dtype=np.int64)) for item in plan.items
                 if item[3] == index)
    unused = len(plan.source_specs[index]) - count - (
        1 if GLOBAL_STEP in plan.source_specs[index] else 0)
    logging.info("model %d (%s) <- %s: %d variables, %d parameters%s", index,
                 "tower/" if index == 0 else "tower/model%d/" % index, prefix, count, params,
                 " (%d other variables of the source not used)" % unused if unused else "")
  logging.info("Wrote %s: %d tensors (%s + global_step=0), %d parameters, %d bytes of "
               "tensor data; %d tensors rounded to a narrower type", summary["output_prefix"],
               summary["tensors"], ", ".join("%d %s" % (n, d) for d, n in
                                             sorted(summary["by_dtype"].items())),
               summary["parameters"], summary["data_bytes"], summary["rounded_tensors"])
  logging.info("Peak memory %.1f MiB (%.2f bytes per parameter) in %.1f s",
               summary["peak_rss_mib"],
               summary["peak_rss_mib"] * 2**20 / max(summary["parameters"], 1),
               summary["seconds"])


def overwrite(template_prefix, sources, output_prefix):
  """The seed's step 3: the template's variables filled from sources; returns the summary.

  Any of the paths may be gs://; local copies of gs:// checkpoints are removed at the end.
  """
  try:
    return _overwrite(template_prefix, sources, output_prefix)
  finally:
    STAGED.close()


def _overwrite(template_prefix, sources, output_prefix):
  if not checkpoint_utils.checkpoint_exists(template_prefix):
    raise EnsembleCheckpointError(
        "--inference_model: no template checkpoint %s (missing %s.index); write it with "
        "eval.py --create_meta_only on the ensemble train_dir" % (template_prefix,
                                                                 template_prefix))
  if not storage.exists(template_prefix + ".meta"):
    raise EnsembleCheckpointError(
        "--inference_model: the template %s has no .meta (the output's meta graph is a copy "
        "of it); write it with eval.py --create_meta_only" % template_prefix)
  if same_path(output_prefix, template_prefix):
    raise EnsembleCheckpointError("the output %s would replace the template; choose another "
                                  "--out_name" % output_prefix)
  template_specs = specs_from_checkpoint(template_prefix)
  plan = plan_ensemble(template_specs, sources, "template %s" % template_prefix,
                       outputs=[output_prefix])

  def copy_meta(tmp_prefix):
    storage.copy(STAGED.local(template_prefix) + ".meta", tmp_prefix + ".meta")

  summary = write_plan(plan, output_prefix, copy_meta)
  log_summary(plan, summary)
  return summary


@utils.tool_main
def main(argv):
  if len(argv) > 1:
    raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
  if not FLAGS.inference_model:
    raise EnsembleCheckpointError("--inference_model is required (the template checkpoint, "
                                  "e.g. inference_model_10)")
  if not FLAGS.out_name:
    raise EnsembleCheckpointError("--out_name is empty")
  sources = parse_checkpoint_list(FLAGS.checkpoints)
  template = checkpoint_utils.resolve_checkpoint(FLAGS.train_dir, FLAGS.inference_model)
  output_prefix = checkpoint_utils.resolve_checkpoint(FLAGS.train_dir, FLAGS.out_name + "-0")
  overwrite(template, sources, output_prefix)
  logging.info("Evaluate it with: python -m youtube-8m.eval --train_dir=%s "
               "--checkpoint_file=%s-0 ...", FLAGS.train_dir, FLAGS.out_name)


if __name__ == "__main__":
  define_flags()
  app.run(main)
