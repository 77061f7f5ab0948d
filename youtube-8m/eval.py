"""Evaluates checkpoints (GAP@20, Hit@1, PERR, mAP, loss) and writes inference checkpoints.

    python -m youtube-8m.eval --train_dir=DIR --eval_data_pattern='.../validate*.tfrecord' \
        --batch_size=1024 --run_once=True [--checkpoint_file=NAME | --checkpoint=NAME.index]

The model is rebuilt from DIR/model_flags.json (flags given here must agree with it). By
default the 60 held-out validate files of the pattern are evaluated. Each evaluated checkpoint
is also saved in DIR as an inference checkpoint (``inference_model_<step>``, ...; see
inference_checkpoint_name) whose meta graph holds only the model. A comma list
(``--checkpoint=model.ckpt-10.index,model.ckpt-20.index``) evaluates each checkpoint in turn
in one graph and session, restoring it and re-reading the data: the outputs of each are those
of a run on it alone.

Without a checkpoint and --run_once, eval polls DIR: it evaluates every model.ckpt-<step>, in
step order, as they appear, and records each in DIR/eval_state.json (EvalState). Stopped by
SIGTERM/SIGINT (exit status 0), the same command goes on with the checkpoints not evaluated.
"""

import json
import os
import re
import time

import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from . import checkpoint_utils
from . import eval_util
from . import fp16_layers
from . import gpu_check
from . import interrupts
from . import losses
from . import model_graph
from . import progress as progress_lib
from . import readers
from . import staging
from . import storage
from . import summaries
from . import utils

tf1 = tf.compat.v1
FLAGS = flags.FLAGS


def define_flags():
  utils.define_shared_flags(__name__, model_graph.define_flags,
                            fp16_layers.define_compute_dtype_flag, gpu_check.define_device_flag)
  flags.DEFINE_string("train_dir", "/tmp/yt8m_model/",
                      "Directory with model_flags.json and the checkpoints; outputs go here.")
  flags.DEFINE_string("checkpoint_file", "",
                      "Checkpoint to evaluate, relative to train_dir (prefix, or one of its "
                      "files), or a comma list of them, evaluated in turn. Empty: the newest "
                      "model.ckpt-<step>.")
  flags.DEFINE_string("checkpoint", "",
                      "Same as --checkpoint_file (the original README's spelling, e.g. "
                      "model.ckpt-170010.index).")
  flags.DEFINE_string("eval_data_pattern", "", "Glob of the validation files.")
  flags.DEFINE_bool("eval_holdout_only", True,
                    "Evaluate only the 60 held-out validate files named from the pattern (as "
                    "the original). False: every file the glob matches.")
  flags.DEFINE_integer("batch_size", 1024, "Examples per evaluation batch (of the logged batch "
                       "metrics).")
  flags.DEFINE_integer("videos_per_run", 256,
                       "Each batch is read and evaluated in parts of at most this many videos "
                       "(peak memory grows with it; the metrics do not depend on it). 0: whole "
                       "batches.")
  flags.DEFINE_integer("num_readers", 8,
                       "Files read in parallel (interleaved in a fixed order).")
  flags.DEFINE_bool("run_once", False,
                    "Evaluate one checkpoint and exit; else keep polling (each new checkpoint, "
                    "recorded in eval_state.json: a restarted poll goes on with the others).")
  flags.DEFINE_integer("eval_interval_secs", 60, "Seconds between polls for new checkpoints.")
  flags.DEFINE_integer("top_k", 20, "k of GAP@k and of the mAP pools.")
  flags.DEFINE_bool("force_output_model_name", False,
                    "Save the evaluated model as inference_model.{data-00000-of-00001,index,meta} "
                    "(the names a submission tgz needs).")
  flags.DEFINE_bool("create_meta_only", False,
                    "Only write the inference checkpoint and its meta graph; read no data.")
  flags.DEFINE_string("results_json", "",
                      "If set, also write the final metrics of each evaluation to this JSON file "
                      "(a list of them, in order, for a list of checkpoints).")
  # The original's eval commands pass these training flags; they cannot change an evaluation, so
  # they are compared with the training run's values (a difference is reported).
  flags.DEFINE_float("base_learning_rate", None, "Training flag; checked, no effect on eval.")
  flags.DEFINE_float("learning_rate_decay", None, "Training flag; checked, no effect on eval.")


INFERENCE_MODEL = "inference_model"


