r"""Searches the mixing weights of an in-graph ensemble that maximise GAP on held-out data.

    python -m youtube-8m.ensemble_weights --train_dir=ENSEMBLE_DIR \
        --checkpoint_file=inference_model_ensemble_YHLS-0 \
        --eval_data_pattern='.../validate*.tfrecord' --results_json=weights.json

The ensemble runs once over eval.py's files, its members' predictions kept in memory
(n_models x videos x classes x 4 bytes, 2 with --member_dtype=float16) and mixed as the graph
mixes them, so a weight vector scores what eval.py reports for it (its GAP computed exactly from
a few candidate classes per video, MixtureGap). The search moves weight between two members on a
0.01 grid. Prints (and --results_json writes) the GAPs and the eval.py command with the best
weights.
"""

import itertools
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
from . import fp16_layers
from . import interrupts
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
  utils.define_shared_flags(__name__, model_graph.define_flags,
                            fp16_layers.define_compute_dtype_flag)
  flags.DEFINE_string("train_dir", None,
                      "Ensemble directory with model_flags.json and the checkpoint.")
  flags.DEFINE_string("checkpoint_file", "inference_model",
                      "Ensemble checkpoint prefix relative to train_dir (e.g. "
                      "inference_model_ensemble_YHLS-0; a '.index' suffix is accepted).")
  flags.DEFINE_enum("member_dtype", "float32", ["float32", "float16"],
                    "Storage of the members' predictions: float16 halves the memory but "
                    "mixtures then only approximate the graph's (GAP may differ ~1e-4).")
  define_held_out_flags()


def define_held_out_flags(what=""):
  """Flags of a run over held-out data and a weight search (also build_ensemble's)."""
  flags.DEFINE_string("eval_data_pattern", "", what + "Glob of the held-out files.")
  flags.DEFINE_bool("eval_holdout_only", True,
                    what + "Only the 60 held-out validate files of the pattern (as eval.py).")
  flags.DEFINE_integer("batch_size", 256, what + "Videos per batch (eval.py at this "
                       "--batch_size reproduces the reported GAPs).")
  flags.DEFINE_integer("num_readers", 8, what + "Files read in parallel (as eval.py).")
  flags.DEFINE_integer("max_videos", 0, what + "Keep at most this many videos (0: all), each "
                       "taking classes x 4 B per member; the GAPs then differ from eval.py's.")
  flags.DEFINE_integer("search_seed", 0, what + "Seed of the weight search.")
  flags.DEFINE_integer("search_iterations", 5, what + "Random starting points of the weight "
                       "search (after the equal-weight start).")
  flags.DEFINE_integer("top_k", 20, what + "k of GAP@k.")
  flags.DEFINE_string("results_json", "", what + "If set, write the results to this JSON file.")


def mix(members, weights):
  """sum_i weights[i] * members[i] in float32, summed in member order (as tf.add_n)."""
  out = np.empty(members[0].shape, np.float32)
  scratch = np.empty_like(out)
  np.multiply(members[0], np.float32(weights[0]), out=out, dtype=np.float32)
  for member, weight in zip(members[1:], weights[1:]):
    np.multiply(member, np.float32(weight), out=scratch, dtype=np.float32)
    np.add(out, scratch, out=out)
  return out


