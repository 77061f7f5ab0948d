"""fully_connected / Dense / batch_norm for tf.compat.v1 graphs, with float16 kernel storage.

Variable names, shapes, initial values and collections follow tf.contrib.slim (which the
original vendored with a dtype switch), so checkpoints stay name-compatible:

* fully_connected(scope="gates") -> ``gates/weights`` [in, out], ``gates/biases`` [out]
* batch_norm(scope="cluster_bn") -> ``cluster_bn/{beta,gamma,moving_mean,moving_variance}``

With ``dtype=tf.float16`` only the kernel is stored in float16; it is cast to float32 right
before the matmul, so all compute (activations, losses) stays float32. Biases and every
batch-norm variable stay float32 (as in the original's float16 mode).
"""

import tensorflow as tf

tf1 = tf.compat.v1

BATCH_NORM_DECAY = 0.999
BATCH_NORM_EPSILON = 0.001
# A training graph may add its step counter to this collection: batch_norm then uses the
# decay min(decay, (1 + step) / (10 + step)) (ExponentialMovingAverage's num_updates rule),
# so short runs get usable moving statistics (README, "Training").
BATCH_NORM_WARMUP_STEP = "batch_norm_warmup_step"


def l2_regularizer(scale):
  """slim.l2_regularizer: scale * sum(w^2) / 2, always computed in float32."""
  if scale is None or scale <= 0.0:
    return None

  def regularizer(weights):
    with tf1.name_scope("l2_regularizer"):
      return tf.multiply(float(scale), tf.nn.l2_loss(tf.cast(weights, tf.float32)),
                         name="value")

  return regularizer


def model_variable(name, shape, dtype=tf.float32, initializer=None, regularizer=None,
                   trainable=True, collections=None):
  """tf1.get_variable that also lands in MODEL_VARIABLES (slim.model_variable semantics).

  The regularization loss is registered here, outside tf1.get_variable, so that a reused
  variable (a second tower) does not add it twice.
  """
  collections = list(collections or []) + [tf1.GraphKeys.GLOBAL_VARIABLES,
                                           tf1.GraphKeys.MODEL_VARIABLES]
  scope_reuse = tf1.get_variable_scope().reuse
  variable = tf1.get_variable(name, shape=shape, dtype=dtype, initializer=initializer,
                              trainable=trainable, collections=collections)
  if regularizer is not None and not scope_reuse:
    loss = regularizer(variable)
    if loss is not None:
      tf1.add_to_collection(tf1.GraphKeys.REGULARIZATION_LOSSES, loss)
  return variable


def as_float32(tensor):
  """Cast a float16 kernel for float32 compute; float32 passes through unchanged."""
  return tensor if tensor.dtype == tf.float32 else tf.cast(tensor, tf.float32)


class Dense(object):
  """A densely connected layer y = act(x W + b) with variables ``weights`` and ``biases``.

  Variables are created in the variable scope active at the first call. ``dtype`` is the
  storage dtype of the kernel (float32 or float16); compute is float32.
  """

  def __init__(self, units, activation=None, use_bias=True, kernel_initializer=None,
               bias_initializer=tf.zeros_initializer(), kernel_regularizer=None,
               bias_regularizer=None, trainable=True, dtype=tf.float32):
    if dtype not in (tf.float32, tf.float16):
      raise ValueError("Dense kernel dtype must be float32 or float16, got %s" % dtype)
    self.units = int(units)
    self.activation = activation
    self.use_bias = use_bias
    self.kernel_initializer = kernel_initializer
    self.bias_initializer = bias_initializer
    self.kernel_regularizer = kernel_regularizer
    self.bias_regularizer = bias_regularizer
    self.trainable = trainable
    self.dtype = dtype
    self.kernel = None
    self.bias = None

  def __call__(self, inputs):
    inputs = tf.convert_to_tensor(inputs)
    input_size = inputs.shape[-1]
    if input_size is None:
      raise ValueError("Dense needs a known last input dimension, got shape %s" % inputs.shape)
    kernel_initializer = self.kernel_initializer or tf1.glorot_uniform_initializer()
    self.kernel = model_variable("weights", [int(input_size), self.units], dtype=self.dtype,
                                 initializer=kernel_initializer,
                                 regularizer=self.kernel_regularizer, trainable=self.trainable)
    outputs = tf.matmul(tf.cast(inputs, tf.float32), as_float32(self.kernel))
    if self.use_bias:
      self.bias = model_variable("biases", [self.units], dtype=tf.float32,
                                 initializer=self.bias_initializer,
                                 regularizer=self.bias_regularizer, trainable=self.trainable)
      outputs = tf.nn.bias_add(outputs, self.bias)
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs


def fully_connected(inputs, num_outputs, activation_fn=tf.nn.relu, normalizer_fn=None,
                    normalizer_params=None, weights_initializer=None,
                    weights_regularizer=None, biases_initializer=tf.zeros_initializer(),
                    biases_regularizer=None, reuse=None, trainable=True, scope=None,
                    dtype=tf.float32):
  """slim.fully_connected for rank-2 inputs, with a float16 kernel option (``dtype``).

  As in slim, a normalizer replaces the bias; the activation comes last. The default kernel
  initializer is Glorot uniform (slim's xavier_initializer()).
  """
  with tf1.variable_scope(scope, "fully_connected", [inputs], reuse=reuse):
    layer = Dense(num_outputs, activation=None,
                  use_bias=normalizer_fn is None and biases_initializer is not None,
                  kernel_initializer=weights_initializer, bias_initializer=biases_initializer,
                  kernel_regularizer=weights_regularizer, bias_regularizer=biases_regularizer,
                  trainable=trainable, dtype=dtype)
    outputs = layer(inputs)
    if normalizer_fn is not None:
      outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    if activation_fn is not None:
      outputs = activation_fn(outputs)
    return outputs


def batch_norm(inputs, decay=BATCH_NORM_DECAY, center=True, scale=True,
               epsilon=BATCH_NORM_EPSILON, is_training=True, scope=None, reuse=None,
               updates_collections=tf1.GraphKeys.UPDATE_OPS, trainable=True):
  """slim.batch_norm (TF 1.8 fused-kernel semantics) over all axes but the last.

  Training normalizes with the batch mean and the biased batch variance, and updates
  moving_mean / moving_variance with ``decay`` (no zero-debias), the variance update using
  the Bessel-corrected n/(n-1) batch variance as the fused kernel did. The update ops go to
  ``updates_collections`` (UPDATE_OPS); the caller makes the loss depend on them.
  Inference (is_training=False) normalizes with the moving statistics.
  """
  with tf1.variable_scope(scope, "BatchNorm", [inputs], reuse=reuse):
    inputs = tf.convert_to_tensor(inputs)
    params_shape = [int(inputs.shape[-1])]
    reduction_axes = list(range(inputs.shape.ndims - 1))
    beta = gamma = None
    if center:
      beta = model_variable("beta", params_shape, initializer=tf.zeros_initializer(),
                            trainable=trainable)
    if scale:
      gamma = model_variable("gamma", params_shape, initializer=tf.ones_initializer(),
                             trainable=trainable)
    moving_collections = [tf1.GraphKeys.MOVING_AVERAGE_VARIABLES]
    moving_mean = model_variable("moving_mean", params_shape,
                                 initializer=tf.zeros_initializer(), trainable=False,
                                 collections=moving_collections)
    moving_variance = model_variable("moving_variance", params_shape,
                                     initializer=tf.ones_initializer(), trainable=False,
                                     collections=moving_collections)
    if not is_training:
      return tf.nn.batch_normalization(inputs, moving_mean, moving_variance, beta, gamma,
                                       epsilon)

    warmup_step = tf1.get_collection(BATCH_NORM_WARMUP_STEP)
    if warmup_step:
      step = tf.cast(warmup_step[0], tf.float32)
      decay = tf.minimum(float(decay), (1.0 + step) / (10.0 + step))
    mean, variance = tf.nn.moments(inputs, reduction_axes)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), reduction_axes)), tf.float32)
    unbiased_variance = variance * count / tf.maximum(count - 1.0, 1.0)
    with tf1.name_scope("AssignMovingAvg"):
      update_mean = tf1.assign_sub(moving_mean, (moving_mean - mean) * (1.0 - decay))
      update_variance = tf1.assign_sub(
          moving_variance, (moving_variance - unbiased_variance) * (1.0 - decay))
    if updates_collections is None:
      with tf.control_dependencies([update_mean, update_variance]):
        mean, variance = tf.identity(mean), tf.identity(variance)
    else:
      tf1.add_to_collection(updates_collections, update_mean)
      tf1.add_to_collection(updates_collections, update_variance)
    return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, epsilon)