def weights_tag(ensemble_wts):
  """The original's tag of mixing weights: [0.39, 0.26, 0.21, 0.14] -> '039_026_021_014'."""
  text = str([float(w) for w in ensemble_wts])
  for char in ",.[]":
    text = text.replace(char, "")
  return text.replace(" ", "_")


def inference_checkpoint_name(checkpoint_name, loaded_prefix, config):
  """Name of the inference checkpoint eval.py saves (docs/original.md), or None."""
  if FLAGS.force_output_model_name:
    return INFERENCE_MODEL
  name = os.path.basename(checkpoint_name) if checkpoint_name else ""
  if INFERENCE_MODEL in name:
    if "ensemble" in name:
      return name.replace("ensemble", "ensemble_" + weights_tag(config.ensemble_wts))
    return None
  if "avg" not in name:
    return "%s_%s" % (INFERENCE_MODEL, loaded_prefix.rsplit("-", 1)[-1])
  return "%s_%s" % (INFERENCE_MODEL, name)


def summary_tag_and_step(prefix, global_step, ensemble_wts=None):
  """(tag prefix, step) of an evaluation's TensorBoard summaries: "Epoch" at the global step
  for model.ckpt-N (as the original); else the checkpoint's own name, an ensemble's with its
  weights ("inference_model_w05_05"), so that no two step-0 evaluations share tags."""
  name = os.path.basename(prefix)
  step = checkpoint_utils.parse_step(name, checkpoint_utils.TRAIN_CHECKPOINT_BASENAME)
  if step is not None:
    return "Epoch", global_step or step
  name = re.sub(r"-\d+$", "", name)
  if ensemble_wts and len(ensemble_wts) > 1:
    name += "_w" + weights_tag(ensemble_wts)
  return name, global_step


def requested_checkpoints():
  """[(flag, name)] of the checkpoints (prefixes) listed by --checkpoint_file / --checkpoint,
  in order; empty if neither is given."""
  lists = {}
  for flag in ("checkpoint_file", "checkpoint"):
    names = [checkpoint_utils.strip_checkpoint_suffix(value.strip())
             for value in getattr(FLAGS, flag).split(",")]
    if names != [""]:
      if "" in names:
        raise ValueError("--%s=%r: empty name in the list" % (flag, getattr(FLAGS, flag)))
      lists[flag] = names
  if len(lists) > 1 and lists["checkpoint_file"] != lists["checkpoint"]:
    raise ValueError("--checkpoint_file=%r and --checkpoint=%r name different checkpoints"
                     % (FLAGS.checkpoint_file, FLAGS.checkpoint))
  flag = next(iter(lists), None)
  return [(flag, name) for name in lists.get(flag, [])]


def save_inference_checkpoint(sess, saver, config, name, synced, built=None):
  """Saves the restored model as train_dir/name (files renamed into place at the end, then
  uploaded if train_dir is on gs://). built: config's inference (graph, saver), if built."""
  def write(tmp_prefix):
    saver.save(sess, tmp_prefix, write_meta_graph=False, write_state=False)
    model_graph.export_inference_meta(tmp_prefix + ".meta", config, built)

  prefix = checkpoint_utils.write_checkpoint(os.path.join(synced.local, name), write)
  synced.push([name + ".*"])
  logging.info("Saved inference checkpoint %s (+ .meta)", synced.remote_path(name))
  interrupts.kept(synced.remote_path(name))
  return prefix


class EvalState(object):
  """train_dir/eval_state.json: the training checkpoints the polling mode evaluated, with
  their metrics, for each set of evaluation settings (data, flags, model: other settings
  start their own list); rewritten atomically after each evaluation."""

  def __init__(self, train_dir, settings):
    self.path = os.path.join(train_dir, utils.EVAL_STATE_FILE)
    self.runs = []
    if storage.exists(self.path):
      try:
        self.runs = list(json.loads(storage.read_text(self.path))["runs"])
        others = [run for run in self.runs if run["settings"] != settings]
      except (ValueError, KeyError, TypeError) as error:
        raise ValueError("%s is not eval.py's state file (%s): move it away to evaluate "
                         "every checkpoint again" % (self.path, error))
      if others:
        logging.info("%s also lists %d evaluation(s) with other data, flags or model: not "
                     "taken into account", self.path, len(others))
    matching = [run for run in self.runs if run["settings"] == settings]
    if not matching:
      matching = [{"settings": settings, "evaluated": []}]
      self.runs.append(matching[0])
    self.evaluated = matching[0]["evaluated"]
    if self.evaluated:
      logging.info("%s: %s already evaluated with these settings; polling goes on with the "
                   "others", self.path, self.describe())

  def steps(self):
    return {entry["step"] for entry in self.evaluated}

  def describe(self):
    steps = sorted(self.steps())
    shown = steps if len(steps) <= 5 else steps[:2] + ["..."] + steps[-2:]
    return "%d checkpoint(s), step %s" % (len(steps), ", ".join(map(str, shown)))

  def add(self, step, results):
    self.evaluated.append(dict({key: results[key] for key in (
        "gap", "hit_at_one", "perr", "map", "loss", "examples")}, step=step))
    utils.write_atomically(self.path, json.dumps({"runs": self.runs}, indent=1) + "\n")
    interrupts.kept("%s (%s)" % (self.path, self.describe()), key=self.path)


