r"""Searches the mixing weights of an in-graph ensemble that maximise GAP on held-out data.

    python -m youtube-8m.ensemble_weights --train_dir=ENSEMBLE_DIR \
        --checkpoint_file=inference_model_ensemble_YHLS-0 \
        --eval_data_pattern='.../validate*.tfrecord' --results_json=weights.json

The ensemble (model_flags.json + checkpoint in --train_dir, e.g. from build_ensemble) runs
ONCE over the evaluation data (the 60 held-out validate files by default, as eval.py),
fetching each member's predictions (model_graph.MEMBER_PREDICTIONS), kept in memory:
n_models x videos x classes x 4 bytes (2 with --member_dtype=float16; --max_videos caps the
videos). Mixtures sum_i w_i * p_i are scored with eval_util.calculate_gap, mixed in float32 in
the graph's order, so a weight vector scores what eval.py reports for it.

Search: weights on the simplex on a 0.01 grid; coordinate ascent moves weight between two
members (steps 0.20 .. 0.01) from equal weights, then from --search_iterations seeded
Dirichlet(1) starts; the exact 1/n weights are a candidate too when n does not divide 100.
Prints (and --results_json writes) each member's GAP, the equal-weight and configured GAPs,
the best weights and the eval.py command line that uses them. Paths may be gs://.
"""

import json
import os
import shlex
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from . import checkpoint_utils
from . import eval_util
from . import model_graph
from . import progress as progress_lib
from . import readers
from . import storage
from . import utils

tf1 = tf.compat.v1
FLAGS = flags.FLAGS

RESOLUTION = 100  # weights are multiples of 1/RESOLUTION (2 decimals)
STEPS = (20, 10, 5, 2, 1)


def define_flags():
  model_graph.define_flags()
  # --help lists the model flags too (absl shows only the main module's own flags).
  for _module in (model_graph, model_graph.frame_level_models,
                  model_graph.video_level_models):
    flags.adopt_module_key_flags(_module)
  flags.DEFINE_string("train_dir", None,
                      "Ensemble directory with model_flags.json and the checkpoint.")
  flags.DEFINE_string("checkpoint_file", "inference_model",
                      "Ensemble checkpoint prefix relative to train_dir (e.g. "
                      "inference_model_ensemble_YHLS-0; a '.index' suffix is accepted).")
  flags.DEFINE_string("eval_data_pattern", "", "Glob of the validation files.")
  flags.DEFINE_bool("eval_holdout_only", True,
                    "Only the 60 held-out validate files of the pattern (as eval.py).")
  flags.DEFINE_integer("batch_size", 256, "Videos per batch when running the graph.")
  flags.DEFINE_integer("num_readers", 8, "Files read in parallel (as eval.py).")
  flags.DEFINE_integer("max_videos", 0,
                       "Keep at most this many videos (0: all). The weights are then tuned on "
                       "a subset and the GAPs differ from eval.py's on the whole data.")
  flags.DEFINE_enum("member_dtype", "float32", ["float32", "float16"],
                    "Storage of the members' predictions: float16 halves the memory but "
                    "mixtures then only approximate the graph's (GAP may differ ~1e-4).")
  flags.DEFINE_integer("search_seed", 0, "Seed of the random starting points.")
  flags.DEFINE_integer("search_iterations", 5,
                       "Random starting points of the coordinate ascent (after the "
                       "equal-weight start).")
  flags.DEFINE_integer("top_k", 20, "k of GAP@k.")
  flags.DEFINE_string("results_json", "", "If set, write the results to this JSON file.")


# ---------------------------------------------------------------------------------------
# Mixing and search (pure numpy).


def mix(members, weights, out=None, scratch=None):
  """sum_i weights[i] * members[i] in float32, summed in member order (as tf.add_n)."""
  shape = members[0].shape
  out = np.empty(shape, np.float32) if out is None else out
  np.multiply(members[0], np.float32(weights[0]), out=out, dtype=np.float32)
  if len(members) > 1:
    scratch = np.empty(shape, np.float32) if scratch is None else scratch
    for member, weight in zip(members[1:], weights[1:]):
      np.multiply(member, np.float32(weight), out=scratch, dtype=np.float32)
      np.add(out, scratch, out=out)
  return out


