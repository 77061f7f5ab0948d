"""Video-level classifiers: LogisticModel and MoeModel (with probability gating).

MoeModel is also the classifier on top of NetVLADModelLF. The settings come as arguments
(model_graph's ModelConfig).
"""

import math

import tensorflow as tf

from . import fp16_layers
from . import models

tf1 = tf.compat.v1


class LogisticModel(models.BaseModel):
  """Logistic regression over the (L2-normalized) video-level features."""

  def create_model(self, model_input, vocab_size, l2_penalty=1e-8, float16_flag=False,
                   compute_dtype=tf.float32, kernel_storage=None, **unused_params):
    output = fp16_layers.fully_connected(
        model_input, vocab_size, activation_fn=tf.nn.sigmoid,
        weights_regularizer=fp16_layers.l2_regularizer(l2_penalty),
        dtype=fp16_layers.kernel_dtype(kernel_storage, float16_flag),
        compute_dtype=compute_dtype)
    return {"predictions": output}


class MoeModel(models.BaseModel):
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
    if kernel_dtype == tf.uint8 and remove_diag and prob_gating and prob_gating_input == "prob":
      raise ValueError("--gating_remove_diag needs the probability gating's diagonal: "
                       "store its kernel in float32 or float16, not uint8")
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
        gates -= probabilities * fp16_layers.as_float32(tf.linalg.diag_part(gating_weights))
      gates = fp16_layers.batch_norm(gates, is_training=is_training, scope="gating_prob_bn")
      probabilities = tf.multiply(probabilities, tf.sigmoid(gates))
    return {"predictions": probabilities}


def _mixture_probabilities(gate_activations, expert_activations, vocab_size, num_mixtures):
  """sum over m < M of softmax(gates over M+1)[m] * sigmoid(experts)[m], per class: [B, V].

  The original's graph takes the softmax of a [B*V, M+1] reshape, slices, multiplies and
  sums; this computes the same values (up to float32 rounding) on M+1 planes [B, V], where
  every op is element-wise or a sum over the outer axis: oneDNN's softmax and sums over a
  last axis of M+1 = 3 run at a fraction of that speed. The planes are summed by reduce_sum
  over a stack, not by additions, which grappler would merge into an AddN whose summation
  order (and so the last bit) varies from run to run.
  """
  gates = tf.unstack(tf.reshape(gate_activations, [-1, vocab_size, num_mixtures + 1]), axis=2)
  experts = tf.unstack(tf.sigmoid(tf.reshape(expert_activations,
                                             [-1, vocab_size, num_mixtures])), axis=2)
  largest = gates[0]
  for gate in gates[1:]:
    largest = tf.maximum(largest, gate)
  weights = [tf.exp(gate - largest) for gate in gates]
  mixed = tf.reduce_sum(tf.stack([w * e for w, e in zip(weights, experts)]), axis=0)
  return mixed / tf.reduce_sum(tf.stack(weights), axis=0)
