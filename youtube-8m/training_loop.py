"""train.py's loop: training steps until the input ends, --max_steps or a stop signal; the
chief's training metrics and checkpoint exports."""

import os
import time

import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging

from . import checkpoint_utils
from . import eval_util
from . import interrupts
from . import progress as progress_lib
from . import readers

tf1 = tf.compat.v1
FLAGS = flags.FLAGS

# A gs:// train_dir gets its event files this often (TensorBoard follows training live), not
# only with the checkpoint exports.
EVENT_UPLOAD_SECS = 60


class TrainingDiverged(ValueError):
  """The loss or the weights became NaN or inf."""


class Exporter(object):
  """The chief's exports of model.ckpt-<step>: at steps 10, 10+E, ... (E =
  --export_model_steps), every --save_model_secs and on request, never of NaN or inf weights;
  with a gs:// train_dir (synced), each export and the event files are uploaded."""

  def __init__(self, sess, saver, weights_finite, train_dir, synced, writer, saved_step):
    self.sess, self.saver, self.weights_finite = sess, saver, weights_finite
    self.train_dir, self.synced, self.writer = train_dir, synced, writer
    # A resumed run's step exports continue from its checkpoint's step.
    self.saved = self.cadence = saved_step
    self.timer = self.events = time.time()

  def diverged(self, step, what):
    """The TrainingDiverged error to raise, naming the last good checkpoint."""
    if self.saved is None:
      good = "no checkpoint was exported before; start again"
    else:
      good = "the last good checkpoint is %s/%s-%d; resume from it" % (
          FLAGS.train_dir.rstrip("/"), checkpoint_utils.TRAIN_CHECKPOINT_BASENAME, self.saved)
    return TrainingDiverged("training diverged at step %d: %s, not exported; %s with a lower "
                            "--base_learning_rate or --clip_gradient_norm" % (step, what, good))

  def export(self, step):
    if not self.sess.run(self.weights_finite):
      raise self.diverged(step, "the weights hold NaN or inf")
    prefix = os.path.join(self.train_dir, checkpoint_utils.TRAIN_CHECKPOINT_BASENAME)
    step_prefix = "%s-%d" % (prefix, step)
    with checkpoint_utils.saving(self.train_dir, step_prefix), checkpoint_utils.writing(
        step_prefix):
      path = self.saver.save(self.sess, prefix, global_step=step)
    if self.synced:
      self.writer.flush()
      self.synced.push_new()
    logging.info("Exported %s", path)
    interrupts.kept("%s/%s-%d" % (FLAGS.train_dir.rstrip("/"),
                                  checkpoint_utils.TRAIN_CHECKPOINT_BASENAME, step), "export")
    self.saved = step

  def export_unsaved(self, step):
    """Exports step unless it is step 0 or exported already."""
    if step > 0 and self.saved != step:
      self.export(step)

  def after_step(self, step, metrics_step):
    """The exports and uploads due after step (metrics_step: its metrics were logged)."""
    if metrics_step and (self.cadence is None or step - self.cadence >= FLAGS.export_model_steps):
      self.export(step)
      self.cadence = step
    if FLAGS.save_model_secs and time.time() - self.timer >= FLAGS.save_model_secs:
      self.export(step)
      self.timer = time.time()
    if self.synced and time.time() - self.events >= EVENT_UPLOAD_SECS:
      self.writer.flush()
      self.synced.push(["events.out.tfevents.*"])
      self.events = time.time()


