"""fully_connected / batch_norm for tf.compat.v1 graphs, with float16 or uint8 kernel storage.

Variable names, shapes, initial values and collections follow tf.contrib.slim (which the
original vendored), so checkpoints stay name-compatible: fully_connected(scope="gates") ->
``gates/weights``, ``gates/biases``; batch_norm(scope="bn") -> ``bn/beta`` ... Only kernels
may be stored narrower, and only the matmuls run in --compute_dtype (docs/differences.md,
"Mixed precision"): biases, batch norm and everything else stay float32.
"""

import tensorflow as tf
from absl import flags
from absl import logging

from . import quantization
from . import runtime_settings

tf1 = tf.compat.v1

BATCH_NORM_DECAY = 0.999
BATCH_NORM_EPSILON = 0.001
# A training graph may add its step counter to this collection: batch_norm then uses the
# decay min(decay, (1 + step) / (10 + step)) (ExponentialMovingAverage's num_updates rule),
# so short runs get usable moving statistics (docs/differences.md, "Training").
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
                   trainable=True, collections=()):
  """tf1.get_variable that also lands in MODEL_VARIABLES (slim.model_variable); a reused
  variable (a second tower) does not add its regularization loss again."""
  if dtype == tf.uint8:  # 8-bit storage: codes and codebook, never trained or regularized
    return quantization.quantized_variable(name, shape)
  collections = list(collections) + [tf1.GraphKeys.GLOBAL_VARIABLES,
                                     tf1.GraphKeys.MODEL_VARIABLES]
  variable = tf1.get_variable(name, shape=shape, dtype=dtype, initializer=initializer,
                              trainable=trainable, collections=collections)
  if regularizer is not None and not tf1.get_variable_scope().reuse:
    tf1.add_to_collection(tf1.GraphKeys.REGULARIZATION_LOSSES, regularizer(variable))
  return variable


# Storage of a model's large kernels: the original's float32 and float16 (--float16_flag), and
# 8 bits (uint8 codes and a per-column uniform codebook: quantization.py).
KERNEL_STORAGES = {"float32": tf.float32, "float16": tf.float16, "uint8": tf.uint8}


def kernel_dtype(kernel_storage=None, float16_flag=False):
  """The dtype of the large kernels: kernel_storage's, or by default --float16_flag's."""
  if kernel_storage is None:
    return tf.float16 if float16_flag else tf.float32
  return KERNEL_STORAGES[kernel_storage]  # checked by ModelConfig.validate


COMPUTE_DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}


def define_compute_dtype_flag():
  """--compute_dtype of the tools that run the model (train, eval, inference, ensemble_weights)."""
  flags.DEFINE_enum(
      "compute_dtype", "float32", list(COMPUTE_DTYPES),
      "dtype of the model's matmuls: float32 (the original), bfloat16 (CPUs with AVX512-BF16 "
      "or AMX, recent GPUs) or float16 (GPUs; training scales the loss dynamically). "
      "Variables, batch norm, losses and outputs stay float32: checkpoints do not depend on it.")


def compute_dtype():
  """The tf dtype of --compute_dtype; bfloat16 on a CPU without it in hardware logs a warning."""
  dtype = COMPUTE_DTYPES[flags.FLAGS.compute_dtype]
  if dtype == tf.bfloat16:
    warning = emulated_bfloat16_warning(runtime_settings.HostCpu())
    if warning:
      logging.log_first_n(logging.WARNING, "%s", 1, warning)
  return dtype


def emulated_bfloat16_warning(cpu):
  """The one line saying bfloat16 matmuls are emulated here, or None (native, or on a GPU)."""
  if cpu.has_native_bfloat16 or tf.config.list_physical_devices("GPU"):
    return None
  return ("--compute_dtype=bfloat16: this CPU, %s, has no bfloat16 in hardware (AVX512_BF16 "
          "or AMX): its bfloat16 matmuls are emulated, slower than float32 (docs/hardware.md, "
          "\"CPU hosts\"), and their products rounded; --compute_dtype=float32 is faster here"
          % cpu.describe())


def as_compute(tensor, compute_dtype):
  """A matmul operand in compute_dtype (no op when it already is)."""
  if tensor.dtype == compute_dtype:
    return tensor
  if tensor.dtype == tf.float16 and compute_dtype == tf.bfloat16:
    # Through float32 (exact): TF's direct float16 -> bfloat16 CPU cast is 2-4x slower.
    tensor = tf.cast(tensor, tf.float32)
  return tf.cast(tensor, compute_dtype)


