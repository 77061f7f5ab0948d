"""The Gated NetVLAD model of the 10th-place solution (NetVLADModelLF): graph and variable names
as the original's (docs/original.md), e.g. ``video_VLAD/conv2/cluster_weights``."""

import functools
import math

import tensorflow as tf

from . import fp16_layers
from . import model_utils
from . import video_level_models

tf1 = tf.compat.v1


def _normal_kernel(name, shape, stddev, dtype=tf.float32, scope=None):
  """The original's variable (scope or name)/name, initialized from N(0, stddev^2)."""
  with tf1.variable_scope(scope or name):
    return fp16_layers.model_variable(
        name, shape, dtype=dtype, initializer=tf1.random_normal_initializer(stddev=stddev))


def netvlad(reshaped_input, feature_size, max_frames, cluster_size, is_training,
            compute_dtype=tf.float32, recompute_input=None, row_scale=None):
  """NetVLAD pooling of [batch*frames, feature_size] into [batch, feature_size*cluster_size].

  The features are row_scale [batch*frames, 1] (None: 1) times reshaped_input (in
  compute_dtype, as both matmuls): the scale is applied to the matmuls' [batch*frames,
  cluster_size] side. recompute_input: None, or a function making reshaped_input anew for
  both matmuls' gradients (fp16_layers.recomputed_in_backward).
  """
  def with_input(forward, *others):
    if recompute_input is None:
      return forward(reshaped_input, *others)
    return fp16_layers.recomputed_in_backward(forward, reshaped_input, recompute_input, *others)

  def scaled(rows):
    return rows if row_scale is None else rows * row_scale

  stddev = 1 / math.sqrt(feature_size)
  cluster_weights = _normal_kernel("cluster_weights", [feature_size, cluster_size], stddev,
                                   scope="conv2")
  activation = scaled(with_input(
      lambda inputs, kernel: fp16_layers.matmul(inputs, kernel, compute_dtype), cluster_weights))
  activation = fp16_layers.batch_norm(activation, is_training=is_training, scope="cluster_bn")
  activation = tf.nn.softmax(activation)
  a_sum = tf.reduce_sum(tf.reshape(activation, [-1, max_frames, cluster_size]), -2,
                        keepdims=True)
  cluster_weights2 = _normal_kernel("cluster_weights2", [1, feature_size, cluster_size], stddev)
  anchors = tf.multiply(a_sum, cluster_weights2)

  # [batch, feature_size, cluster_size] directly: the input's side transposed in the matmul.
  assignments = tf.reshape(scaled(activation), [-1, max_frames, cluster_size])
  vlad = with_input(
      lambda inputs, weights: fp16_layers.matmul(
          tf.reshape(inputs, [-1, max_frames, feature_size]), weights, compute_dtype,
          transpose_a=True),
      assignments)
  vlad = tf.subtract(vlad, anchors)
  return tf.reshape(vlad * normalization_scale(vlad), [-1, cluster_size * feature_size])


def normalization_scale(vlad):
  """[batch, 1, clusters]: the factor of l2_normalize(reshape(l2_normalize(vlad, 1)), 1), the
  second norm from the first's sums of squares (sum over clusters of n_k / max(n_k, eps)):
  the [batch, features, clusters] tensor is squared and summed once, and scaled once."""
  square_norm = tf.reduce_sum(tf.square(vlad), 1, keepdims=True)
  inverse = tf.math.rsqrt(tf.maximum(square_norm, model_utils.L2_EPSILON))
  total = tf.reduce_sum(square_norm * tf.square(inverse), -1, keepdims=True)
  return inverse * tf.math.rsqrt(tf.maximum(total, model_utils.L2_EPSILON))


