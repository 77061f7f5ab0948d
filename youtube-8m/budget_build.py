r"""build_ensemble on a byte budget: members, storages and weights chosen on held-out data.

    python -m youtube-8m.build_ensemble --train_dir=OUT --candidates=CKPT1,CKPT2,... \
        --eval_data_pattern='.../validate*.tfrecord' [--size_limit_bytes=1073741824] \
        [--storages=float32,float16,uint8] [--search_seed=0] [--dry_run] [--results_json=F]

1. Every candidate in every storage is an option, its bytes estimated: tensor data exact,
   .index entries (name + 48 B each), its share of the meta graph (that of two copies of it
   minus that of one; the rest is the same for every member of a storage, measured once) and
   its model_flags.json entry. The rest is the base.
2. Each option's held-out predictions are computed once, groups of options run as the members
   of one temporary ensemble, each sampling frames with seed (0, 0) as a single model does.
3. ensemble_budget.search picks the members, storages and weights.
4. The chosen ensemble is built and measured (model_size); if over the limit, the search runs
   again under the limit minus the estimate's shortfall.
5. Its GAP is measured (eval.py's): it differs from the search's as member i samples frames
   with seed (0, i).
6. Unless --dry_run: the files go into --train_dir (the .index last, then model_flags.json)
   with the table as budget_table.txt.
"""

import dataclasses
import json
import os
import shutil
import time

import numpy as np
from absl import logging

from . import checkpoint_utils
from . import ensemble_budget
from . import ensemble_checkpoint
from . import ensemble_weights
from . import model_graph
from . import model_size
from . import storage
from . import utils

CheckpointToolError = checkpoint_utils.CheckpointToolError
INDEX_ENTRY_BYTES = 48  # an .index entry besides its name (dtype, shape, offset, crc; margin)
JSON_MEMBER_BYTES = 64  # a member's values in model_flags.json besides its source path
BASE_EXTRA_BYTES = 4096  # index header and footer, global_step, the json's other keys
TABLE_FILE = "budget_table.txt"
MAX_ROUNDS = 8
# Options whose tensors add up to at most this many bytes share one graph and one pass over
# the held-out data (the graph holds their variables, each in its storage).
GROUP_TENSOR_BYTES = 3 * 2**30


@dataclasses.dataclass
class Settings:
  """The budgeted build's settings besides the candidates (build_ensemble's flags)."""
  eval_files: list
  limit: int
  storages: list
  batch_size: int = 256
  num_readers: int = 8
  max_videos: int = 0
  top_k: int = 20
  seed: int = 0
  restarts: int = 5
  beam_width: int = 4
  output_name: str = "inference_model"


def ensemble_config(pool, chosen, weights):
  """The config of the ensemble of chosen [(candidate index of pool, storage)] with weights."""
  return dataclasses.replace(
      pool, ensemble_num=len(chosen), ensemble_wts=[float(w) for w in weights],
      netvlad_cluster_size=[pool.netvlad_cluster_size[i] for i, _ in chosen],
      netvlad_hidden_size=[pool.netvlad_hidden_size[i] for i, _ in chosen],
      float16_flag=False, kernel_storage=[s for _, s in chosen]).validate()


def meta_bytes(config, directory, built=None):
  """Bytes of config's inference meta graph, exported into directory (built: its graph)."""
  path = os.path.join(directory, "size.meta")
  model_graph.export_inference_meta(path, config, built)
  size = os.path.getsize(path)
  os.remove(path)
  return size


def option_sizes(pool, candidates, storages, copies, directory):
  """{(index, storage): (plan, estimated bytes)} and the base bytes (see the module doc)."""
  sizes, base, by_config, rest_of_graph = {}, 0, {}, {}
  for index, source in enumerate(candidates):
    for storage_name in storages:
      config = ensemble_config(pool, [(index, storage_name)], [1.0])
      key = (pool.netvlad_cluster_size[index], pool.netvlad_hidden_size[index], storage_name)
      if key not in by_config:
        built = model_graph.build_inference_graph(config)  # the template and its meta graph
        one = meta_bytes(config, directory, built)
        # Only a member's own part depends on its sizes: the rest of a one-member graph (one
        # less a second copy's share) is measured once per storage.
        if storage_name not in rest_of_graph:
          two = meta_bytes(ensemble_config(pool, [(index, storage_name)] * 2, [0.5, 0.5]),
                           directory)
          rest_of_graph[storage_name] = 2 * one - two
        by_config[key] = (ensemble_checkpoint.specs_from_graph(built[0]), one,
                          one - rest_of_graph[storage_name])
      template, one, member_meta = by_config[key]
      plan = ensemble_checkpoint.plan_ensemble(
          template, [source], copies, "candidate %d (%s) in %s" % (
              index, config.describe(), storage_name))
      data = plan.output_bytes() - plan.global_step_dtype.size
      index_bytes = sum(len(item[0]) + INDEX_ENTRY_BYTES for item in plan.items)
      base = max(base, one - member_meta)
      sizes[(index, storage_name)] = (plan, data + index_bytes + member_meta + len(
          storage.abspath(source)) + JSON_MEMBER_BYTES)
  return sizes, base + BASE_EXTRA_BYTES