class GapObjective(object):
  """GAP of mixtures of fixed member predictions; caches every weight vector scored."""

  def __init__(self, members, labels, top_k=20):
    self.members = members
    self.labels = labels
    self.top_k = top_k
    self._out = np.empty(members[0].shape, np.float32)
    self._scratch = np.empty(members[0].shape, np.float32) if len(members) > 1 else None
    self.cache = {}

  def __call__(self, weights):
    key = tuple(float(w) for w in weights)
    if key not in self.cache:
      mixed = mix(self.members, key, self._out, self._scratch)
      self.cache[key] = eval_util.calculate_gap(mixed, self.labels, top_k=self.top_k)
    return self.cache[key]

  def units(self, units):
    return self([u / float(RESOLUTION) for u in units])


def round_to_grid(weights, resolution=RESOLUTION):
  """Nearest grid point (integer units summing to resolution), largest remainder rule."""
  weights = np.asarray(weights, dtype=np.float64)
  weights = weights / weights.sum() * resolution
  units = np.floor(weights).astype(int)
  remainder = weights - units
  for index in np.argsort(-remainder, kind="stable")[:resolution - units.sum()]:
    units[index] += 1
  return [int(u) for u in units]


def coordinate_ascent(objective, units):
  """Hill climbing on the grid: move `step` units from member j to member i."""
  units = list(units)
  best = objective.units(units)
  for step in STEPS:
    while True:
      candidates = []
      for i in range(len(units)):
        for j in range(len(units)):
          if i != j and units[j] >= step:
            candidate = list(units)
            candidate[i] += step
            candidate[j] -= step
            candidates.append(candidate)
      if not candidates:
        break
      scores = [objective.units(c) for c in candidates]
      top = int(np.argmax(scores))
      if scores[top] > best:
        units, best = candidates[top], scores[top]
      else:
        break
  return units, best


def search(objective, num_models, seed=0, restarts=5):
  """(best weights, best gap, trace) over equal-weight + random starting points."""
  rng = np.random.default_rng(seed)
  starts = [round_to_grid(np.ones(num_models))]
  starts += [round_to_grid(rng.dirichlet(np.ones(num_models))) for _ in range(restarts)]
  trace = []
  best_units, best_gap = None, -1.0
  # Each start is a whole hill climb (seconds to minutes): report every one.
  progress = progress_lib.Progress("weight search", len(starts), "starting points",
                                   interval=0)
  for start in starts:
    units, gap = coordinate_ascent(objective, start)
    trace.append({"start": [u / RESOLUTION for u in start],
                  "end": [u / RESOLUTION for u in units], "gap": gap})
    if gap > best_gap:
      best_units, best_gap = units, gap
    logging.info("weight search: start %s -> %s GAP %.5f (best so far %.5f)",
                 trace[-1]["start"], trace[-1]["end"], gap, best_gap)
    progress.update()
  weights = [u / float(RESOLUTION) for u in best_units]
  equal = [1.0 / num_models] * num_models
  if RESOLUTION % num_models and objective(equal) > best_gap:
    weights, best_gap = equal, objective(equal)
  return weights, best_gap, trace


# ---------------------------------------------------------------------------------------
# Running the ensemble graph once.