class NetVLADModelLF(object):
  """Gated NetVLAD: video and audio NetVLAD -> hidden1 (BN, relu6) -> hidden2 (2H) ->
  context gating -> MoE with probability gating.

  model_input: [batch, max_frames, 1024 + 128] (rgb columns first, then audio): the input
  features, or the uint8-quantized frames (only the sampled ones are dequantized).
  compute_dtype: the dtype of the matmuls (fp16_layers.matmul).
  recompute_features: in float32 training, the backward pass makes the sampled uint8 frames'
  rgb features anew instead of holding them (the same gradients, bit for bit; less memory).
  """

  def create_model(self, model_input, vocab_size, num_frames, cluster_size, hidden_size,
                   iterations, sample_random_frames, gating, float16_flag, classifier_model,
                   is_training=True, sampling_seed=None, compute_dtype=tf.float32,
                   recompute_features=True, kernel_storage=None, **classifier_params):
    kernel_dtype = fp16_layers.kernel_dtype(kernel_storage, float16_flag)
    sampler = (model_utils.sample_random_frames if sample_random_frames
               else model_utils.sample_random_sequence)
    model_input = sampler(model_input, num_frames, iterations, seed=sampling_seed)
    feature_size = int(model_input.shape[2])  # rgb (1024) then audio: ModelConfig.validate
    blocks, row_scale = model_utils.sampled_feature_blocks(
        model_input, num_frames, [1024, feature_size - 1024])
    (video_frames, make_video_frames), (audio_frames, _) = [
        (fp16_layers.as_compute(block, compute_dtype), make_block)
        for block, make_block in blocks]
    # Only the float32 rgb features are worth recomputing: the audio ones are 8 times smaller,
    # and a narrower compute dtype's copy is smaller and costs a cast more to make again.
    video_again = None
    if (is_training and recompute_features and make_video_frames
        and compute_dtype == tf.float32):
      # Built once, when the first of both matmuls' gradients needs it.
      video_again = functools.cache(
          lambda: fp16_layers.as_compute(make_video_frames(), compute_dtype))

    with tf1.variable_scope("video_VLAD"):
      vlad_video = netvlad(video_frames, 1024, iterations, cluster_size, is_training,
                           compute_dtype, video_again, row_scale)
    with tf1.variable_scope("audio_VLAD"):
      vlad_audio = netvlad(audio_frames, feature_size - 1024, iterations,
                           int(cluster_size / 2), is_training, compute_dtype,
                           row_scale=row_scale)
    vlad = tf.concat([vlad_video, vlad_audio], 1)

    activation = hidden_layers(vlad, hidden_size, gating, kernel_dtype, is_training,
                               compute_dtype)
    classifier = getattr(video_level_models, classifier_model)()
    return classifier.create_model(model_input=activation, vocab_size=vocab_size,
                                   is_training=is_training, float16_flag=float16_flag,
                                   compute_dtype=compute_dtype, kernel_storage=kernel_storage,
                                   **classifier_params)


def hidden_layers(vlad, hidden_size, gating, kernel_dtype, is_training, compute_dtype):
  """hidden1 (H, batch norm, relu6) -> hidden2 (2H) [-> context gating] of the NetVLAD
  features. hidden1's kernel is stored as kernel_dtype; hidden2's and the gating's are float32
  (as in the original, also with --float16_flag) unless kernel_dtype is uint8."""
  vlad_dim = int(vlad.shape[1])
  small_dtype = tf.uint8 if kernel_dtype == tf.uint8 else tf.float32
  hidden1_weights = _normal_kernel("hidden1_weights", [vlad_dim, hidden_size],
                                   1 / math.sqrt(vlad_dim), kernel_dtype)
  activation = fp16_layers.matmul(vlad, hidden1_weights, compute_dtype)
  activation = fp16_layers.batch_norm(activation, is_training=is_training, scope="hidden1_bn")
  activation = tf.nn.relu6(activation)

  hidden2_weights = _normal_kernel("hidden2_weights", [hidden_size, 2 * hidden_size],
                                   1 / math.sqrt(hidden_size), small_dtype)
  hidden2_biases = fp16_layers.model_variable(
      "hidden2_biases", [2 * hidden_size],
      initializer=tf1.random_normal_initializer(stddev=0.01))
  activation = (fp16_layers.matmul(activation, hidden2_weights, compute_dtype)
                + hidden2_biases)

  if gating:
    gating_weights = _normal_kernel("gating_weights", [2 * hidden_size, 2 * hidden_size],
                                    1 / math.sqrt(2 * hidden_size), small_dtype)
    gates = fp16_layers.matmul(activation, gating_weights, compute_dtype)
    gates = fp16_layers.batch_norm(gates, is_training=is_training, scope="gating_bn")
    activation = tf.multiply(activation, tf.sigmoid(gates))
  return activation
