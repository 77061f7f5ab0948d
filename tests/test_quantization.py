"""quantization: codes and codebooks against an independent numpy computation, and the graph's
8-bit matmul against the dequantized kernel's."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

quantization = importlib.import_module("youtube-8m.quantization")
tf1 = tf.compat.v1


def reference_codes(kernel, low, high):
  """Nearest of low + i * (high - low) / 255, i = 0..255, by brute force over the 256 values."""
  levels = low + np.arange(256, dtype=np.float64)[:, None, None] * (high - low) / 255.0
  return np.argmin(np.abs(levels - kernel[None].astype(np.float64)), axis=0)


@pytest.mark.parametrize("per_column", [False, True])
def test_codes_are_the_nearest_codebook_entries(per_column):
  rng = np.random.default_rng(0)
  kernel = (rng.standard_normal((40, 7)) * np.array([1, 0.1, 5, 2, 0.5, 1, 3])).astype(
      np.float32)
  codes, codebook = quantization.quantize(kernel, per_column=per_column)
  assert codes.dtype == np.uint8 and codes.shape == kernel.shape
  assert codebook.dtype == np.float32 and codebook.shape == (2, 7)
  low = kernel.min(axis=0) if per_column else np.full(7, kernel.min())
  high = kernel.max(axis=0) if per_column else np.full(7, kernel.max())
  np.testing.assert_array_equal(codebook[0], low)
  np.testing.assert_allclose(codebook[1], (high.astype(np.float64) - low) / 255, rtol=1e-7)
  expected = reference_codes(kernel, low.astype(np.float64), high.astype(np.float64))
  # A value half-way between two entries may round either way: allow only such ties.
  differ = codes.astype(int) != expected
  assert np.count_nonzero(differ) <= 1
  np.testing.assert_array_equal(codes.min(axis=0) if per_column else codes.min(), 0)
  np.testing.assert_array_equal(codes.max(axis=0) if per_column else codes.max(), 255)
  dequantized = quantization.dequantize(codes, codebook)
  np.testing.assert_allclose(dequantized, low + codes * ((high.astype(np.float64) - low) / 255),
                             rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(dequantized - kernel) <= codebook[1] / 2 * (1 + 1e-5) + 1e-7)


def test_constant_column_and_bad_kernels():
  kernel = np.array([[1.5, 0.0], [1.5, 2.0]], np.float32)
  codes, codebook = quantization.quantize(kernel)
  np.testing.assert_array_equal(codes[:, 0], [0, 0])
  np.testing.assert_array_equal(quantization.dequantize(codes, codebook), kernel)
  with pytest.raises(ValueError, match="non-finite"):
    quantization.quantize(np.array([[np.nan, 1.0]], np.float32))
  with pytest.raises(ValueError, match="float matrices"):
    quantization.quantize(np.zeros(3, np.float32))


def test_per_column_error_is_smaller_on_columns_of_different_scales():
  rng = np.random.default_rng(1)
  kernel = (rng.standard_normal((512, 64)) * rng.uniform(0.1, 2, 64)).astype(np.float32)
  global_error = quantization.quantization_error(kernel, per_column=False)
  column_error = quantization.quantization_error(kernel, per_column=True)
  assert column_error["rms"] < global_error["rms"]


@pytest.mark.parametrize("compute_dtype", [tf.float32, tf.bfloat16])
def test_graph_matmul_equals_the_dequantized_kernels(compute_dtype):
  rng = np.random.default_rng(2)
  kernel = rng.standard_normal((96, 30)).astype(np.float32)
  inputs = rng.standard_normal((5, 96)).astype(np.float32)
  codes, codebook = quantization.quantize(kernel)
  graph = tf.Graph()
  with graph.as_default():
    with tf1.variable_scope("hidden1_weights"):
      quantized = quantization.quantized_variable("hidden1_weights", [96, 30])
    product = quantized.matmul(tf.constant(inputs), compute_dtype)
    names = sorted(v.op.name for v in tf1.global_variables())
    assert names == ["hidden1_weights/hidden1_weights",
                     "hidden1_weights/hidden1_weights_quantization"]
    assert not tf1.trainable_variables()
    with tf1.Session() as sess:
      quantized.codes.load(codes, sess)
      quantized.codebook.load(codebook, sess)
      result = sess.run(product)
  expected = inputs.astype(np.float64) @ quantization.dequantize(codes, codebook)
  tolerance = 1e-4 if compute_dtype == tf.float32 else 0.1
  np.testing.assert_allclose(result, expected, atol=tolerance * np.abs(expected).max())


def test_ensemble_checkpoint_writes_codes_and_codebook_from_a_float_kernel(tmp_path):
  checkpoint_utils = importlib.import_module("youtube-8m.checkpoint_utils")
  ensemble_checkpoint = importlib.import_module("youtube-8m.ensemble_checkpoint")
  rng = np.random.default_rng(3)
  kernel = rng.standard_normal((6, 4)).astype(np.float32)
  bias = rng.standard_normal(4).astype(np.float32)
  source = str(tmp_path / "model.ckpt-5")
  checkpoint_utils.write_checkpoint_tensors(source, {
      "tower/experts/weights": kernel, "tower/experts/biases": bias,
      "global_step": np.int64(5)})
  template = {"tower/experts/weights": ((6, 4), tf.uint8),
              "tower/experts/weights_quantization": ((2, 4), tf.float32),
              "tower/experts/biases": ((4,), tf.float32), "global_step": ((), tf.int64)}
  output = str(tmp_path / "ensemble" / "inference_model-0")
  with checkpoint_utils.LocalCopies() as copies:
    plan = ensemble_checkpoint.plan_ensemble(template, [source], copies)
    summary = ensemble_checkpoint.write_plan(plan, copies, output, lambda prefix: open(
        prefix + ".meta", "wb").close())
  assert summary["quantized_tensors"] == 1
  written = tf.train.load_checkpoint(output)
  codes, codebook = quantization.quantize(kernel)
  np.testing.assert_array_equal(written.get_tensor("tower/experts/weights"), codes)
  np.testing.assert_array_equal(written.get_tensor("tower/experts/weights_quantization"),
                                codebook)
  np.testing.assert_array_equal(written.get_tensor("tower/experts/biases"), bias)
  # A codebook whose kernel has another width is refused before anything is read.
  template["tower/experts/weights_quantization"] = ((2, 5), tf.float32)
  with checkpoint_utils.LocalCopies() as copies, pytest.raises(
      ensemble_checkpoint.CheckpointToolError, match="cannot give .* codebook"):
    ensemble_checkpoint.plan_ensemble(template, [source], copies)
