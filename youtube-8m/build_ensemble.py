r"""One command from single-model checkpoints to the (float16) in-graph ensemble inference model.

    python -m youtube-8m.build_ensemble --train_dir=ENS --checkpoints=CKPT1,CKPT2 \
        [--netvlad_cluster_size=K --netvlad_hidden_size=H --ensemble_wts=W]... --gating=True \
        [--kernel_storage=float32|float16|uint8]...

writes ``<train_dir>/<output_name>.{data-00000-of-00001,index,meta}`` and model_flags.json as
the original's four ensemble commands would; nothing on error. --kernel_storage (once per
model) stores its large kernels as float32, float16 or 8-bit codes (default: --float16_flag's).

    python -m youtube-8m.build_ensemble --train_dir=ENS --candidates=CKPT1,CKPT2,... \
        --eval_data_pattern=... [--size_limit_bytes=N] [--storages=float32,float16,uint8]

chooses the members, their storages and weights that maximise the held-out GAP under
--size_limit_bytes (budget_build.py).
"""

import os

from absl import app
from absl import flags
from absl import logging

from . import budget_build
from . import checkpoint_utils
from . import ensemble_budget
from . import ensemble_checkpoint
from . import ensemble_weights
from . import model_graph
from . import readers
from . import storage
from . import utils

FLAGS = flags.FLAGS
CheckpointToolError = checkpoint_utils.CheckpointToolError

# Defaults that differ from train.py's: frame-level NetVLAD models with float16 kernels.
DEFAULTS = {"float16_flag": True, "frame_features": True, "feature_names": "rgb,audio",
            "feature_sizes": "1024,128", "model": "NetVLADModelLF"}
CLUSTER_VARIABLE = "tower/video_VLAD/conv2/cluster_weights"
HIDDEN_VARIABLE = "tower/hidden1_weights/hidden1_weights"
# Set per member / by this tool, not taken from a member's model_flags.json.
PER_MODEL_KEYS = ("ensemble_num", "netvlad_cluster_size", "netvlad_hidden_size",
                  "ensemble_wts", "float16_flag", "model", "kernel_storage")
SIZE_LIMIT = 2**30  # the competition's limit on the submission's model files


def define_flags():
  utils.define_shared_flags(__name__, model_graph.define_flags, lambda: (
      ensemble_weights.define_held_out_flags("Budgeted build: ")))
  flags.DEFINE_string("train_dir", None, "Output directory of the ensemble (created if missing).")
  flags.DEFINE_string("checkpoints", None,
                      "Comma list of the single-model checkpoint prefixes (a '.index' suffix is "
                      "accepted), one per model, in model order.")
  flags.DEFINE_string("output_name", "inference_model",
                      "Checkpoint prefix of the result inside --train_dir.")
  flags.DEFINE_bool("use_member_model_flags", True,
                    "Take model flags not given here from the model_flags.json next to each "
                    "checkpoint (and check given ones against it).")
  flags.DEFINE_bool("dry_run", False,
                    "Check the inputs and print the planned submission bytes against the "
                    "2^30 B limit, then stop before writing anything.")
  flags.DEFINE_string("candidates", None,
                      "Budgeted build: comma list of single-model checkpoints to choose the "
                      "members from (instead of --checkpoints).")
  flags.DEFINE_integer("size_limit_bytes", SIZE_LIMIT,
                       "Budgeted build: limit of the submission's model files as model_size "
                       "counts them (default 2^30, the competition's).")
  flags.DEFINE_string("storages", ",".join(model_graph.KERNEL_STORAGES),
                      "Budgeted build: the kernel storages to consider for each candidate.")
  flags.DEFINE_integer("beam_width", 4, "Budgeted build: sets kept per size in the search.")
  for name, value in DEFAULTS.items():
    FLAGS.set_default(name, value)


