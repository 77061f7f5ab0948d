"""The frame-level models' input: dequantization, L2 normalization and frame sampling."""

import tensorflow as tf

from . import dataset_layout

tf1 = tf.compat.v1

L2_EPSILON = 1e-12  # tf.nn.l2_normalize's default


def dequantize(quantized):
  """float32 q * QUANT_SCALE + QUANT_BIAS of a uint8 tensor, in one pass over the data.

  Dequantize (MIN_COMBINED, quint8) computes q * ((max - min) / 255) + min in float32; with
  min = QUANT_BIAS and max - min = 4.0 (both exact in float32) that is the same product and
  sum as dataset_layout.dequantize, bit for bit (tests/test_readers.py checks all 256 values),
  where a cast, a product and a sum would write the float32 tensor three times.
  """
  return tf.raw_ops.Dequantize(
      input=tf.bitcast(quantized, tf.quint8),
      min_range=tf.constant(dataset_layout.QUANT_BIAS, tf.float32),
      max_range=tf.constant(dataset_layout.QUANT_BIAS + 4.0, tf.float32), mode="MIN_COMBINED")


def dequantize_frames(quantized, valid):
  """float32 features of uint8-quantized frames [..., frames, D] as the original's reader
  computes them (dataset_layout.dequantize), exactly +0.0 where the bool `valid` [..., frames]
  is False (the original pads after dequantizing)."""
  return tf.where(tf.expand_dims(valid, -1), dequantize(quantized), 0.0)


def input_features(frames, valid):
  """The model's input features: each frame's vector L2-normalized as a whole, after
  dequantize_frames if frames are uint8 (valid: as there), as the original's graph does."""
  if frames.dtype == tf.uint8:
    frames = dequantize_frames(frames, valid)
  return tf.nn.l2_normalize(frames, -1)


def sampled_feature_blocks(sampled, num_frames, sizes):
  """The input features of a sampler's frames [batch, num_samples, sum(sizes)] as column blocks
  (e.g. rgb 1024, audio 128): (blocks, row_scale), blocks [(block [batch * num_samples, size],
  recompute) for size in sizes], the features being row_scale [batch * num_samples, 1] times
  the blocks (row_scale None: the blocks are the features); recompute() makes a block's values
  anew (None for float frames).

  Float frames are already input features: their columns are sliced. uint8 (quantized)
  frames, which the samplers return as they are, are sliced first and each block dequantized
  on its own (a sampled index is a valid frame unless the video has none): neither the whole
  float32 features nor their copies of the blocks are made. Each frame's vector is normalized as a whole, by the norm from the
  blocks' sums of squares (reduce_euclidean_norm: no tensor of squares); that 1 / norm is
  row_scale, which the model applies to the products of the blocks with its kernels, [frames,
  clusters], instead of to the blocks, [frames, features] (the same values up to float32
  rounding). recompute() works from the sampled uint8 frames, far smaller than the block
  (fp16_layers.recomputed_in_backward).
  """
  bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
  rows = tf.reshape(sampled, [-1, bounds[-1]])
  columns = [rows[:, start:end] for start, end in zip(bounds[:-1], bounds[1:])]
  if sampled.dtype != tf.uint8:
    return [(block, None) for block in columns], None
  blocks = [dequantize(block) for block in columns]
  square_sum = tf.add_n([tf.square(tf.math.reduce_euclidean_norm(block, -1, keepdims=True))
                         for block in blocks])
  inverse_norm = tf.math.rsqrt(tf.maximum(square_sum, L2_EPSILON))  # as tf.nn.l2_normalize
  # A video without frames samples its zero padding: zero features, by a zero scale.
  valid = tf.broadcast_to(tf.expand_dims(num_frames > 0, 1), tf.shape(sampled)[:2])
  inverse_norm = tf.where(tf.reshape(valid, [-1, 1]), inverse_norm, 0.0)
  return [(block, lambda frames=frames: dequantize(frames))
          for block, frames in zip(blocks, columns)], inverse_norm


def _uniform(batch_size, num_samples, seed):
  """U[0,1) of shape [batch, num_samples].

  Training (seed None) draws fresh values per video and step. Evaluation and inference pass
  a fixed (int, int) seed: one stateless row of offsets is shared by every video, so a
  video's sampled frames depend only on its own frame count, never on the batch it lands in,
  the batch size or the run.
  """
  if seed is None:
    return tf1.random_uniform(tf.stack([batch_size, num_samples]), 0, 1, dtype=tf.float32)
  row = tf.random.stateless_uniform([1, num_samples], seed=tf.constant(seed, tf.int64),
                                    dtype=tf.float32)
  return tf.tile(row, tf.stack([batch_size, 1]))


def sample_random_frames(model_input, num_frames, num_samples, seed=None):
  """Samples num_samples frames per video uniformly with replacement among its valid frames.

  model_input: [batch, max_frames, features], the input features or the uint8-quantized
  frames (sampled as they are: sampled_feature_blocks dequantizes and normalizes them);
  num_frames: [batch] int32. Every sampled index is a valid frame, except in a video with 0
  frames: index 0 (a zero row). Returns [batch, num_samples, features] of model_input's dtype.
  """
  batch_size = tf.shape(model_input)[0]
  frames = tf.cast(tf.expand_dims(num_frames, 1), tf.float32)
  frame_index = tf.cast(_uniform(batch_size, num_samples, seed) * frames, tf.int32)
  frame_index = tf.minimum(frame_index, tf.maximum(tf.cast(frames, tf.int32) - 1, 0))
  return tf.gather(model_input, frame_index, batch_dims=1)


def sample_random_sequence(model_input, num_frames, num_samples, seed=None):
  """A random window of num_samples consecutive frames per video (short videos repeat the
  last frame). model_input as sample_random_frames'. Returns [batch, num_samples, features]."""
  batch_size = tf.shape(model_input)[0]
  frames = tf.cast(tf.expand_dims(num_frames, 1), tf.float32)
  max_start = tf.maximum(frames - num_samples, 0.0)
  offsets = _uniform(batch_size, 1, seed)
  start = tf.cast(offsets * (max_start + 1.0), tf.int32)
  frame_index = start + tf.expand_dims(tf.range(num_samples), 0)
  frame_index = tf.minimum(frame_index, tf.maximum(tf.cast(frames, tf.int32) - 1, 0))
  return tf.gather(model_input, frame_index, batch_dims=1)
