"""The in-graph ensemble checkpoint: planned (checked) from single-model checkpoints, then filled.

Model 0's variables are ``tower/X`` <- ``tower/X`` of source 0; model i >= 1's are
``tower/model{i}/X`` <- ``tower/X`` of source i (``model1`` never matches ``model10``);
``global_step`` is written as 0. Each value is converted into the template's dtype (float16
rounds to nearest even; a uint8 kernel and its ``_quantization`` codebook are both made from
the source's float kernel by quantization.quantize).
"""

import dataclasses
import re
import time

import numpy as np
import tensorflow as tf
from absl import logging

from . import checkpoint_utils
from . import quantization

GLOBAL_STEP = checkpoint_utils.GLOBAL_STEP
CheckpointToolError = checkpoint_utils.CheckpointToolError
_MODEL_SCOPE_RE = re.compile(r"^model(\d+)$")


def parse_checkpoint_list(value, flag_name="--checkpoints"):
  """'a,b.index, c' -> ['a', 'b', 'c'] (suffixes .index/.meta/.data-* stripped)."""
  names = [checkpoint_utils.strip_checkpoint_suffix(part.strip())
           for part in (value or "").split(",") if part.strip()]
  if not names:
    raise CheckpointToolError("%s is empty: give the single-model checkpoints, one per "
                              "model, in model order" % flag_name)
  return names


def model_of(name):
  """(model index, source variable name): 'tower/model3/gates/weights' -> (3,
  'tower/gates/weights'); a name without a 'model{i}' component is model 0's, unchanged."""
  parts = name.split("/")
  hits = [k for k, part in enumerate(parts[:-1]) if _MODEL_SCOPE_RE.match(part)]
  if not hits:
    return 0, name
  digits = _MODEL_SCOPE_RE.match(parts[hits[0]]).group(1)
  if len(hits) > 1 or digits != str(int(digits)) or int(digits) == 0:
    raise CheckpointToolError(
        "template variable %r is not in one model scope of the ensemble graph (model i >= 1 "
        "lives in tower/model{i}/, model 0 directly in tower/)" % name)
  return int(digits), "/".join(parts[:hits[0]] + parts[hits[0] + 1:])


def specs_from_checkpoint(prefix, copies):
  """{name: (shape tuple, tf.DType)} of a checkpoint's variables (copies: a LocalCopies)."""
  return checkpoint_utils.variable_specs(checkpoint_utils.load_reader(prefix, copies))


def specs_from_graph(graph):
  """{name: (shape tuple, tf.DType)} of a graph's global variables."""
  with graph.as_default():
    variables = tf.compat.v1.global_variables()
  return {v.op.name: (tuple(v.shape.as_list()), v.dtype.base_dtype) for v in variables}


def source_label(index, prefix):
  scope = "tower/" if index == 0 else "tower/model%d/" % index
  return "source %d (--checkpoints entry %d, model %d in %s): %s" % (index, index + 1, index,
                                                                   scope, prefix)


@dataclasses.dataclass
class Plan:
  """What to write: one entry per template variable, checked against the sources."""
  sources: list
  items: list  # [(target name, shape, target dtype, source index, source name)]
  global_step_dtype: tf.DType
  source_specs: list  # per source, {name: (shape, tf.DType)}

  def output_bytes(self):
    return self.global_step_dtype.size + sum(
        checkpoint_utils.nbytes(shape, dtype) for _, shape, dtype, _, _ in self.items)

  def parameters(self, index=None):
    """Parameters of all planned variables (or of model index's only)."""
    return sum(int(np.prod(item[1], dtype=np.int64)) for item in self.items
               if index is None or item[3] == index)


def check_sources(sources, outputs=()):
  """Raises unless every source exists and none is one of the outputs (nothing is read)."""
  for index, prefix in enumerate(sources):
    if not checkpoint_utils.checkpoint_exists(prefix):
      raise CheckpointToolError("%s does not exist (no file %s.index)"
                                % (source_label(index, prefix), prefix))
    if any(checkpoint_utils.same_path(prefix, output) for output in outputs):
      raise CheckpointToolError("%s is also the output; choose another output name"
                                % source_label(index, prefix))