class MixtureGap(object):
  """GAP@top_k of weighted mixtures of fixed member predictions: exactly (to the bit)
  eval_util.calculate_gap(mix(members, weights), labels, top_k), from a few candidate classes
  per video instead of all of them.

  A member's candidates are, per video, its `candidates_per_member` best classes; their
  smallest value is its bound. They are found once per member array and kept (with the array)
  by its identity: members must not change once scored. A mixture scores the union of its
  members' candidates with mix() itself. float32 rounding is monotone, so with weights >= 0 no
  other class scores above mix() of the members' bounds: a video whose k-th best candidate is
  above that (strictly) has all of its top k, ties at the k-th score included, among its
  candidates, and they rank as in calculate_gap (tie rule 1 holds among candidates kept in class
  order). Other videos are mixed in full and ranked by eval_util's own top-k. Mixtures the check
  cannot cover take calculate_gap(mix(...)) itself: a weight < 0 or not finite, a member not
  float16 or float32 or not finite, scores that could overflow, k above the members'
  candidates, shapes calculate_gap refuses.
  """

  def __init__(self, labels, top_k=20, candidates_per_member=None):
    self.top_k = eval_util._positive_int(top_k, "top_k")  # pylint: disable=protected-access
    self.labels = np.asarray(labels)
    self._bool_labels = self.labels if self.labels.dtype == np.bool_ else self.labels > 0
    self._total_positives = int(np.count_nonzero(self._bool_labels))
    self.candidates_per_member = (max(32, 2 * self.top_k) if candidates_per_member is None
                                  else eval_util._positive_int(  # pylint: disable=protected-access
                                      candidates_per_member, "candidates_per_member"))
    self._members = {}  # id(array) -> (array, candidates [N, M], bound [N, 1], max |value|)
    self._union_key, self._union = None, None  # the last member tuple's candidate union
    self.rows_scored = 0  # videos ranked from candidates or in full, over all fast calls
    self.fallback_rows = 0  # of those, videos whose top k needed their full mix
    self.full_calls = 0  # mixtures scored by calculate_gap(mix(...)) on every video

  def __call__(self, members, weights):
    if not self._fast_path_applies(members, weights):
      self.full_calls += 1
      return eval_util.calculate_gap(mix(members, weights), self.labels, self.top_k)
    if self._total_positives == 0:
      return 0.0
    num_videos, num_classes = self.labels.shape
    top_k = min(self.top_k, num_classes)
    classes, gathered = self._candidate_union(members)
    scores = mix(gathered, weights)
    ranked = eval_util._top_k_indices(scores, top_k)  # pylint: disable=protected-access
    top_scores = np.take_along_axis(scores, ranked, axis=1)
    top_classes = np.take_along_axis(classes, ranked, axis=1)
    bound = mix([self._members[id(m)][2] for m in members], weights)[:, 0]
    fallback = np.flatnonzero(~(bound < top_scores[:, -1]))  # also: < k distinct candidates
    if fallback.size:
      full = mix([m[fallback] for m in members], weights)
      top_classes[fallback] = eval_util._top_k_indices(  # pylint: disable=protected-access
          full, top_k)
      top_scores[fallback] = np.take_along_axis(full, top_classes[fallback], axis=1)
    self.rows_scored += num_videos
    self.fallback_rows += fallback.size
    top_labels = np.take_along_axis(self._bool_labels, top_classes, axis=1)
    return float(eval_util._pooled_average_precision(  # pylint: disable=protected-access
        top_scores.ravel(), top_labels.ravel(), self._total_positives)[0])

  def _fast_path_applies(self, members, weights):
    """Whether candidates give the exact GAP: float members of the labels' 2-D shape, all
    finite, weights >= 0 and finite, and no mixed score can overflow to inf."""
    shape = self.labels.shape
    if (not members or len(members) != len(weights) or len(shape) != 2 or shape[0] == 0
        or self.candidates_per_member >= shape[1]
        or min(self.top_k, shape[1]) > len(members) * self.candidates_per_member):
      return False
    float_weights = [float(np.float32(w)) for w in weights]
    if not all(np.isfinite(w) and w >= 0 for w in float_weights):
      return False
    largest_sum = 0.0
    for member, weight in zip(members, float_weights):
      if (not isinstance(member, np.ndarray) or member.shape != shape
          or member.dtype not in (np.float16, np.float32)):
        return False
      largest = self._member_candidates(member)[3]
      if not np.isfinite(largest):
        return False
      largest_sum += weight * largest
    # float32 rounding adds at most a few ulps to the exact sum: far below the float32 max.
    return largest_sum < np.finfo(np.float32).max / 4

  def _member_candidates(self, member):
    """(member, candidates [N, M] as flat indices row * classes + class, bound [N, 1] in the
    member's dtype, max |value| as float64, inf if any is not finite), once per array."""
    entry = self._members.get(id(member))
    if entry is None:
      largest = float(np.maximum(member.max(), -member.min()))  # NaN if any is NaN
      if not np.isfinite(largest):  # NaN or inf: candidates are never used
        entry = (member, None, None, np.inf)
      else:
        num_videos, num_classes = member.shape
        keep = self.candidates_per_member
        candidates = np.argpartition(member, num_classes - keep, axis=1)[:, num_classes - keep:]
        index_type = np.int32 if member.size <= np.iinfo(np.int32).max else np.int64
        candidates = (candidates.astype(index_type)
                      + (np.arange(num_videos, dtype=index_type) * num_classes)[:, None])
        bound = np.take(member.reshape(-1), candidates).min(axis=1, keepdims=True)
        entry = (member, candidates, bound, largest)
      self._members[id(member)] = entry  # the array is held: its id stays its own
    return entry

  def _candidate_union(self, members):
    """(classes [N, U], each member's values there [N, U]), kept for the last member tuple.

    A video's distinct candidates come first, in ascending class order; the columns after
    them (rows with fewer distinct candidates than U) hold each member's bound, so they mix to
    exactly the video's bound: never above it, so never in a top k that passes the check."""
    key = tuple(id(m) for m in members)
    if key != self._union_key:
      self._union_key, self._union = None, None  # the last tuple's arrays freed first
      num_videos, num_classes = self.labels.shape
      # Sorted flat indices: by video, then by class; each repeat dropped.
      candidates = np.sort(np.concatenate([self._members[id(m)][1] for m in members], axis=1),
                           axis=None)
      candidates = candidates[np.concatenate(([True], candidates[1:] != candidates[:-1]))]
      rows = candidates // num_classes
      counts = np.bincount(rows, minlength=num_videos)
      width = max(int(counts.max()), min(self.top_k, num_classes))
      columns = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
      flat = np.zeros((num_videos, width), candidates.dtype)
      flat[rows, columns] = candidates
      padding = np.arange(width) >= counts[:, None]
      gathered = []
      for member in members:
        values = np.take(member.reshape(-1), flat)
        np.copyto(values, self._members[id(member)][2], where=padding)
        gathered.append(values)
      self._union_key, self._union = key, ((flat % num_classes).astype(np.intp), gathered)
    return self._union


