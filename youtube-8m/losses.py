"""Label losses on [batch, num_classes] predictions in (0, 1) and 0/1 labels."""

import tensorflow as tf

tf1 = tf.compat.v1


class CrossEntropyLoss(object):
  """Binary cross-entropy summed over classes, averaged over the batch (epsilon 1e-5, the
  original's value, which it wrote 10e-6)."""

  def calculate_loss(self, predictions, labels):
    with tf1.name_scope("loss_xent"):
      float_labels = tf.cast(labels, tf.float32)
      cross_entropy_loss = float_labels * tf.math.log(predictions + 1e-5) + (
          1 - float_labels) * tf.math.log(1 - predictions + 1e-5)
      return tf.reduce_mean(tf.reduce_sum(-cross_entropy_loss, 1))


class HingeLoss(object):
  """Hinge loss with labels mapped to {-1, 1}, summed over classes, averaged over the batch."""

  def calculate_loss(self, predictions, labels):
    with tf1.name_scope("loss_hinge"):
      sign_labels = 2 * tf.cast(labels, tf.float32) - 1
      hinge = tf.maximum(0.0, 1.0 - sign_labels * predictions)
      return tf.reduce_mean(tf.reduce_sum(hinge, 1))


class SoftmaxLoss(object):
  """Softmax cross-entropy against the label distribution (labels normalized to sum 1)."""

  def calculate_loss(self, predictions, labels):
    with tf1.name_scope("loss_softmax"):
      float_labels = tf.cast(labels, tf.float32)
      norm_float_labels = float_labels / tf.maximum(
          tf.reduce_sum(float_labels, 1, keepdims=True), 1e-7)
      softmax_outputs = tf.nn.softmax(predictions)
      return tf.reduce_mean(tf.negative(tf.reduce_sum(
          norm_float_labels * tf.math.log(softmax_outputs + 1e-7), 1)))


LOSSES = {loss.__name__: loss for loss in (CrossEntropyLoss, HingeLoss, SoftmaxLoss)}


def get_loss(name):
  if name not in LOSSES:
    raise ValueError("--label_loss=%r is not one of %s" % (name, ", ".join(sorted(LOSSES))))
  return LOSSES[name]()
