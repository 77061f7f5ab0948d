"""Gradient helpers of the training graph: tower batches and gradients, loss scaling, clipping."""

import tensorflow as tf

tf1 = tf.compat.v1

OPTIMIZERS = ("AdamOptimizer", "GradientDescentOptimizer", "AdagradOptimizer",
              "RMSPropOptimizer")
# Dynamic loss scaling of --compute_dtype=float16 (the policy of TF's LossScaleOptimizer).
LOSS_SCALE_INITIAL = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000


def split_batch(batch, num_towers):
  """Splits every tensor of a batch into num_towers parts whose sizes differ by at most one
  row (the smaller last batch of an epoch included)."""
  if num_towers == 1:
    return [batch]
  rows = tf.shape(batch["labels"])[0]
  sizes = rows // num_towers + tf.cast(tf.range(num_towers) < rows % num_towers, tf.int32)
  parts = {key: tf.split(value, sizes, num=num_towers) for key, value in batch.items()}
  return [{key: parts[key][i] for key in batch} for i in range(num_towers)]


def average_gradients(tower_gradients):
  """[(mean over towers of each variable's gradient, variable)], None gradients dropped."""
  averaged = []
  for pairs in zip(*tower_gradients):
    grads = [g for g, _ in pairs if g is not None]
    if grads:
      averaged.append((tf.add_n(grads) / float(len(grads)) if len(grads) > 1 else grads[0],
                       pairs[0][1]))
  return averaged


class DynamicLossScale(object):
  """Loss scaling for float16 compute, so that small gradients do not flush to zero. A step
  whose gradients hold inf/NaN is skipped (global_step still advances) and halves the scale;
  LOSS_SCALE_GROWTH_STEPS good steps in a row double it. Its variables are local: a resumed
  run starts again from LOSS_SCALE_INITIAL.
  """

  def __init__(self):
    local = [tf1.GraphKeys.LOCAL_VARIABLES]
    self.scale = tf1.get_variable("loss_scale", initializer=LOSS_SCALE_INITIAL,
                                  trainable=False, collections=local)
    self.good_steps = tf1.get_variable("loss_scale_good_steps", initializer=0,
                                       trainable=False, collections=local)

  def apply_if_finite(self, optimizer, gradients, global_step):
    """The train op: applies the (unscaled) gradients if all are finite; updates the scale."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g, _ in gradients])

    def apply():
      with tf.control_dependencies([optimizer.apply_gradients(gradients, global_step)]):
        return tf.constant(True)

    def skip():
      with tf.control_dependencies([global_step.assign_add(1)]):
        return tf.constant(False)

    applied = tf.cond(finite, apply, skip)
    with tf.control_dependencies([applied]):
      good_steps = tf.where(finite, self.good_steps + 1, 0)
      grow = good_steps >= LOSS_SCALE_GROWTH_STEPS
      scale = tf.where(finite, tf.where(grow, 2.0 * self.scale, self.scale),
                       tf.maximum(0.5 * self.scale, 1.0))
      return tf.group(self.scale.assign(scale),
                      self.good_steps.assign(tf.where(grow, 0, good_steps)))


def clip_by_norm(t, clip_norm):
  """tf.clip_by_norm(t, clip_norm) (all axes) as one product, t * (clip_norm / max(norm,
  clip_norm)): the same values up to float32 rounding, in one pass over t fewer."""
  with tf1.name_scope("clip_by_norm"):
    l2norm = tf.math.reduce_euclidean_norm(t)
    return t * (clip_norm / tf.maximum(l2norm, clip_norm))


def loss_gradients(optimizer, label_loss, reg_loss, regularization_penalty, loss_scale,
                   var_list):
  """optimizer.compute_gradients of (label_loss + regularization_penalty * reg_loss) [x the
  loss scale]: [(gradient, variable)] for var_list.

  Computed as two parts added per variable (the same sum, bit for bit), the regularization's
  after the label loss's (a control dependency), so that it is not held all the backward pass.
  """
  data_loss = label_loss * loss_scale.scale if loss_scale else label_loss
  reg_total = regularization_penalty * reg_loss
  if loss_scale:
    reg_total *= loss_scale.scale
  gradients = []
  for gradient, variable in optimizer.compute_gradients(data_loss, var_list=var_list):
    with tf.control_dependencies([] if gradient is None else [gradient]):
      reg_gradient = tf.gradients(reg_total, [variable], grad_ys=tf.ones_like(reg_total))[0]
    if reg_gradient is not None:
      gradient = reg_gradient if gradient is None else tf.add_n([gradient, reg_gradient])
    gradients.append((gradient, variable))
  return gradients