def collect_member_predictions(config, prefix, files, batch_size, num_readers, max_videos,
                               member_dtype, top_k, checkpoint_name=None):
  """Runs the eval graph once; returns (members [n][N, C], labels [N, C] bool, info).

  prefix is a local checkpoint (a staged copy of checkpoint_name, which errors name);
  files may be local or gs:// (the reader stages them).
  """
  graph = tf.Graph()
  with graph.as_default():
    model_graph.create_global_step()
    reader = config.make_reader()
    with tf.device("/cpu:0"), tf1.name_scope("eval_input"):
      dataset = reader.dataset(files, batch_size, num_epochs=1, shuffle=False,
                               num_readers=num_readers)
      iterator = tf1.data.make_initializable_iterator(dataset)
      batch = iterator.get_next()
    predictions, _ = model_graph.build_model(config, batch["video_matrix"],
                                             batch["num_frames"], is_training=False)
    members = tf1.get_collection(model_graph.MEMBER_PREDICTIONS)
    graph_vars = tf1.global_variables()
    saver = tf1.train.Saver(graph_vars)
  checkpoint_utils.check_matches_graph(prefix, graph_vars, config.describe(),
                                       name=checkpoint_name)
  chunks = [[] for _ in members]
  label_chunks = []
  configured = eval_util.EvaluationMetrics(config.num_classes, top_k)
  count = 0
  start = time.time()
  progress = progress_lib.input_progress("member predictions", files, max_items=max_videos)
  fetches = {"members": members, "labels": batch["labels"], "predictions": predictions}
  with tf1.Session(graph=graph) as sess:
    saver.restore(sess, prefix)
    sess.run(iterator.initializer)
    for result in readers.run_batches(sess, fetches, files, progress, limit=max_videos):
      for chunk, values in zip(chunks, result["members"]):
        chunk.append(values.astype(member_dtype))
      labels = np.asarray(result["labels"]) > 0
      label_chunks.append(labels)
      configured.accumulate(result["predictions"], labels, 0.0)
      count += len(labels)
      logging.info("videos processed: %d (%.1f videos/sec)", count,
                   count / max(time.time() - start, 1e-9))
  truncated = bool(max_videos) and count >= max_videos
  if count == 0:
    raise IOError("--eval_data_pattern: the evaluation files hold no videos")
  member_arrays = []
  for chunk in chunks:
    member_arrays.append(np.concatenate(chunk))
    del chunk[:]
  labels = np.concatenate(label_chunks)
  info = {"videos": count, "truncated": truncated, "seconds": time.time() - start,
          "configured_gap_graph": configured.get()["gap"]}
  return member_arrays, labels, info


def format_weights(weights):
  return [repr(round(w, 2)) if abs(w * RESOLUTION - round(w * RESOLUTION)) < 1e-9 else
          repr(float(w)) for w in weights]


def eval_command(train_dir, checkpoint_file, pattern, holdout_only, weights):
  parts = ["python", "-m", "youtube-8m.eval", "--train_dir=" + train_dir,
           "--checkpoint_file=" + checkpoint_file, "--eval_data_pattern=" + pattern,
           "--run_once=True"]
  if not holdout_only:
    parts.append("--noeval_holdout_only")
  parts += ["--ensemble_wts=" + w for w in format_weights(weights)]
  return " ".join(shlex.quote(p) for p in parts)