def member_model_flags(checkpoint):
  """(path, dict) of the single-model model_flags.json next to a checkpoint, or (path, None)."""
  directory = os.path.dirname(checkpoint) or "."
  path = utils.model_flags_path(directory)
  stored = model_graph.read_stored_flags(directory, required=False)
  if stored is not None and int(stored.get("ensemble_num", 1)) != 1:
    logging.warning("%s describes an ensemble (ensemble_num=%s), not the single model %s: "
                    "ignored", path, stored.get("ensemble_num"), checkpoint)
    stored = None
  return path, stored


def _per_model_values(name, explicit, count, from_shapes):
  """The per-model list of a repeated flag: explicit (count checked), else from_shapes."""
  if name not in explicit:
    return list(from_shapes)
  values = list(explicit[name])
  if len(values) != count:
    raise CheckpointToolError(
        "--%s was given %d time(s) (%s) but --checkpoints lists %d models: give it once per "
        "model, in model order" % (name, len(values), values, count))
  return values


def _members_value(name, explicit, member_jsons, default):
  """A shared flag's value: explicit (checked against the members' jsons if strict), else
  the members' one value, else default (with a warning if they disagree)."""
  stored = [(index, path, values[name]) for index, (path, values) in enumerate(member_jsons)
            if values is not None and name in values]
  strict = name in model_graph.STRICT_KEYS
  if name in explicit:
    for index, path, value in stored:
      if strict and value != explicit[name]:
        raise CheckpointToolError(
            "model %d: --%s=%r but %s says %s=%r: the ensemble graph would not be the "
            "network the model was trained as (omit the flag to take the members' value)"
            % (index, name, explicit[name], path, name, value))
    return explicit[name]
  values = [value for _, _, value in stored]
  if all(value == values[0] for value in values):
    return values[0] if values else default
  listed = ", ".join("model %d: %r" % (index, value) for index, _, value in stored)
  if strict:
    raise CheckpointToolError("the members disagree on %s (%s, from their model_flags.json); "
                             "one ensemble graph needs one value" % (name, listed))
  logging.warning("the members were trained with different %s (%s); using --%s=%r", name,
                  listed, name, default)
  return default


def assemble_config(checkpoints, explicit, member_jsons, source_specs):
  """The ensemble's ModelConfig from explicit {flag: value} and per model (json path, dict or
  None) and {variable: (shape, dtype)}; CheckpointToolError names the model and flag."""
  count = len(checkpoints)
  if "ensemble_num" in explicit and explicit["ensemble_num"] != count:
    raise CheckpointToolError("--ensemble_num=%d but --checkpoints lists %d checkpoints (one "
                             "per model)" % (explicit["ensemble_num"], count))
  values = {"ensemble_num": count, "model": explicit.get("model") or DEFAULTS["model"],
            "float16_flag": explicit.get("float16_flag", DEFAULTS["float16_flag"])}
  for name, variable in (("netvlad_cluster_size", CLUSTER_VARIABLE),
                         ("netvlad_hidden_size", HIDDEN_VARIABLE)):
    from_shapes = []
    for index, (prefix, specs) in enumerate(zip(checkpoints, source_specs)):
      if variable not in specs or len(specs[variable][0]) != 2:
        raise CheckpointToolError(
            "model %d: checkpoint %s has no 2-D variable %r; is it a single NetVLADModelLF "
            "checkpoint (variables named tower/...)?" % (index, prefix, variable))
      from_shapes.append(specs[variable][0][1])
    values[name] = _per_model_values(name, explicit, count, from_shapes)
    for index, given in enumerate(values[name]):
      if given != from_shapes[index]:
        raise CheckpointToolError(
            "model %d: --%s=%d (occurrence %d) but checkpoint %s has %s of shape %s, i.e. "
            "%s=%d" % (index, name, given, index + 1, checkpoints[index], variable,
                       list(source_specs[index][variable][0]), name, from_shapes[index]))
      path, stored = member_jsons[index]
      if stored is not None and name in stored and list(stored[name]) != [given]:
        raise CheckpointToolError("model %d: %s says %s=%s but the checkpoint %s has %d" % (
            index, path, name, stored[name], checkpoints[index], given))
  # Each model's storage (float32, float16, uint8): --kernel_storage, else --float16_flag's.
  values["kernel_storage"] = _per_model_values("kernel_storage", explicit, count, [])
  if "ensemble_wts" in explicit and count > 1:
    values["ensemble_wts"] = _per_model_values("ensemble_wts", explicit, count, None)
  else:
    values["ensemble_wts"] = [1.0 / count] * count
    if count > 1:
      logging.info("--ensemble_wts not given: equal weights 1/%d", count)
  defaults = model_graph.ModelConfig.from_dict(DEFAULTS)
  for name in model_graph.CONFIG_FIELDS:
    if name not in PER_MODEL_KEYS:
      values[name] = _members_value(name, explicit, member_jsons, getattr(defaults, name))
  return model_graph.ModelConfig.from_dict(values).validate()


