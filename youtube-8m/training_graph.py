"""train.py's graph: the input pipeline, the model on each tower device, the loss and the
train op, from train.py's flags."""

import tensorflow as tf
from absl import flags
from absl import logging

from . import fp16_layers
from . import losses
from . import model_graph
from . import optimization

tf1 = tf.compat.v1
FLAGS = flags.FLAGS


def build_training_graph(config, files, devices):
  """The input pipeline, the model on each tower device, the loss and the train op.

  Towers share variables (scope `tower` reused); each gets 1/len(devices) of the batch of
  batch_size * towers examples. Returns a dict of the tensors to run.
  """
  towers = len(devices)
  compute_dtype = fp16_layers.compute_dtype()
  loss_scale = optimization.DynamicLossScale() if compute_dtype == tf.float16 else None
  global_step = model_graph.create_global_step()
  if FLAGS.batch_norm_warmup:
    tf1.add_to_collection(fp16_layers.BATCH_NORM_WARMUP_STEP, global_step)
  with tf.device("/cpu:0"), tf1.name_scope("train_input"):
    dataset = config.make_reader().dataset(
        files, FLAGS.batch_size * towers, num_epochs=FLAGS.num_epochs, shuffle=True,
        num_readers=FLAGS.num_readers, seed=FLAGS.random_seed)
    if towers > 1:  # every tower needs at least one example
      dataset = dataset.filter(lambda batch: tf.shape(batch["labels"])[0] >= towers)
    iterator = tf1.data.make_initializable_iterator(dataset)
    batch = iterator.get_next()
  learning_rate = tf1.train.exponential_decay(
      FLAGS.base_learning_rate, tf.cast(global_step, tf.float32) * FLAGS.batch_size * towers,
      FLAGS.learning_rate_decay_examples, FLAGS.learning_rate_decay, staircase=True)
  optimizer = getattr(tf1.train, FLAGS.optimizer)(learning_rate)
  tower_gradients, predictions, label_loss, model_input, reg_loss = _towers(
      config, batch, devices, optimizer, loss_scale, compute_dtype)
  train_op = _train_op(optimizer, tower_gradients, loss_scale, global_step)
  with tf.control_dependencies([train_op]):
    step_after = tf.identity(global_step.read_value(), name="global_step_after")
  label_loss = tf.add_n(label_loss) / float(towers)
  predictions = tf.concat(predictions, 0) if towers > 1 else predictions[0]
  model_input = tf.concat(model_input, 0) if towers > 1 else model_input[0]
  for name, tensor in (("global_step", global_step), ("loss", label_loss),
                       ("predictions", predictions), ("input_batch_raw", batch["video_matrix"]),
                       ("input_batch", model_input), ("num_frames", batch["num_frames"]),
                       ("labels", tf.cast(batch["labels"], tf.float32)),
                       ("train_op", train_op)):
    tf1.add_to_collection(name, tensor)
  # Checked before each export: a diverged model is never saved.
  weights_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                                  for v in tf1.global_variables() if v.dtype.is_floating])
  return {"global_step": global_step, "step_after": step_after, "label_loss": label_loss,
          "batch_examples": tf.shape(batch["labels"])[0],
          "weights_finite": weights_finite, "loss_scale": loss_scale,
          "reg_loss": reg_loss, "learning_rate": learning_rate, "predictions": predictions,
          "labels": batch["labels"], "iterator": iterator}


def _towers(config, batch, devices, optimizer, loss_scale, compute_dtype):
  """The model on each device with its part of the batch: ([gradients], [predictions],
  [label loss], [model input]) per tower, and the regularization loss."""
  loss_fn = losses.get_loss(config.label_loss)
  gradients, predictions, label_losses, inputs = [], [], [], []
  reg_loss = None
  for index, (device, part) in enumerate(zip(devices, optimization.split_batch(
      batch, len(devices)))):
    with tf.device(device), tf1.name_scope("tower_%d" % index) as scope:
      tower_predictions, model_input = model_graph.build_model(
          config, part["video_matrix"], part["num_frames"], is_training=True,
          reuse=True if index else None, compute_dtype=compute_dtype)
      label_loss = loss_fn.calculate_loss(tower_predictions, part["labels"])
      if reg_loss is None:  # regularizers are registered once, by the first tower
        regularization_losses = tf1.get_collection(tf1.GraphKeys.REGULARIZATION_LOSSES)
        reg_loss = (tf.add_n(regularization_losses) if regularization_losses
                    else tf.constant(0.0))
      with tf.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS, scope)):
        label_loss = tf.identity(label_loss, name="label_loss")
      trainable = tf1.trainable_variables()
      frozen = [v for v in trainable if v.dtype.base_dtype == tf.float16]
      codes = [v for v in tf1.global_variables() if v.dtype.base_dtype == tf.uint8]
      # Both are filled from float32 models (build_ensemble), not trained: Adam's epsilon
      # (1e-8) underflows in float16 and turns the kernels into NaN.
      if frozen and index == 0:
        logging.warning("--float16_flag: %d float16 kernels are not updated by training",
                        len(frozen))
      if codes and index == 0:
        logging.warning("--kernel_storage=uint8: %d 8-bit kernels are not trained (their "
                        "codes stay 0; build_ensemble fills them from float32 models)",
                        len(codes))
      gradients.append(optimization.loss_gradients(
          optimizer, label_loss, reg_loss, FLAGS.regularization_penalty, loss_scale,
          [v for v in trainable if v.dtype.base_dtype != tf.float16]))
      predictions.append(tower_predictions)
      label_losses.append(label_loss)
      inputs.append(model_input)
  return gradients, predictions, label_losses, inputs, reg_loss


def _train_op(optimizer, tower_gradients, loss_scale, global_step):
  """Applies the towers' mean gradients, each clipped to --clip_gradient_norm (and unscaled,
  skipped if not finite, with loss scaling)."""
  gradients = optimization.average_gradients(tower_gradients)
  if loss_scale:
    gradients = [(g / loss_scale.scale, v) for g, v in gradients]
  if FLAGS.clip_gradient_norm > 0:
    gradients = [(optimization.clip_by_norm(g, FLAGS.clip_gradient_norm), v)
                 for g, v in gradients]
  if loss_scale:
    return loss_scale.apply_if_finite(optimizer, gradients, global_step)
  return optimizer.apply_gradients(gradients, global_step=global_step)
