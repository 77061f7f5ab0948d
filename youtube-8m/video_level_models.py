"""Video-level classifiers LogisticModel and MoeModel (also NetVLADModelLF's classifier): their
create_model returns {"predictions": [batch, vocab_size] in (0, 1)}."""

import math

import tensorflow as tf

from . import fp16_layers

tf1 = tf.compat.v1


class LogisticModel(object):
  """Logistic regression over the (L2-normalized) video-level features."""

  def create_model(self, model_input, vocab_size, l2_penalty=1e-8, float16_flag=False,
                   compute_dtype=tf.float32, kernel_storage=None, **unused_params):
    output = fp16_layers.fully_connected(
        model_input, vocab_size, activation_fn=tf.nn.sigmoid,
        weights_regularizer=fp16_layers.l2_regularizer(l2_penalty),
        dtype=fp16_layers.kernel_dtype(kernel_storage, float16_flag),
        compute_dtype=compute_dtype)
    return {"predictions": output}


class MoeModel(object):
  """Mixture of (num_mixtures + 1 dummy) logistic experts per class, optionally followed by
  probability gating: predictions = p * sigmoid(BN(p W)).

  Variables (relative to the calling scope): gates/weights [D, V*(M+1)], experts/weights
  [D, V*M], experts/biases [V*M], and with prob gating gating_prob_weights [V, V] (or
  [D, V] for input gating) plus gating_prob_bn/*. Columns are class-major (v*(M+1)+m).
  The matmuls run in compute_dtype (fp16_layers.matmul), the rest in float32.
  """

  def create_model(self, model_input, vocab_size, num_mixtures, l2_penalty, prob_gating,
                   prob_gating_input, remove_diag, is_training=True, float16_flag=False,
                   compute_dtype=tf.float32, kernel_storage=None, **unused_params):
    kernel_dtype = fp16_layers.kernel_dtype(kernel_storage, float16_flag)
    regularizer = fp16_layers.l2_regularizer(l2_penalty)

    gate_activations = fp16_layers.fully_connected(
        model_input, vocab_size * (num_mixtures + 1), activation_fn=None,
        biases_initializer=None, weights_regularizer=regularizer, scope="gates",
        dtype=kernel_dtype, compute_dtype=compute_dtype)
    expert_activations = fp16_layers.fully_connected(
        model_input, vocab_size * num_mixtures, activation_fn=None,
        weights_regularizer=regularizer, scope="experts", dtype=kernel_dtype,
        compute_dtype=compute_dtype)
    probabilities = _mixture_probabilities(gate_activations, expert_activations, vocab_size,
                                           num_mixtures)
    if prob_gating:
      gating_input = probabilities if prob_gating_input == "prob" else model_input
      gating_weights = fp16_layers.model_variable(
          "gating_prob_weights", [int(gating_input.shape[-1]), vocab_size], dtype=kernel_dtype,
          initializer=tf1.random_normal_initializer(stddev=1 / math.sqrt(vocab_size)))
      gates = fp16_layers.matmul(gating_input, gating_weights, compute_dtype)
      if remove_diag and prob_gating_input == "prob":
        gates -= probabilities * fp16_layers.as_compute(
            tf.linalg.diag_part(gating_weights), tf.float32)
      gates = fp16_layers.batch_norm(gates, is_training=is_training, scope="gating_prob_bn")
      probabilities = tf.multiply(probabilities, tf.sigmoid(gates))
    return {"predictions": probabilities}


def _mixture_probabilities(gate_activations, expert_activations, vocab_size, num_mixtures):
  """sum over m < M of softmax(gates over M+1)[m] * sigmoid(experts)[m], per class: [B, V].

  The original's softmax of a [B*V, M+1] reshape, computed (the same values up to float32
  rounding) on the mixtures moved to the outer axis, [M+1, B, V]: every op after the transpose
  is element-wise or a sum over that axis, much faster on CPUs than over a last axis of M+1.
  The shift by the maximum needs no gradient: the softmax does not depend on it.
  """
  gates = tf.transpose(tf.reshape(gate_activations, [-1, vocab_size, num_mixtures + 1]),
                       [2, 0, 1])
  experts = tf.sigmoid(tf.transpose(tf.reshape(expert_activations,
                                               [-1, vocab_size, num_mixtures]), [2, 0, 1]))
  weights = tf.exp(gates - tf.stop_gradient(tf.reduce_max(gates, 0)))
  expert_weights, _ = tf.split(weights, [num_mixtures, 1], 0)
  return tf.reduce_sum(expert_weights * experts, 0) / tf.reduce_sum(weights, 0)