def plan_ensemble(template_specs, sources, copies, template_name="the template", outputs=()):
  """The checked Plan of template_specs {name: (shape, dtype)} from sources (one per model, in
  order), none of them one of outputs (the prefixes to write); reads no tensor."""
  per_model = {}
  global_step_dtype = tf.int32
  for name, (shape, dtype) in template_specs.items():
    if name == GLOBAL_STEP:
      if shape != ():
        raise CheckpointToolError("%s: global_step is not a scalar (shape %s)"
                                  % (template_name, list(shape)))
      global_step_dtype = dtype
      continue
    index, source_name = model_of(name)
    per_model.setdefault(index, []).append((name, shape, dtype, source_name))
  if not per_model:
    raise CheckpointToolError("%s holds no model variables" % template_name)
  num_models = max(per_model) + 1
  absent = [str(i) for i in range(num_models) if i not in per_model]
  if absent:
    raise CheckpointToolError(
        "%s has variables of model(s) up to %d but none of model(s) %s" % (
            template_name, num_models - 1, ", ".join(absent)))
  if len(sources) != num_models:
    raise CheckpointToolError(
        "--checkpoints gives %d source checkpoint(s) but %s holds %d models (tower/%s): give "
        "exactly one single-model checkpoint per model, in model order" % (
            len(sources), template_name, num_models,
            "".join(", tower/model%d/" % i for i in range(1, num_models))))
  check_sources(sources, outputs)
  source_specs = [specs_from_checkpoint(prefix, copies) for prefix in sources]
  items, problems = [], []
  for index in range(num_models):
    where = source_label(index, sources[index])
    for name, shape, dtype, source_name in sorted(per_model[index]):
      # An 8-bit kernel's codebook is made from the source's float kernel.
      source_name = quantization.kernel_of_codebook(source_name) or source_name
      if source_name not in source_specs[index]:
        problems.append("%s has no variable %r (needed for %s variable %r)" % (
            where, source_name, template_name, name))
        continue
      problem = _conversion_problem(name, shape, dtype, source_name,
                                    source_specs[index][source_name], where, template_name)
      if problem:
        problems.append(problem)
      else:
        items.append((name, shape, dtype, index, source_name))
  if problems:
    raise CheckpointToolError("%d problem(s): %s" % (
        len(problems), checkpoint_utils.join_problems(problems, 8)))
  return Plan(list(sources), items, global_step_dtype, source_specs)


def _conversion_problem(name, shape, dtype, source_name, source_spec, where, template_name):
  """Why the source variable (source_spec: (shape, dtype)) cannot give the template's
  variable name (shape, dtype), or None."""
  source_shape, source_dtype = source_spec
  if quantization.kernel_of_codebook(name) is not None:
    if not (source_dtype.is_floating and len(source_shape) == 2
            and shape == (2, source_shape[1])):
      return "variable %r (%s %s) in %s cannot give %s's codebook %r %s" % (
          source_name, source_dtype.name, list(source_shape), where, template_name, name,
          list(shape))
  elif source_shape != shape:
    return "variable %r has shape %s in %s but %s variable %r needs %s" % (
        source_name, list(source_shape), where, template_name, name, list(shape))
  elif source_dtype != dtype and not (source_dtype.is_floating and (
      dtype.is_floating or dtype == tf.uint8)):
    return ("variable %r is %s in %s but %s variable %r is %s (only floating types are "
            "converted, to float or 8-bit codes)" % (source_name, source_dtype.name, where,
                                                     template_name, name, dtype.name))
  return None