def check_fits(sizes, base, limit, candidates):
  """BudgetTooSmall (one line) unless the smallest option fits the limit."""
  (index, storage_name), (_, size) = min(sizes.items(), key=lambda item: item[1][1])
  if base + size > limit:
    raise ensemble_budget.BudgetTooSmall(
        "--size_limit_bytes=%d holds no member: the smallest option, %s in %s, needs about "
        "%d bytes with the rest of the submission (%d for its tensors and its share of the "
        "files, %d for the meta graph's base, the index header and model_flags.json)" % (
            limit, candidates[index], storage_name, base + size, size, base))


def option_groups(sizes, limit_bytes=GROUP_TENSOR_BYTES):
  """The options [(index, storage)] in consecutive groups of at most limit_bytes of tensors."""
  groups, total = [], 0
  for key, (plan, _) in sizes.items():
    size = plan.output_bytes()
    if not groups or total + size > limit_bytes:
      groups.append([])
      total = 0
    groups[-1].append(key)
    total += size
  return groups


def describe_group(group, candidates):
  """'CANDIDATE in STORAGE, ...' of the options [(index, storage)] of group."""
  return ", ".join("%s in %s" % (candidates[index], storage_name)
                   for index, storage_name in group)


def group_predictions(pool, group, candidates, settings, copies, directory):
  """(predictions per option, labels, info) of group's options run as one ensemble, each
  sampling frames with seed (0, 0) as a single model does."""
  config = ensemble_config(pool, group, [1.0 / len(group)] * len(group))
  sources = [candidates[index] for index, _ in group]
  prefix = os.path.join(directory, "options", "model")

  def write_options(graph):
    template = ensemble_checkpoint.specs_from_graph(graph)
    plan = ensemble_checkpoint.plan_ensemble(template, sources, copies, config.describe())
    ensemble_checkpoint.write_plan(plan, copies, prefix, lambda tmp: None)

  try:
    return ensemble_weights.collect_member_predictions(
        config, prefix, settings.eval_files, settings.batch_size, settings.num_readers,
        settings.max_videos, np.dtype(np.float32), settings.top_k,
        checkpoint_name="options " + describe_group(group, candidates),
        sampling_seeds=[(0, 0)] * len(group), write_prefix=write_options)
  finally:
    shutil.rmtree(os.path.dirname(prefix), ignore_errors=True)


def collect_options(pool, candidates, sizes, settings, copies, directory):
  """The ensemble_budget.Options of every (candidate, storage) and the held-out labels."""
  options, labels = [], None
  for group in option_groups(sizes):
    start = time.time()
    predictions, group_labels, info = group_predictions(pool, group, candidates, settings,
                                                        copies, directory)
    if labels is None:
      labels = group_labels
    elif not np.array_equal(labels, group_labels):
      raise CheckpointToolError("the held-out videos came in another order for options %s: "
                                "the options' predictions cannot be mixed" % group)
    for (index, storage_name), option_predictions in zip(group, predictions):
      options.append(ensemble_budget.Option(index, candidates[index], storage_name,
                                            sizes[(index, storage_name)][1],
                                            option_predictions))
    logging.info("%d option(s) in one pass: %s (%d videos in %.1f s)", len(group),
                 describe_group(group, candidates), info["videos"], time.time() - start)
  return options, labels


def choose(pool, candidates, options, labels, base, settings, copies, directory):
  """The search, built (into directory/built) and measured until it fits: (result, config,
  built dir, model_size report, rounds)."""
  from . import build_ensemble  # pylint: disable=g-import-not-at-top (it imports this module)
  internal = settings.limit
  rounds = []
  built = os.path.join(directory, "built")
  for _ in range(MAX_ROUNDS):
    result = ensemble_budget.search(options, labels, internal, base, settings.top_k,
                                    settings.beam_width, settings.seed, settings.restarts)
    chosen = [(o.candidate, o.storage) for o in result.options]
    config = ensemble_config(pool, chosen, result.weights)
    shutil.rmtree(built, ignore_errors=True)
    build_ensemble.build(config, [candidates[i] for i, _ in chosen], built,
                         settings.output_name, copies)
    report = model_size.measure(built, settings.output_name, limit=settings.limit)
    rounds.append({"search_limit": internal, "estimated_bytes": result.total_bytes,
                   "measured_bytes": report["total_bytes"]})
    logging.info("search under %d bytes: estimated %d, measured %d (limit %d)", internal,
                 result.total_bytes, report["total_bytes"], settings.limit)
    if report["total_bytes"] <= settings.limit:
      return result, config, built, report, rounds
    # The estimate fell short by `under` bytes: search again as if every set's estimate did
    # (this set's estimate is then over the new limit, so it is not chosen again).
    under = report["total_bytes"] - result.total_bytes
    internal = min(internal, settings.limit - under)
  raise CheckpointToolError("no ensemble measured under --size_limit_bytes=%d after %d "
                            "searches (%s)" % (settings.limit, MAX_ROUNDS, rounds))