class GapObjective(object):
  """GAP of mixtures of fixed member predictions; caches every weight vector scored.

  mixture_gap: the MixtureGap to score with (one shared with other searches over the same
  labels and top_k reuses its members' candidates); by default a new one."""

  def __init__(self, members, labels, top_k=20, mixture_gap=None):
    self.members = members
    self.mixture_gap = MixtureGap(labels, top_k) if mixture_gap is None else mixture_gap
    self.cache = {}

  def __call__(self, weights):
    key = tuple(float(w) for w in weights)
    if key not in self.cache:
      self.cache[key] = self.mixture_gap(self.members, key)
    return self.cache[key]


def round_to_grid(weights, resolution=RESOLUTION):
  """Nearest grid point (integer units summing to resolution), largest remainder rule."""
  weights = np.asarray(weights, dtype=np.float64)
  weights = weights / weights.sum() * resolution
  units = np.floor(weights).astype(int)
  for index in np.argsort(units - weights, kind="stable")[:resolution - units.sum()]:
    units[index] += 1
  return [int(u) for u in units]


def coordinate_ascent(objective, units):
  """Hill climbing on the grid: move `step` units from member j to member i."""
  def score(candidate):
    return objective([u / float(RESOLUTION) for u in candidate])

  best = score(units)
  for step in STEPS:
    while True:
      candidates = [[u + step * ((k == i) - (k == j)) for k, u in enumerate(units)]
                    for i, j in itertools.permutations(range(len(units)), 2)
                    if units[j] >= step]
      scores = [score(c) for c in candidates]
      if not candidates or max(scores) <= best:
        break
      top = int(np.argmax(scores))
      units, best = candidates[top], scores[top]
  return list(units), best


