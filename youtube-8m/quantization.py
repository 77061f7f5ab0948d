"""8-bit storage of a model's large kernels: uint8 codes and a uniform codebook per column.

A kernel W [in, out] is stored as codes C (uint8 [in, out], under W's name) and a float32
``<W's name>_quantization`` [2, out]: row 0 each column's minimum (offset), row 1 its step
((maximum - minimum) / 255). The graph computes x @ W as (x @ C) * step + sum(x) * offset, so
the only pass over the kernel is C's cast to the compute dtype (0..255 are exact in float16).
``per_column=False`` gives one codebook for the whole kernel (the 2018 winning solution's
rule), stored the same way.
"""

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1

LEVELS = 255  # code values 0..255
SUFFIX = "_quantization"  # the codebook variable: <kernel name> + SUFFIX


def codebook_name(kernel_name):
  return kernel_name + SUFFIX


def kernel_of_codebook(name):
  """The kernel name of a codebook variable name, or None for any other variable."""
  return name[:-len(SUFFIX)] if name.endswith(SUFFIX) else None


def quantize(kernel, per_column=True):
  """(codes uint8 [in, out], codebook float32 [2, out]) of a float kernel [in, out]: each
  value's nearest codebook entry (computed in float64); a constant column gets codes 0."""
  kernel = np.asarray(kernel)
  if kernel.ndim != 2 or not np.issubdtype(kernel.dtype, np.floating):
    raise ValueError("only float matrices are quantized, got %s %s" % (kernel.dtype,
                                                                       list(kernel.shape)))
  if not np.all(np.isfinite(kernel)):
    raise ValueError("the kernel holds %d non-finite value(s)"
                     % int(np.count_nonzero(~np.isfinite(kernel))))
  values = kernel.astype(np.float64)
  axis = 0 if per_column else None
  low = np.broadcast_to(values.min(axis=axis), (kernel.shape[1],)).astype(np.float32)
  high = np.broadcast_to(values.max(axis=axis), (kernel.shape[1],)).astype(np.float32)
  step = ((high.astype(np.float64) - low) / LEVELS).astype(np.float32)
  safe_step = np.where(step > 0, step, 1).astype(np.float64)
  # In place: a large kernel's float64 copy is the only temporary.
  values -= low
  values /= safe_step
  np.rint(values, out=values)
  np.clip(values, 0, LEVELS, out=values)
  codes = values.astype(np.uint8)
  codes[:, step <= 0] = 0
  return codes, np.stack([low, step]).astype(np.float32)


def dequantize(codes, codebook):
  """The float32 kernel the codes and codebook stand for (numpy, for checks and reports)."""
  return (codebook[0] + codes.astype(np.float32) * codebook[1]).astype(np.float32)


def quantization_error(kernel, per_column=True):
  """{'max_abs', 'rms'} of dequantize(quantize(kernel)) - kernel."""
  error = dequantize(*quantize(kernel, per_column)) - np.asarray(kernel, np.float32)
  return {"max_abs": float(np.abs(error).max()), "rms": float(np.sqrt(np.mean(
      np.square(error, dtype=np.float64))))}


class QuantizedKernel(object):
  """The codes and codebook variables of one 8-bit kernel, used by fp16_layers.matmul."""

  def __init__(self, codes, codebook):
    self.codes, self.codebook, self.shape = codes, codebook, codes.shape

  def matmul(self, inputs, compute_dtype):
    """inputs [batch, in] x the kernel -> [batch, out] float32."""
    codes = tf.cast(self.codes, compute_dtype)
    product = tf.matmul(tf.cast(inputs, compute_dtype), codes)
    if compute_dtype != tf.float32:
      product = tf.cast(product, tf.float32)
    inputs = tf.cast(inputs, tf.float32)
    offset, step = tf.unstack(self.codebook)
    return product * step + tf.reduce_sum(inputs, axis=1, keepdims=True) * offset


def quantized_variable(name, shape):
  """QuantizedKernel of new non-trainable model variables name (uint8 codes) and its codebook."""
  collections = [tf1.GraphKeys.GLOBAL_VARIABLES, tf1.GraphKeys.MODEL_VARIABLES]
  codes = tf1.get_variable(name, shape=shape, dtype=tf.uint8, trainable=False,
                           initializer=tf1.zeros_initializer(), collections=collections)
  codebook = tf1.get_variable(codebook_name(name), shape=[2, shape[-1]], dtype=tf.float32,
                              trainable=False, initializer=tf1.zeros_initializer(),
                              collections=collections)
  return QuantizedKernel(codes, codebook)