def matmul(inputs, kernel, compute_dtype=tf.float32, transpose_a=False):
  """inputs x kernel (a float16 kernel cast to float32, as the original), computed in
  compute_dtype: both operands cast to it and the product back to float32."""
  if isinstance(kernel, quantization.QuantizedKernel):
    return kernel.matmul(inputs, compute_dtype)
  product = tf.matmul(as_compute(inputs, compute_dtype), as_compute(kernel, compute_dtype),
                      transpose_a=transpose_a)
  return product if compute_dtype == tf.float32 else tf.cast(product, tf.float32)


def recomputed_in_backward(forward, inputs, recompute, *others):
  """forward(inputs, *others), whose gradients w.r.t. others are autodiff's on recompute()
  instead of inputs, which is then not held until the backward pass. inputs needs no gradient;
  recompute() returns the same values (built after the gradient arrives)."""
  @tf.custom_gradient
  def call(*args):
    def grad(output_gradient):
      with tf.control_dependencies([output_gradient]):
        again = recompute()
      return tf.gradients(forward(again, *args), list(args), grad_ys=output_gradient)
    return forward(inputs, *args), grad
  return call(*others)


def fully_connected(inputs, num_outputs, activation_fn=tf.nn.relu, normalizer_fn=None,
                    normalizer_params=None, weights_regularizer=None,
                    biases_initializer=tf.zeros_initializer(), scope=None, dtype=tf.float32,
                    compute_dtype=tf.float32):
  """slim.fully_connected for rank-2 inputs: act(norm(x W) or x W + b) (a normalizer replaces
  the bias, as in slim), with Glorot uniform ``weights`` [in, out] stored as ``dtype`` and
  float32 ``biases`` [out]; x W is computed in compute_dtype (see matmul)."""
  with tf1.variable_scope(scope, "fully_connected", [inputs]):
    inputs = tf.convert_to_tensor(inputs)
    weights = model_variable("weights", [int(inputs.shape[-1]), num_outputs], dtype=dtype,
                             initializer=tf1.glorot_uniform_initializer(),
                             regularizer=weights_regularizer)
    outputs = matmul(inputs, weights, compute_dtype)
    if normalizer_fn is not None:
      outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    elif biases_initializer is not None:
      biases = model_variable("biases", [num_outputs], initializer=biases_initializer)
      outputs = tf.nn.bias_add(outputs, biases)
    if activation_fn is not None:
      outputs = activation_fn(outputs)
    return outputs


def batch_norm(inputs, is_training=True, scope=None, reuse=None):
  """slim.batch_norm (TF 1.8 fused-kernel semantics, center and scale) over all but the last axis.

  Training normalizes with the batch statistics and adds to UPDATE_OPS the moving averages'
  updates (no zero-debias; the variance's with the Bessel-corrected batch variance, as the
  fused kernel). Inference (is_training=False) normalizes with the moving statistics.
  """
  with tf1.variable_scope(scope, "BatchNorm", [inputs], reuse=reuse):
    inputs = tf.convert_to_tensor(inputs)
    params_shape = [int(inputs.shape[-1])]
    reduction_axes = list(range(inputs.shape.ndims - 1))
    beta = model_variable("beta", params_shape, initializer=tf.zeros_initializer())
    gamma = model_variable("gamma", params_shape, initializer=tf.ones_initializer())
    moving_mean, moving_variance = [
        model_variable(name, params_shape, initializer=initializer, trainable=False,
                       collections=[tf1.GraphKeys.MOVING_AVERAGE_VARIABLES])
        for name, initializer in (("moving_mean", tf.zeros_initializer()),
                                  ("moving_variance", tf.ones_initializer()))]
    if not is_training:
      return tf.nn.batch_normalization(inputs, moving_mean, moving_variance, beta, gamma,
                                       BATCH_NORM_EPSILON)

    decay = BATCH_NORM_DECAY
    warmup_step = tf1.get_collection(BATCH_NORM_WARMUP_STEP)
    if warmup_step:
      step = tf.cast(warmup_step[0], tf.float32)
      decay = tf.minimum(decay, (1.0 + step) / (10.0 + step))
    mean, variance = tf.nn.moments(inputs, reduction_axes)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), reduction_axes)), tf.float32)
    unbiased_variance = variance * count / tf.maximum(count - 1.0, 1.0)
    with tf1.name_scope("AssignMovingAvg"):
      for moving, batch_value in ((moving_mean, mean), (moving_variance, unbiased_variance)):
        tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, tf1.assign_sub(
            moving, (moving - batch_value) * (1.0 - decay)))
    return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, BATCH_NORM_EPSILON)