def search(objective, num_models, seed=0, restarts=5):
  """(best weights, best gap, trace) over equal-weight + random starting points."""
  rng = np.random.default_rng(seed)
  starts = [round_to_grid(np.ones(num_models))]
  starts += [round_to_grid(rng.dirichlet(np.ones(num_models))) for _ in range(restarts)]
  trace = []
  best_units, best_gap = None, -1.0
  # Each start is a whole hill climb (seconds to minutes): report every one.
  progress = progress_lib.Progress("weight search", len(starts), "starting points", interval=0)
  for start in starts:
    interrupts.check("the weight search, %d of %d starting points done" % (len(trace), len(starts)))
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
  if RESOLUTION % num_models and objective(equal) > best_gap:  # 1/n is off the grid
    weights, best_gap = equal, objective(equal)
  return weights, best_gap, trace


def collect_member_predictions(config, prefix, files, batch_size, num_readers, max_videos,
                               member_dtype, top_k, checkpoint_name=None,
                               compute_dtype=tf.float32, sampling_seeds=None, write_prefix=None):
  """(members [n][videos, classes], labels [videos, classes] bool, info) of the eval graph run
  once on the local checkpoint prefix (a copy of checkpoint_name, which errors name).

  write_prefix: None, or a function of the eval graph that writes the checkpoint at prefix
  before it is read (its variables are the inference graph's: no second graph to build)."""
  graph = tf.Graph()
  with graph.as_default():
    model_graph.create_global_step()
    iterator, batch = readers.one_pass(config.make_reader(), files, batch_size, num_readers,
                                       "eval_input")
    predictions, _ = model_graph.build_model(
        config, batch["video_matrix"], batch["num_frames"], is_training=False,
        compute_dtype=compute_dtype, sampling_seeds=sampling_seeds)
    members = tf1.get_collection(model_graph.MEMBER_PREDICTIONS)
    graph_vars = tf1.global_variables()
    saver = tf1.train.Saver(graph_vars)
  if write_prefix:
    write_prefix(graph)
  checkpoint_utils.check_matches_graph(prefix, graph_vars, config.describe(), name=checkpoint_name)
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
  if count == 0:
    raise IOError("--eval_data_pattern: the evaluation files hold no videos")
  member_arrays = []
  for chunk in chunks:  # each member's chunks freed as soon as it is joined
    member_arrays.append(np.concatenate(chunk))
    del chunk[:]
  info = {"videos": count, "truncated": bool(max_videos) and count >= max_videos,
          "seconds": time.time() - start, "configured_gap_graph": configured.get()["gap"]}
  return member_arrays, np.concatenate(label_chunks), info


def format_weights(weights):
  return [repr(round(w, 2)) if abs(w * RESOLUTION - round(w * RESOLUTION)) < 1e-9 else
          repr(float(w)) for w in weights]


def eval_command(weights):
  """The eval.py command line that evaluates the ensemble with these weights."""
  parts = ["python", "-m", "youtube-8m.eval", "--train_dir=" + FLAGS.train_dir,
           "--checkpoint_file=" + checkpoint_utils.strip_checkpoint_suffix(
               FLAGS.checkpoint_file), "--eval_data_pattern=" + FLAGS.eval_data_pattern,
           "--run_once=True"] + ([] if FLAGS.eval_holdout_only else ["--noeval_holdout_only"])
  parts += ["--ensemble_wts=" + w for w in format_weights(weights)]
  if FLAGS.compute_dtype != "float32":  # the dtype the weights were searched in
    parts.append("--compute_dtype=" + FLAGS.compute_dtype)
  return " ".join(shlex.quote(p) for p in parts)