def batch_parts():
  """(parts per batch, videos per part): --batch_size in the fewest parts of at most
  --videos_per_run videos, all of one size; when they do not divide --batch_size, a logged
  batch holds a few more videos (1023 -> 4 parts of 256)."""
  if FLAGS.videos_per_run <= 0 or FLAGS.videos_per_run >= FLAGS.batch_size:
    return 1, FLAGS.batch_size
  parts = -(-FLAGS.batch_size // FLAGS.videos_per_run)
  return parts, -(-FLAGS.batch_size // parts)


def build_eval_graph(config, files):
  global_step = model_graph.create_global_step()
  tensors = {"global_step": global_step}
  if files is not None:
    # The model runs on one part of a batch at a time: the float32 features of a whole
    # batch of frame-level videos would dominate the memory.
    iterator, batch = readers.one_pass(config.make_reader(), files, batch_parts()[1],
                                       FLAGS.num_readers, "eval_input")
    model_input_raw, num_frames = batch["video_matrix"], batch["num_frames"]
    tensors.update(iterator=iterator, labels=batch["labels"])
  else:
    model_input_raw = tf1.placeholder(tf.float32, model_graph.input_shape(config),
                                      name="input_batch_raw")
    num_frames = tf1.placeholder(tf.int32, [None], name="num_frames")
  predictions, _ = model_graph.build_model(config, model_input_raw, num_frames,
                                           is_training=False,
                                           compute_dtype=fp16_layers.compute_dtype())
  tensors["predictions"] = predictions
  if files is not None:
    tensors["loss"] = losses.get_loss(config.label_loss).calculate_loss(predictions,
                                                                        batch["labels"])
  return tensors


def log_batch(examples, step_label, batch_sums, batch_start):
  """Logs one batch's metrics (the original's line) from its parts' video-weighted sums,
  which it resets."""
  videos = batch_sums["videos"]
  logging.info("examples_processed: %d | global_step %s | Batch Hit@1: %.3f | Batch "
               "PERR: %.3f | Batch Loss: %.3f | Examples_per_sec: %.3f", examples,
               step_label, batch_sums["hit_at_one"] / videos, batch_sums["perr"] / videos,
               batch_sums["loss"] / videos, videos / (time.time() - batch_start))
  batch_sums.update(dict.fromkeys(batch_sums, 0.0))


def evaluate_batches(sess, tensors, config, step_label, writer, files, total, summary):
  """Metrics of one pass over files. total: (videos in files, exact) from
  progress.count_inputs; summary: (tag prefix, step) from summary_tag_and_step."""
  metrics = eval_util.EvaluationMetrics(config.num_classes, FLAGS.top_k)
  sess.run(tensors["iterator"].initializer)
  examples = 0
  start = batch_start = time.time()
  fetches = {k: tensors[k] for k in ("predictions", "labels", "loss")}
  # Named by the step of a training checkpoint, else by the summaries' tag (avg_..., ...).
  progress = progress_lib.Progress(
      "eval %s" % (step_label if summary[0] == "Epoch" else summary[0]), total[0], "videos",
      approximate=not total[1])
  parts_per_batch = batch_parts()[0]
  # A batch's metrics are the video-weighted means of its parts' (the same as of the
  # whole batch, the loss up to float32 rounding).
  batch_sums = dict.fromkeys(("videos", "hit_at_one", "perr", "loss"), 0.0)
  parts = 0
  for part in readers.run_batches(sess, fetches, files, progress):
    part_metrics = metrics.accumulate(part["predictions"], part["labels"], part["loss"])
    videos = len(part["labels"])
    examples += videos
    batch_sums["videos"] += videos
    for key, value in part_metrics.items():
      batch_sums[key] += value * videos
    parts += 1
    if parts % parts_per_batch == 0:
      log_batch(examples, step_label, batch_sums, batch_start)
      batch_start = time.time()
  if parts % parts_per_batch:
    log_batch(examples, step_label, batch_sums, batch_start)
  if examples == 0:
    raise IOError("--eval_data_pattern: the evaluation files hold no videos")
  final = metrics.get()
  final["map"] = float(sum(final["aps"]) / len(final["aps"])) if final["aps"] else 0.0
  logging.info("epoch/eval number %s | Avg_Hit@1: %.3f | Avg_PERR: %.3f | MAP: %.3f | "
               "GAP: %.5f | Avg_Loss: %f", step_label, final["avg_hit_at_one"],
               final["avg_perr"], final["map"], final["gap"], final["avg_loss"])
  logging.info("Evaluated %d videos in %.1f s", examples, time.time() - start)
  writer.add_summary(tf1.Summary(value=[
      tf1.Summary.Value(tag=summary[0] + "/Eval_" + tag, simple_value=final[key])
      for tag, key in (("Avg_Hit@1", "avg_hit_at_one"), ("Avg_Perr", "avg_perr"),
                       ("Avg_Loss", "avg_loss"), ("MAP", "map"), ("GAP", "gap"))]), summary[1])
  return {"examples": examples, "gap": final["gap"], "hit_at_one": final["avg_hit_at_one"],
          "perr": final["avg_perr"], "map": final["map"], "loss": final["avg_loss"]}


def evaluate():
  train_dir = FLAGS.train_dir
  config = model_graph.config_for_evaluation(
      train_dir, explicit_checks=("base_learning_rate", "learning_rate_decay"))
  # Every listed checkpoint is checked before the graph is built and any data is read.
  requested = [(name, checkpoint_utils.existing_checkpoint(train_dir, name, flag))
               for flag, name in requested_checkpoints()]
  if FLAGS.force_output_model_name and len(requested) > 1:
    raise ValueError("--force_output_model_name saves each checkpoint as %s: give one "
                     "checkpoint, not %d" % (INFERENCE_MODEL, len(requested)))
  files = total = None
  if not FLAGS.create_meta_only:
    files = readers.eval_files(FLAGS.eval_data_pattern, FLAGS.eval_holdout_only)
    logging.info("Evaluating %s on %d files", config.describe(), len(files))
    parts, size = batch_parts()
    if parts > 1:
      logging.info("Each batch is evaluated in %d parts of %d videos (--videos_per_run)",
                   parts, size)
    total = progress_lib.count_inputs("eval", files)
  evaluation = Evaluation(config, files, total, len(requested) > 1)
  try:
    with tf1.Session(graph=evaluation.graph,
                     config=tf1.ConfigProto(allow_soft_placement=True)) as sess:
      for name, prefix in requested:
        evaluation.checkpoint(sess, prefix, name)
      if not requested:
        evaluation.poll(sess, train_dir)
  finally:
    evaluation.writer.close()
  return evaluation.results[-1] if evaluation.results else None


class Evaluation(object):
  """The evaluation graph of config on files (None: --create_meta_only), and the results of
  the checkpoints evaluated in it, in order. total: (videos in files, exact)."""

  def __init__(self, config, files, total, several):
    self.config, self.files, self.total, self.several = config, files, total, several
    self.graph = tf.Graph()
    with self.graph.as_default():
      self.tensors = build_eval_graph(config, files)
      self.graph_vars = tf1.global_variables()
      self.saver = tf1.train.Saver(self.graph_vars)
    self.synced = staging.SyncedDir(FLAGS.train_dir)  # TF reads and writes local files only
    # events.out.tfevents.<second>.<host> alone collides for two evals started in the same
    # second on one host (the later upload to a gs:// train_dir would replace the other).
    # Also into AIP_TENSORBOARD_LOG_DIR when Vertex AI sets it (a TensorBoard reads there).
    self.writer = summaries.SummaryWriter(self.synced.local,
                                          filename_suffix=".eval.%d" % os.getpid())
    self.results = []
    self.inference_graph = None  # (graph, saver) of the inference meta graph, once needed

  def checkpoint(self, sess, prefix, requested_name):
    """Restores prefix, saves its inference checkpoint and, unless --create_meta_only,
    evaluates it (the one_pass iterator re-initialized) and records its results."""
    config = self.config
    with checkpoint_utils.local_copy(prefix) as local_prefix:
      checkpoint_utils.check_matches_graph(local_prefix, self.graph_vars, config.describe(),
                                           name=prefix)
      with checkpoint_utils.reading(prefix, local_prefix):
        self.saver.restore(sess, local_prefix)
    step_label = os.path.basename(prefix).rsplit("-", 1)[-1].rsplit("_", 1)[-1]
    logging.info("Restored %s (global step %s)", prefix, step_label)
    name = inference_checkpoint_name(requested_name, prefix, config)
    if name:
      if self.inference_graph is None:  # built once for every checkpoint of the run
        self.inference_graph = model_graph.build_inference_graph(config)
      save_inference_checkpoint(sess, self.saver, config, name, self.synced,
                                self.inference_graph)
    if FLAGS.create_meta_only:
      return None
    summary = summary_tag_and_step(prefix, int(sess.run(self.tensors["global_step"])),
                                   config.ensemble_wts if config.ensemble_num > 1 else None)
    results = evaluate_batches(sess, self.tensors, config, step_label, self.writer,
                               self.files, self.total, summary)
    results.update(checkpoint=prefix, global_step=step_label)
    self.writer.flush()
    self.synced.push_new()
    self.results.append(results)
    if FLAGS.results_json:
      # A list of checkpoints: the results of all evaluated so far, in order.
      written = self.results if self.several else results
      utils.write_atomically(FLAGS.results_json, json.dumps(written, indent=1) + "\n")
      interrupts.kept(FLAGS.results_json)
    return results

  def state_settings(self):
    """What the metrics of a checkpoint depend on (EvalState's key), as JSON holds it."""
    return json.loads(json.dumps({
        "eval_data_pattern": FLAGS.eval_data_pattern, "files": len(self.files),
        "eval_holdout_only": FLAGS.eval_holdout_only, "top_k": FLAGS.top_k,
        "compute_dtype": FLAGS.compute_dtype, "model": self.config.to_json_dict()}))

  def poll(self, sess, train_dir):
    """--run_once or --create_meta_only: the newest training checkpoint of train_dir (waited
    for without --run_once). Else every training checkpoint not in EvalState, in step order,
    as they appear, until a signal (exit status 0: the same command goes on)."""
    once = FLAGS.run_once or FLAGS.create_meta_only
    state = None if once else EvalState(train_dir, self.state_settings())
    if state:
      interrupts.set_resumable()
    unreadable = set()  # named once, not retried by this run
    while True:
      interrupts.check("polling %s for new checkpoints" % train_dir)
      found = checkpoint_utils.list_checkpoints(train_dir)
      pending = [item for item in (found[-1:] if once else found) if item[1] not in unreadable
                 and (once or item[0] not in state.steps())]
      if not pending:
        if not found:
          logging.info("No checkpoint file found.")
          if FLAGS.run_once:
            raise IOError("No model.ckpt-<step> checkpoint in %s" % train_dir)
        interrupts.sleep(FLAGS.eval_interval_secs)
        continue
      step, prefix = pending[0]
      try:
        results = self.checkpoint(sess, prefix, None)
      except checkpoint_utils.UnreadableCheckpointError as error:
        if FLAGS.run_once:
          raise
        # Training goes on: a later checkpoint may read, so polling goes on too.
        logging.error("%s; waiting for a newer checkpoint", error)
        unreadable.add(prefix)
        continue
      if once:
        return
      state.add(step, results)


@utils.tool_main
def main(unused_argv):
  if FLAGS.batch_size < 1:
    raise ValueError("--batch_size must be >= 1, got %d" % FLAGS.batch_size)
  if FLAGS.top_k < 1:
    raise ValueError("--top_k must be >= 1, got %d" % FLAGS.top_k)
  if FLAGS.videos_per_run < 0:
    raise ValueError("--videos_per_run must be >= 0 (0: whole batches), got %d"
                     % FLAGS.videos_per_run)
  # The session places the model on the first GPU, if any; nothing is read or written before.
  gpu_check.model_devices(FLAGS.allow_cpu_on_gpu_machine)
  with storage.event_file_errors():
    evaluate()


if __name__ == "__main__":
  define_flags()
  app.run(main)
