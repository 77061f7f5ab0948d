"""The frame-level models' input: dequantization, L2 normalization and frame sampling."""

import tensorflow as tf

from . import dataset_layout

tf1 = tf.compat.v1

L2_EPSILON = 1e-12  # tf.nn.l2_normalize's default


def dequantize(quantized):
  """float32 q * QUANT_SCALE + QUANT_BIAS of a uint8 tensor: one Dequantize op, bit for bit
  dataset_layout.dequantize (docs/differences.md; tests/test_readers.py checks all 256)."""
  return tf.raw_ops.Dequantize(
      input=tf.bitcast(quantized, tf.quint8),
      min_range=tf.constant(dataset_layout.QUANT_BIAS, tf.float32),
      max_range=tf.constant(dataset_layout.QUANT_BIAS + 4.0, tf.float32), mode="MIN_COMBINED")


def dequantize_frames(quantized, valid):
  """float32 features of uint8 frames [..., frames, D], exactly +0.0 where the bool `valid`
  [..., frames] is False (the original pads after dequantizing)."""
  return tf.where(tf.expand_dims(valid, -1), dequantize(quantized), 0.0)


def sampled_feature_blocks(sampled, num_frames, sizes):
  """The input features of sampled frames [batch, samples, sum(sizes)] as column blocks.

  Returns (blocks, row_scale): blocks [(block [batch * samples, size], recompute)], the
  features being row_scale [batch * samples, 1] times the blocks. Float frames are features
  already: their columns are sliced (row_scale and recompute None). uint8 frames are sliced,
  each block dequantized on its own, and row_scale is 1 / each frame's whole norm (from the
  blocks' sums of squares), which the model applies to its [frames, clusters] products instead
  of to the blocks (docs/differences.md); recompute() dequantizes a block anew from the uint8
  frames (fp16_layers.recomputed_in_backward).
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
  """U[0,1) [batch, num_samples]: fresh values in training (seed None); with a fixed (int, int)
  seed, one stateless row shared by every video, so that a video's sampled frames depend only
  on its own frame count, never on its batch or the run."""
  if seed is None:
    return tf1.random_uniform(tf.stack([batch_size, num_samples]), 0, 1, dtype=tf.float32)
  row = tf.random.stateless_uniform([1, num_samples], seed=tf.constant(seed, tf.int64),
                                    dtype=tf.float32)
  return tf.tile(row, tf.stack([batch_size, 1]))


def _gather_frames(model_input, num_frames, frame_index):
  """model_input's frames at frame_index(batch_size, frames [batch, 1] float32), an int32 index
  [batch, num_samples] clamped to the video's last frame (to 0 in a video without frames)."""
  batch_size = tf.shape(model_input)[0]
  frames = tf.cast(tf.expand_dims(num_frames, 1), tf.float32)
  index = frame_index(batch_size, frames)
  index = tf.minimum(index, tf.maximum(tf.cast(frames, tf.int32) - 1, 0))
  return tf.gather(model_input, index, batch_dims=1)


def sample_random_frames(model_input, num_frames, num_samples, seed=None):
  """num_samples frames per video, uniform with replacement among its valid frames, of
  model_input [batch, max_frames, features] (features or uint8 frames): [batch, num_samples,
  features]. num_frames: [batch] int32."""
  return _gather_frames(model_input, num_frames, lambda batch_size, frames: tf.cast(
      _uniform(batch_size, num_samples, seed) * frames, tf.int32))


def sample_random_sequence(model_input, num_frames, num_samples, seed=None):
  """A random window of num_samples consecutive frames per video (short videos repeat the
  last frame); as sample_random_frames otherwise."""
  def window(batch_size, frames):
    max_start = tf.maximum(frames - num_samples, 0.0)
    start = tf.cast(_uniform(batch_size, 1, seed) * (max_start + 1.0), tf.int32)
    return start + tf.expand_dims(tf.range(num_samples), 0)
  return _gather_frames(model_input, num_frames, window)