def write_plan(plan, copies, output_prefix, meta_fn):
  """Writes the plan's converted tensors (largest first) atomically, meta_fn(tmp_prefix) the
  '<tmp_prefix>.meta'; returns a summary dict."""
  start = time.time()
  readers = [checkpoint_utils.load_reader(prefix, copies) for prefix in plan.sources]
  stats = {"rounded_tensors": 0, "overflow_values": 0, "quantized_tensors": 0, "by_dtype": {}}
  items = {item[0]: item for item in plan.items}
  codebooks = {}  # (source index, kernel name) -> the codebook of codes already converted

  def convert(name):
    _, _, dtype, index, source_name = items[name]
    stats["by_dtype"][dtype.name] = stats["by_dtype"].get(dtype.name, 0) + 1
    is_codebook = quantization.kernel_of_codebook(name) is not None
    if is_codebook and (index, source_name) in codebooks:
      return codebooks.pop((index, source_name))
    with checkpoint_utils.reading(plan.sources[index], copies.local(plan.sources[index])):
      value = np.asarray(readers[index].get_tensor(source_name))
    if dtype == tf.uint8 or is_codebook:
      codes, codebook = quantization.quantize(value)
      stats["quantized_tensors"] += 1
      if is_codebook:
        return codebook
      codebooks[(index, source_name)] = codebook
      return codes
    out = checkpoint_utils.aligned_empty(value.shape, dtype.as_numpy_dtype)
    with np.errstate(over="ignore"):  # overflows are counted and reported below
      np.copyto(out, value, casting="unsafe")
    if value.dtype != out.dtype:
      stats["rounded_tensors"] += 1
      overflow = int(np.count_nonzero(np.isinf(out)) - np.count_nonzero(np.isinf(value)))
      if overflow:
        stats["overflow_values"] += overflow
        logging.warning("%s: %d value(s) of %r overflow %s and became +-inf", name,
                        overflow, source_name, dtype.name)
    return out

  tensors = checkpoint_utils.convert_largest_first([
      (name, checkpoint_utils.nbytes(shape, plan.source_specs[index][source][1]),
       checkpoint_utils.nbytes(shape, dtype)) for name, shape, dtype, index, source in plan.items
  ], convert, "converting the ensemble tensors")
  data_bytes = checkpoint_utils.write_tensors(output_prefix, tensors, plan.global_step_dtype,
                                              meta_fn)
  summary = dict(stats, output_prefix=output_prefix, tensors=len(plan.items) + 1,
                 parameters=plan.parameters(), data_bytes=data_bytes,
                 peak_rss_mib=checkpoint_utils.peak_rss_mib(), seconds=time.time() - start)
  _log_written(plan, summary)
  return summary


def _log_written(plan, summary):
  """Logs what write_plan wrote: per member, then the totals and the peak memory."""
  for index, prefix in enumerate(plan.sources):
    count = sum(1 for item in plan.items if item[3] == index)
    used = {item[4] for item in plan.items if item[3] == index}  # a kernel gives 2 if 8-bit
    unused = len(set(plan.source_specs[index]) - {GLOBAL_STEP} - used)
    logging.info("model %d (%s) <- %s: %d variables, %d parameters%s", index,
                 "tower/" if index == 0 else "tower/model%d/" % index, prefix, count,
                 plan.parameters(index),
                 " (%d other variables of the source not used)" % unused if unused else "")
  logging.info("Wrote %s: %d tensors (%s + global_step=0), %d parameters, %d bytes of "
               "tensor data; %d tensors rounded to a narrower type, %d kernels quantized to 8 "
               "bits", summary["output_prefix"], summary["tensors"], ", ".join(
                   "%d %s" % (n, d) for d, n in sorted(summary["by_dtype"].items())),
               summary["parameters"], summary["data_bytes"], summary["rounded_tensors"],
               summary["quantized_tensors"])
  logging.info("Peak memory %.1f MiB (%.2f bytes per parameter) in %.1f s",
               summary["peak_rss_mib"], summary["peak_rss_mib"] * 2**20 / max(
                   summary["parameters"], 1), summary["seconds"])