def report_lines(config, results, held_mib):
  """The printed report of run()'s results."""
  def row(label, gap, note=""):
    return "%-34s %.6f%s" % (label, gap, note)

  equal, configured = results["equal_weights"], results["configured_weights"]
  best, search_info = results["best_weights"], results["search"]
  lines = ["", "Ensemble %s, %d videos, member predictions %.1f MiB (%s)" % (
      config.describe(), results["videos"], held_mib, results["member_dtype"])]
  lines += results["notes"] + ["%-34s GAP@%d" % ("", results["top_k"])]
  lines += [row("model %d (c%dh%d) alone" % (m["index"], m["cluster_size"], m["hidden_size"]),
                m["gap"]) for m in results["members"]]
  lines.append(row("equal weights (1/%d each)" % len(equal["weights"]), equal["gap"]))
  lines.append(row("checkpoint's weights " + " ".join(format_weights(configured["weights"])),
                   configured["gap"], " (graph, as eval.py: %.6f)" % configured["gap_graph"]))
  lines.append(row("best weights " + " ".join(format_weights(best["weights"])), best["gap"],
                   " (%+.6f vs equal weights)" % (best["gap"] - equal["gap"])))
  lines.append("Search: %d weight vectors scored in %.1f s (%d starts, seed %d)" % (
      search_info["scored"], search_info["seconds"], len(search_info["starts"]),
      search_info["seed"]))
  lines.append("Evaluate with the best weights (add --force_output_model_name=True to write "
               "inference_model.* for a submission):")
  return lines + ["  " + results["eval_command"]]


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
  prefix = checkpoint_utils.existing_checkpoint(FLAGS.train_dir, FLAGS.checkpoint_file)
  files = readers.eval_files(FLAGS.eval_data_pattern, FLAGS.eval_holdout_only)
  num_models = config.ensemble_num
  logging.info("Running %s over %d files once (member predictions kept as %s)",
               config.describe(), len(files), FLAGS.member_dtype)
  with checkpoint_utils.local_copy(prefix) as local_prefix:
    members, labels, info = collect_member_predictions(
        config, local_prefix, files, FLAGS.batch_size, FLAGS.num_readers, FLAGS.max_videos,
        np.dtype(FLAGS.member_dtype), FLAGS.top_k, checkpoint_name=prefix,
        compute_dtype=fp16_layers.compute_dtype())
  notes = ["NOTE: --max_videos=%d: only the first %d videos were used (the files hold more); "
           "the weights are tuned on this subset and the GAPs below differ from eval.py's on "
           "the whole data." % (FLAGS.max_videos, info["videos"])] if info["truncated"] else []
  objective = GapObjective(members, labels, FLAGS.top_k)
  equal = [1.0 / num_models] * num_models
  equal_gap, configured_gap = objective(equal), objective(config.ensemble_wts)
  search_start = time.time()
  best, best_gap, trace = search(objective, num_models, FLAGS.search_seed, FLAGS.search_iterations)
  search_seconds = time.time() - search_start
  if abs(configured_gap - info["configured_gap_graph"]) > 1e-4 and FLAGS.member_dtype == (
      "float32"):
    logging.warning("numpy mixing gives GAP %.6f for the configured weights, the graph %.6f",
                    configured_gap, info["configured_gap_graph"])
  results = {
      "train_dir": FLAGS.train_dir, "checkpoint": prefix, "videos": info["videos"],
      "files": len(files), "truncated": info["truncated"], "notes": notes,
      "member_dtype": FLAGS.member_dtype, "top_k": FLAGS.top_k,
      "members": [{"index": i, "cluster_size": config.netvlad_cluster_size[i],
                   "hidden_size": config.netvlad_hidden_size[i],
                   "gap": objective(np.eye(num_models)[i])} for i in range(num_models)],
      "equal_weights": {"weights": equal, "gap": equal_gap},
      "configured_weights": {"weights": list(config.ensemble_wts), "gap": configured_gap,
                             "gap_graph": info["configured_gap_graph"]},
      "best_weights": {"weights": best, "gap": best_gap,
                       "flags": ["--ensemble_wts=" + w for w in format_weights(best)]},
      "eval_command": eval_command(best),
      "search": {"seed": FLAGS.search_seed, "starts": trace, "scored": len(objective.cache),
                 "seconds": search_seconds}}
  held_mib = sum(m.nbytes for m in members) / 2.0**20
  print("\n".join(report_lines(config, results, held_mib)), flush=True)
  if FLAGS.results_json:
    storage.makedirs(os.path.dirname(FLAGS.results_json))  # a no-op for gs://
    utils.write_atomically(FLAGS.results_json, json.dumps(results, indent=1) + "\n")
  return results


@utils.tool_main
def main(argv):
  run()


if __name__ == "__main__":
  define_flags()
  app.run(main)