def run():
  if not FLAGS.train_dir:
    raise ValueError("--train_dir is required")
  if FLAGS.batch_size < 1 or FLAGS.top_k < 1 or FLAGS.max_videos < 0:
    raise ValueError("--batch_size and --top_k must be >= 1, --max_videos >= 0")
  if FLAGS.search_iterations < 0:
    raise ValueError("--search_iterations must be >= 0")
  config = model_graph.config_for_evaluation(FLAGS.train_dir)
  if config.model != "NetVLADModelLF" or config.ensemble_num < 2:
    raise ValueError("%s holds %s, not an ensemble: nothing to weight" % (
        utils.model_flags_path(FLAGS.train_dir), config.describe()))
  prefix = checkpoint_utils.resolve_checkpoint(FLAGS.train_dir, FLAGS.checkpoint_file)
  if not checkpoint_utils.checkpoint_exists(prefix):
    raise IOError("--checkpoint_file: no checkpoint %s (missing %s.index)" % (prefix, prefix))
  files = readers.eval_files(FLAGS.eval_data_pattern, FLAGS.eval_holdout_only)
  num_models = config.ensemble_num
  logging.info("Running %s over %d files once (member predictions kept as %s)",
               config.describe(), len(files), FLAGS.member_dtype)
  with checkpoint_utils.local_copy(prefix) as local_prefix:
    members, labels, info = collect_member_predictions(
        config, local_prefix, files, FLAGS.batch_size, FLAGS.num_readers, FLAGS.max_videos,
        np.dtype(FLAGS.member_dtype), FLAGS.top_k, checkpoint_name=prefix)
  held_mib = sum(m.nbytes for m in members) / 2.0**20
  notes = []
  if info["truncated"]:
    notes.append("NOTE: --max_videos=%d: only the first %d videos were used (the files hold "
                 "more); the weights are tuned on this subset and the GAPs below differ from "
                 "eval.py's on the whole data." % (FLAGS.max_videos, info["videos"]))
  objective = GapObjective(members, labels, FLAGS.top_k)
  member_gaps = []
  for index in range(num_models):
    one_hot = [0.0] * num_models
    one_hot[index] = 1.0
    member_gaps.append(objective(one_hot))
  equal = [1.0 / num_models] * num_models
  equal_gap = objective(equal)
  configured_gap = objective(config.ensemble_wts)
  search_start = time.time()
  best, best_gap, trace = search(objective, num_models, FLAGS.search_seed,
                                 FLAGS.search_iterations)
  search_seconds = time.time() - search_start
  command = eval_command(FLAGS.train_dir,
                         checkpoint_utils.strip_checkpoint_suffix(FLAGS.checkpoint_file),
                         FLAGS.eval_data_pattern,
                         FLAGS.eval_holdout_only, best)
  if abs(configured_gap - info["configured_gap_graph"]) > 1e-4 and FLAGS.member_dtype == (
      "float32"):
    logging.warning("numpy mixing gives GAP %.6f for the configured weights, the graph %.6f",
                    configured_gap, info["configured_gap_graph"])

  lines = ["", "Ensemble %s, %d videos, member predictions %.1f MiB (%s)" % (
      config.describe(), info["videos"], held_mib, FLAGS.member_dtype)]
  lines += notes
  lines.append("%-34s %s" % ("", "GAP@%d" % FLAGS.top_k))
  for index in range(num_models):
    lines.append("%-34s %.6f" % ("model %d (c%dh%d) alone" % (
        index, config.netvlad_cluster_size[index], config.netvlad_hidden_size[index]),
                                 member_gaps[index]))
  lines.append("%-34s %.6f" % ("equal weights (1/%d each)" % num_models, equal_gap))
  lines.append("%-34s %.6f (graph, as eval.py: %.6f)" % (
      "checkpoint's weights " + " ".join(format_weights(config.ensemble_wts)), configured_gap,
      info["configured_gap_graph"]))
  lines.append("%-34s %.6f (%+.6f vs equal weights)" % (
      "best weights " + " ".join(format_weights(best)), best_gap, best_gap - equal_gap))
  lines.append("Search: %d weight vectors scored in %.1f s (%d starts, seed %d)" % (
      len(objective.cache), search_seconds, len(trace), FLAGS.search_seed))
  lines.append("Evaluate with the best weights (add --force_output_model_name=True to write "
               "inference_model.* for a submission):")
  lines.append("  " + command)
  print("\n".join(lines), flush=True)

  results = {
      "train_dir": FLAGS.train_dir, "checkpoint": prefix, "videos": info["videos"],
      "files": len(files), "truncated": info["truncated"], "notes": notes,
      "member_dtype": FLAGS.member_dtype, "top_k": FLAGS.top_k,
      "members": [{"index": i, "cluster_size": config.netvlad_cluster_size[i],
                   "hidden_size": config.netvlad_hidden_size[i], "gap": member_gaps[i]}
                  for i in range(num_models)],
      "equal_weights": {"weights": equal, "gap": equal_gap},
      "configured_weights": {"weights": list(config.ensemble_wts), "gap": configured_gap,
                             "gap_graph": info["configured_gap_graph"]},
      "best_weights": {"weights": best, "gap": best_gap,
                       "flags": ["--ensemble_wts=" + w for w in format_weights(best)]},
      "eval_command": command, "search": {"seed": FLAGS.search_seed, "starts": trace,
                                          "scored": len(objective.cache),
                                          "seconds": search_seconds},
  }
  if FLAGS.results_json:
    storage.makedirs(os.path.dirname(FLAGS.results_json))  # a no-op for gs://
    utils.write_atomically(FLAGS.results_json, json.dumps(results, indent=1) + "\n")
  return results


@utils.tool_main
def main(argv):
  if len(argv) > 1:
    raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
  run()


if __name__ == "__main__":
  define_flags()
  app.run(main)