def planned_size(plan, config, built=None):
  """({bytes of the submission}, a line of them): data and meta graph exact, .index and
  model_flags.json estimated."""
  with storage.temporary_dir("yt8m-plan") as directory:
    meta = budget_build.meta_bytes(config, directory, built)
  data = plan.output_bytes()
  # An index entry holds the name, dtype, shape and offsets (~40 B besides the name).
  other = sum(len(item[0]) + 40 for item in plan.items) + 4096
  total = data + meta + other
  size = {"data_bytes": data, "meta_bytes": meta, "other_bytes_estimate": other,
          "total_bytes": total, "limit_bytes": SIZE_LIMIT, "fits": total <= SIZE_LIMIT}
  return size, (
      "planned submission: {total_bytes:,} B = tensor data {data_bytes:,} B + meta graph "
      "{meta_bytes:,} B + ~{other_bytes_estimate:,} B (.index, model_flags.json) vs the "
      "limit 2^30 = {limit_bytes:,} B: {verdict} ({margin:,} B {side})").format(
          verdict="FITS" if size["fits"] else "DOES NOT FIT", **size,
          margin=abs(size["limit_bytes"] - size["total_bytes"]),
          side="to spare" if size["fits"] else "over")


def build(config, checkpoints, train_dir, output_name, copies, dry_run=False):
  """Writes the ensemble checkpoint, its inference meta and model_flags.json (dry_run: only
  prints the planned size); returns a summary dict."""
  output_prefix = checkpoint_utils.resolve_checkpoint(train_dir, output_name)
  stored = model_graph.read_stored_flags(train_dir, required=False) if storage.isdir(
      train_dir) else None
  if stored is not None:
    try:
      model_graph.check_same_architecture(stored, config, utils.model_flags_path(train_dir))
    except ValueError as error:
      raise CheckpointToolError(
          "--train_dir=%s holds another model (its model_flags.json describes %d model(s)): "
          "choose another --train_dir. %s" % (train_dir, int(stored.get("ensemble_num", 1)),
                                               str(error).split(": ", 1)[-1]))
  # One inference graph for the template, the planned size and the written meta graph.
  built = model_graph.build_inference_graph(config)
  template_specs = ensemble_checkpoint.specs_from_graph(built[0])
  plan = ensemble_checkpoint.plan_ensemble(
      template_specs, checkpoints, copies, "the %d-model ensemble graph (%s)" % (
          config.ensemble_num, config.describe()), outputs=[output_prefix])
  size, line = planned_size(plan, config, built)
  logging.info("%s", line)
  if dry_run:
    print(line)
    print("dry run: nothing written (would write %s.* and %s)" % (
        output_prefix, utils.model_flags_path(train_dir)))
    return dict(size, dry_run=True)
  summary = ensemble_checkpoint.write_plan(plan, copies, output_prefix, lambda tmp: (
      model_graph.export_inference_meta(tmp + ".meta", config, built)))
  model_flags = config.to_json_dict()
  model_flags["ensemble_sources"] = [storage.abspath(c) for c in checkpoints]
  if stored is not None and model_graph.TRAINING_KEY in stored:
    # e.g. the original's ensemble dir: keep train.py's record of its dummy training run
    model_flags[model_graph.TRAINING_KEY] = stored[model_graph.TRAINING_KEY]
  utils.write_model_flags(train_dir, model_flags)
  return summary