def table_lines(options, config, result, report, graph_gap, settings, rounds):
  """The printed table: the options, then the chosen ensemble."""
  lines = ["Options (candidate x storage): bytes and own held-out GAP",
           "%-3s %-48s %-8s %14s %9s" % ("#", "candidate", "storage", "bytes (est.)", "own GAP")]
  lines += ["%-3d %-48s %-8s %14d %9.5f" % (o.candidate, o.name[-48:], o.storage, o.bytes, o.gap)
            for o in options]
  lines += ["", "Chosen (%s)" % config.describe()]
  lines += ensemble_budget.report_lines(result, settings.limit)
  lines.append("written graph: %d bytes measured by model_size (%d estimated) of the limit %d "
               "(%s B to spare); its GAP on the held-out data %.5f (eval.py's, at --batch_size"
               "=%d; the search's %.5f)" % (
                   report["total_bytes"], result.total_bytes, settings.limit,
                   "{:,}".format(settings.limit - report["total_bytes"]), graph_gap,
                   settings.batch_size, result.gap))
  if len(rounds) > 1:
    lines.append("searches: %s" % ", ".join(
        "under %d -> %d B" % (r["search_limit"], r["measured_bytes"]) for r in rounds))
  return lines


def copy_into(built, train_dir, output_name):
  """Copies the built checkpoint (atomically) and model_flags.json into train_dir."""
  source_prefix = os.path.join(built, output_name)
  suffixes = [path[len(source_prefix):] for path in storage.glob(source_prefix + ".*")]

  def write(tmp_prefix):
    for suffix in suffixes:
      shutil.copyfile(source_prefix + suffix, tmp_prefix + suffix)

  storage.makedirs(train_dir)
  checkpoint_utils.write_checkpoint(
      checkpoint_utils.resolve_checkpoint(train_dir, output_name), write)
  with open(utils.model_flags_path(built)) as handle:
    utils.write_model_flags(train_dir, json.load(handle))


def run(pool, candidates, train_dir, settings, dry_run=False, results_json=""):
  """The budgeted build (module doc); returns the results dict."""
  if not dry_run and storage.exists(utils.model_flags_path(train_dir)):
    raise CheckpointToolError("--train_dir=%s already holds a model (%s): the budgeted build "
                              "writes a new ensemble, give a new --train_dir" % (
                                  train_dir, utils.model_flags_path(train_dir)))
  with checkpoint_utils.LocalCopies() as copies, storage.temporary_dir("yt8m-budget") as directory:
    sizes, base = option_sizes(pool, candidates, settings.storages, copies, directory)
    check_fits(sizes, base, settings.limit, candidates)
    logging.info("%d options (%d candidates x %s); base %d bytes; limit %d", len(sizes),
                 len(candidates), ",".join(settings.storages), base, settings.limit)
    options, labels = collect_options(pool, candidates, sizes, settings, copies, directory)
    result, config, built, report, rounds = choose(pool, candidates, options, labels, base,
                                                   settings, copies, directory)
    _, _, info = ensemble_weights.collect_member_predictions(
        config, os.path.join(built, settings.output_name), settings.eval_files,
        settings.batch_size, settings.num_readers, settings.max_videos, np.dtype(np.float32),
        settings.top_k, checkpoint_name="the built ensemble")
    graph_gap = info["configured_gap_graph"]
    lines = table_lines(options, config, result, report, graph_gap, settings, rounds)
    print("\n".join(lines), flush=True)
    results = {
        "limit_bytes": settings.limit, "base_bytes": base, "videos": info["videos"],
        "options": [{"candidate": o.name, "storage": o.storage, "bytes": o.bytes, "gap": o.gap}
                    for o in options],
        "members": [{"candidate": j["option"].name, "storage": j["option"].storage,
                     "bytes": j["option"].bytes, "gap": j["option"].gap,
                     "ensemble_gap_once_in": j["gap"], "weight": w}
                    for j, w in zip(result.joins, result.weights)],
        "weights": result.weights, "search_gap": result.gap, "graph_gap": graph_gap,
        "estimated_bytes": result.total_bytes, "measured_bytes": report["total_bytes"],
        "rounds": rounds, "gaps_computed": result.scored, "dry_run": dry_run,
        "batch_size": settings.batch_size, "seed": settings.seed, "model": config.describe(),
        "output": None if dry_run else os.path.join(train_dir, settings.output_name)}
    if dry_run:
      print("dry run: nothing written (would write %s.* and %s)" % (
          os.path.join(train_dir, settings.output_name), utils.model_flags_path(train_dir)))
    else:
      copy_into(built, train_dir, settings.output_name)
      utils.write_atomically(os.path.join(train_dir, TABLE_FILE), "\n".join(lines) + "\n")
  if results_json:
    storage.makedirs(os.path.dirname(results_json))
    utils.write_atomically(results_json, json.dumps(results, indent=1) + "\n")
  return results