def train_loop(sess, tensors, saver, writer, task, files, train_dir, synced,
               epoch_examples=(None, False)):
  """Runs training steps until the input ends, --max_steps or a stop signal (then the chief
  exports the step and interrupts.Interrupted is raised); the chief logs metrics every 10 steps
  and exports checkpoints. epoch_examples: (records of files or None, exact). Returns the last
  global step."""
  sess.run(tensors["iterator"].initializer)
  step = first_step = int(sess.run(tensors["global_step"]))
  progress = progress_lib.TrainingProgress(first_step, FLAGS.max_steps, epoch_examples[0],
                                           FLAGS.num_epochs, approximate=not epoch_examples[1])
  resumed = checkpoint_utils.newest_checkpoint(train_dir) is not None
  exporter = Exporter(sess, saver, tensors["weights_finite"], train_dir, synced, writer,
                      step if resumed else None)
  reason = "max_steps reached"
  try:
    while FLAGS.max_steps is None or step < FLAGS.max_steps:
      if interrupts.requested():
        reason = "stopped by %s" % interrupts.requested()
        break
      step, metrics_step = run_step(sess, tensors, task.is_chief and (step + 1) % 10 == 0,
                                    progress, writer, exporter)
      if task.is_chief:
        exporter.after_step(step, metrics_step)
  except tf.errors.OutOfRangeError:
    if step == first_step:  # a run reads its files from the start: they are empty
      share = " of %s" % task.device if task.distributed else ""
      raise readers.InputDataError(
          "--train_data_pattern: the %d training file(s)%s hold no videos: nothing to train "
          "on" % (len(files), share))
    reason = "Done training -- epoch limit reached."
  except readers.INPUT_ERRORS as error:
    if task.is_chief:
      exporter.export_unsaved(step)
    raise readers.InputDataError(readers.input_error_message(error, files))
  logging.info("%s (step %d)", reason, step)
  progress.finish()
  if task.is_chief:
    exporter.export_unsaved(step)
  interrupts.check("training at step %d" % step)
  return step


def run_step(sess, tensors, with_metrics, progress, writer, exporter):
  """Runs and logs one step (with_metrics: its training metrics too, at a multiple of 10);
  returns (the step after it, whether its metrics were logged)."""
  fetches = {"step": tensors["step_after"], "loss": tensors["label_loss"],
             "examples": tensors["batch_examples"]}
  if with_metrics:
    fetches.update(predictions=tensors["predictions"], labels=tensors["labels"],
                   reg_loss=tensors["reg_loss"], learning_rate=tensors["learning_rate"])
    if tensors["loss_scale"]:
      fetches["loss_scale"] = tensors["loss_scale"].scale
  start = time.time()
  result = sess.run(fetches)
  examples_per_sec = result["examples"] / (time.time() - start)
  step = int(result["step"])
  progress.update(step, int(result["examples"]))
  if not np.isfinite(result["loss"]):
    raise exporter.diverged(step, "the loss is %s" % result["loss"])
  if step % 10 == 0 and with_metrics:
    log_metrics(writer, step, result, examples_per_sec)
    return step, True
  logging.info("training step %d | Loss: %.2f Examples/sec: %.2f", step, result["loss"],
               examples_per_sec)
  return step, False


def log_metrics(writer, step, result, examples_per_sec):
  """Logs the training metrics of a step's result and writes them as summaries."""
  predictions, labels = result["predictions"], result["labels"]
  hit_at_one = eval_util.calculate_hit_at_one(predictions, labels)
  perr = eval_util.calculate_precision_at_equal_recall_rate(predictions, labels)
  gap = eval_util.calculate_gap(predictions, labels)
  logging.info("training step %d | Loss: %.2f Examples/sec: %.2f | Hit@1: %.2f "
               "PERR: %.2f GAP: %.2f", step, result["loss"], examples_per_sec,
               hit_at_one, perr, gap)
  scalars = {"model/Training_Hit@1": hit_at_one, "model/Training_Perr": perr,
             "model/Training_GAP": gap, "global_step/Examples/Second": examples_per_sec,
             "label_loss": result["loss"], "reg_loss": result["reg_loss"],
             "learning_rate": result["learning_rate"]}
  if "loss_scale" in result:
    scalars["loss_scale"] = result["loss_scale"]
  writer.add_summary(tf1.Summary(value=[
      tf1.Summary.Value(tag=tag, simple_value=float(value))
      for tag, value in scalars.items()]), step)