def config_from_flags_and_members(prefixes, copies):
  """assemble_config from this run's flags, the members' model_flags.json and checkpoints."""
  specs = [ensemble_checkpoint.specs_from_checkpoint(prefix, copies) for prefix in prefixes]
  members = [member_model_flags(prefix) if FLAGS.use_member_model_flags else (None, None)
             for prefix in prefixes]
  model_graph.notice_flags_without_effect()
  explicit = {name: FLAGS[name].value for name in model_graph.CONFIG_FIELDS
              if FLAGS[name].present}
  return assemble_config(prefixes, explicit, members, specs)


def budgeted_main():
  """The budgeted build of --candidates (budget_build.run)."""
  if FLAGS.checkpoints:
    raise CheckpointToolError("give --checkpoints (the members) or --candidates (to choose "
                              "from), not both")
  given = [name for name in PER_MODEL_KEYS if name != "model" and FLAGS[name].present]
  if given:
    raise CheckpointToolError("--candidates chooses the members, their storage and weights: "
                              "--%s cannot be given" % ", --".join(given))
  if FLAGS.size_limit_bytes <= 0 or FLAGS.batch_size < 1 or FLAGS.top_k < 1:
    raise CheckpointToolError("--size_limit_bytes, --batch_size and --top_k must be positive")
  candidates = ensemble_checkpoint.parse_checkpoint_list(FLAGS.candidates, "--candidates")
  if len(set(candidates)) != len(candidates):
    raise CheckpointToolError("--candidates lists a checkpoint twice")
  ensemble_checkpoint.check_sources(candidates)
  storages = [part.strip() for part in FLAGS.storages.split(",") if part.strip()]
  if not storages or len(set(storages)) != len(storages) or not set(storages) <= set(
      model_graph.KERNEL_STORAGES):
    raise CheckpointToolError("--storages=%r: give distinct storages among %s" % (
        FLAGS.storages, ",".join(model_graph.KERNEL_STORAGES)))
  settings = budget_build.Settings(
      eval_files=readers.eval_files(FLAGS.eval_data_pattern, FLAGS.eval_holdout_only),
      limit=FLAGS.size_limit_bytes, storages=storages, batch_size=FLAGS.batch_size,
      num_readers=FLAGS.num_readers, max_videos=FLAGS.max_videos, top_k=FLAGS.top_k,
      seed=FLAGS.search_seed, restarts=FLAGS.search_iterations, beam_width=FLAGS.beam_width,
      output_name=FLAGS.output_name)
  with checkpoint_utils.LocalCopies() as copies:
    # One config of all candidates: their shared settings must agree (one graph).
    pool = config_from_flags_and_members(candidates, copies)
  try:
    budget_build.run(pool, candidates, FLAGS.train_dir, settings, FLAGS.dry_run, FLAGS.results_json)
  except ensemble_budget.BudgetTooSmall as error:
    raise CheckpointToolError(str(error))


@utils.tool_main
def main(argv):
  if not FLAGS.train_dir:
    raise CheckpointToolError("--train_dir (the output directory) is required")
  if not FLAGS.output_name:
    raise CheckpointToolError("--output_name is empty")
  if FLAGS.candidates:
    return budgeted_main()
  checkpoints = ensemble_checkpoint.parse_checkpoint_list(FLAGS.checkpoints)
  ensemble_checkpoint.check_sources(checkpoints)
  with checkpoint_utils.LocalCopies() as copies:
    config = config_from_flags_and_members(checkpoints, copies)
    logging.info("Building %s into %s", config.describe(), FLAGS.train_dir)
    result = build(config, checkpoints, FLAGS.train_dir, FLAGS.output_name, copies, FLAGS.dry_run)
  if not result.get("dry_run"):
    logging.info("Evaluate it with: python -m youtube-8m.eval --train_dir=%s "
                 "--checkpoint_file=%s --eval_data_pattern=... --run_once", FLAGS.train_dir,
                 FLAGS.output_name)


if __name__ == "__main__":
  define_flags()
  app.run(main)
