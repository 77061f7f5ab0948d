"""Label losses on [batch, num_classes] predictions in (0, 1) and 0/1 labels."""

import tensorflow as tf

tf1 = tf.compat.v1


class CrossEntropyLoss(object):
  """Binary cross-entropy summed over classes, averaged over the batch (epsilon 1e-5, the
  original's value, which it wrote 10e-6)."""

  def calculate_loss(self, predictions, labels, epsilon=1e-5, **unused_params):
    with tf1.name_scope("loss_xent"):
      float_labels = tf.cast(labels, tf.float32)
      cross_entropy_loss = float_labels * tf.math.log(predictions + epsilon) + (
          1 - float_labels) * tf.math.log(1 - predictions + epsilon)
      return tf.reduce_mean(tf.reduce_sum(-cross_entropy_loss, 1))


class HingeLoss(object):
  """Hinge loss with labels mapped to {-1, 1}, summed over classes, averaged over the batch."""

  def calculate_loss(self, predictions, labels, b=1.0, **unused_params):
    with tf1.name_scope("loss_hinge"):
      float_labels = tf.cast(labels, tf.float32)
      sign_labels = 2 * float_labels - 1
      hinge = tf.maximum(0.0, b - sign_labels * predictions)
      return tf.reduce_mean(tf.reduce_sum(hinge, 1))


class SoftmaxLoss(object):
  """Softmax cross-entropy against the label distribution (labels normalized to sum 1)."""

  def calculate_loss(self, predictions, labels, epsilon=1e-7, **unused_params):
    with tf1.name_scope("loss_softmax"):
      float_labels = tf.cast(labels, tf.float32)
      label_rowsum = tf.maximum(tf.reduce_sum(float_labels, 1, keepdims=True), epsilon)
      norm_float_labels = float_labels / label_rowsum
      softmax_outputs = tf.nn.softmax(predictions)
      return tf.reduce_mean(tf.negative(tf.reduce_sum(
          norm_float_labels * tf.math.log(softmax_outputs + epsilon), 1)))


LOSSES = {"CrossEntropyLoss": CrossEntropyLoss, "HingeLoss": HingeLoss,
          "SoftmaxLoss": SoftmaxLoss}


def get_loss(name):
  if name not in LOSSES:
    raise ValueError("--label_loss=%r is not one of %s" % (name, ", ".join(sorted(LOSSES))))
  return LOSSES[name]()
