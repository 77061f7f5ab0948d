"""--compute_dtype: bfloat16 / float16 matmuls, float32 variables, interchangeable checkpoints
(real train/eval/inference runs), dynamic loss scaling (in-process, like
test_training_graph) and float16 kernels used without a float32 copy."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, run_cli, yt8m
import test_training_graph

tf1 = tf.compat.v1
train = yt8m("train")
model_graph = yt8m("model_graph")
checkpoint_utils = yt8m("checkpoint_utils")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]
STEPS = 40


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  """{compute dtype: train_dir, compute dtype + " log": its stderr} of the same model trained
  STEPS steps in float32 / bfloat16."""
  dirs = {}
  for dtype in ("float32", "bfloat16"):
    dirs[dtype] = str(tmp_path_factory.mktemp("train_" + dtype))
    result = run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
                     "--train_dir=" + dirs[dtype], "--batch_size=32",
                     "--base_learning_rate=0.01", "--num_epochs=100",
                     "--max_steps=%d" % STEPS, "--random_seed=5",
                     "--compute_dtype=" + dtype, *MODEL_FLAGS)
    dirs[dtype + " log"] = result.stderr
  return dirs


@pytest.mark.slow
def test_bfloat16_on_a_cpu_without_it_says_so_once(trained):
  warnings = [line for line in trained["bfloat16 log"].splitlines()
              if "--compute_dtype=bfloat16: this CPU" in line]
  emulated = not yt8m("runtime_settings").HostCpu().has_native_bfloat16
  assert len(warnings) == (1 if emulated else 0), warnings
  assert "--compute_dtype=bfloat16: this CPU" not in trained["float32 log"]


def evaluate(tiny_data, train_dir, dtype, tmp_path):
  results = str(tmp_path / ("eval_%s.json" % dtype))
  run_cli("eval", "--eval_data_pattern=" + tiny_data["validate_pattern"],
          "--train_dir=" + train_dir, "--checkpoint_file=model.ckpt-%d" % STEPS,
          "--batch_size=64", "--compute_dtype=" + dtype, "--results_json=" + results)
  with open(results) as handle:
    return json.load(handle)


@pytest.mark.slow
def test_bfloat16_training_writes_the_float32_checkpoint(trained):
  specs = {dtype: checkpoint_utils.variable_specs(tf.train.load_checkpoint(
      "%s/model.ckpt-%d" % (trained[dtype], STEPS))) for dtype in ("float32", "bfloat16")}
  assert specs["bfloat16"] == specs["float32"]
  model_variables = [name for name in specs["bfloat16"]
                     if name.startswith("tower/") and "Adam" not in name]
  assert len(model_variables) == 32
  assert {dtype for _, dtype in specs["bfloat16"].values()} == {tf.float32, tf.int32}
  values = tf.train.load_checkpoint("%s/model.ckpt-%d" % (trained["bfloat16"], STEPS))
  assert np.isfinite(values.get_tensor("tower/hidden1_weights/hidden1_weights")).all()


@pytest.fixture(scope="module")
def reference_eval(trained, tiny_data, tmp_path_factory):
  """reference_eval(dtype): eval.py's results of the checkpoint trained in dtype, evaluated in
  dtype; one eval.py run per dtype for the module (two cases below share float32's)."""
  results = {}

  def get(dtype):
    if dtype not in results:
      results[dtype] = evaluate(tiny_data, trained[dtype], dtype,
                                tmp_path_factory.mktemp("reference_" + dtype))
    return results[dtype]
  return get


@pytest.mark.slow
@pytest.mark.parametrize("trained_in,evaluated_in", [
    ("float32", "bfloat16"), ("float32", "float16"), ("bfloat16", "float32")])
def test_checkpoints_evaluate_alike_in_every_compute_dtype(trained, tiny_data, tmp_path,
                                                          reference_eval, trained_in,
                                                          evaluated_in):
  """The same checkpoint: GAP within 0.002 and loss within 1% of its training dtype's."""
  reference = reference_eval(trained_in)
  other = evaluate(tiny_data, trained[trained_in], evaluated_in, tmp_path)
  assert reference["examples"] == other["examples"] > 0
  assert reference["gap"] > 0.1  # a trained model, not constant predictions
  assert abs(other["gap"] - reference["gap"]) < 0.002
  assert other["loss"] == pytest.approx(reference["loss"], rel=0.01)


def read_scores(path):
  with open(path) as handle:
    rows = list(csv.reader(handle))[1:]
  scores = {}
  for video_id, pairs in rows:
    values = pairs.split()
    scores[video_id] = {int(label): float(score)
                        for label, score in zip(values[::2], values[1::2])}
  return scores


@pytest.mark.slow
def test_inference_rebuilds_the_model_in_bfloat16(trained, tiny_data, tmp_path):
  train_dir = trained["float32"]
  run_cli("eval", "--eval_data_pattern=" + tiny_data["validate_pattern"],
          "--train_dir=" + train_dir, "--checkpoint_file=model.ckpt-%d" % STEPS,
          "--batch_size=64", "--create_meta_only", "--force_output_model_name")
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    outputs[dtype] = str(tmp_path / ("%s.csv" % dtype))
    run_cli("inference", "--train_dir=" + train_dir, "--output_file=" + outputs[dtype],
            "--input_data_pattern=" + tiny_data["test_pattern"], "--batch_size=7",
            "--compute_dtype=" + dtype)
  reference, bfloat16 = (read_scores(outputs[d]) for d in ("float32", "bfloat16"))
  assert list(reference) == list(bfloat16) and len(reference) == 20
  for video_id, top in reference.items():
    best = max(top, key=top.get)
    assert bfloat16[video_id].get(best) == pytest.approx(top[best], abs=0.02)


@pytest.mark.slow
def test_inference_refuses_bfloat16_for_an_original_model_flags(tiny_data, tmp_path):
  train_dir = tmp_path / "original"
  train_dir.mkdir()
  for suffix in (".meta", ".index", ".data-00000-of-00001"):
    (train_dir / ("inference_model" + suffix)).write_bytes(b"")
  with open(train_dir / "model_flags.json", "w") as handle:
    json.dump({"model": "NetVLADModelLF", "feature_sizes": "1024,128",
               "feature_names": "rgb,audio", "frame_features": True,
               "label_loss": "CrossEntropyLoss"}, handle)
  result = run_cli("inference", "--train_dir=%s" % train_dir, "--output_file=%s/x.csv"
                   % tmp_path, "--input_data_pattern=" + tiny_data["test_pattern"],
                   "--compute_dtype=bfloat16", check=False)
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("ERROR: --compute_dtype=bfloat16 rebuilds the model from ")
  assert "use --compute_dtype=float32" in last_line
  assert not (tmp_path / "x.csv").exists()


def run_step(sess, tensors, variables):
  before = sess.run(variables)
  step = sess.run(tensors["step_after"])
  after = sess.run(variables)
  return step, any(not np.array_equal(b, a) for b, a in zip(before, after))


def test_dynamic_loss_scaling_skips_a_step_with_inf_gradients(tiny_data):
  files = yt8m("readers").training_files(tiny_data["train_pattern"])
  graph, tensors = test_training_graph.build(
      test_training_graph.frame_config(), files, compute_dtype="float16",
      optimizer="AdamOptimizer", base_learning_rate=0.01, clip_gradient_norm=1.0, batch_size=5)
  loss_scale = tensors["loss_scale"]
  with graph.as_default(), tf1.Session() as sess:
    sess.run([tf1.global_variables_initializer(), tf1.local_variables_initializer(),
              tensors["iterator"].initializer])
    variables = tf1.trainable_variables()
    assert sess.run(loss_scale.scale) == yt8m("optimization").LOSS_SCALE_INITIAL
    # A scale that overflows float16 in the backward pass: the step is skipped.
    loss_scale.scale.load(1e30, sess)
    step, changed = run_step(sess, tensors, variables)
    assert (step, changed) == (1, False)
    assert sess.run(loss_scale.scale) == np.float32(5e29)
    # A finite step applies the gradients; the last of the growth interval doubles the scale.
    loss_scale.scale.load(1024.0, sess)
    loss_scale.good_steps.load(yt8m("optimization").LOSS_SCALE_GROWTH_STEPS - 1, sess)
    step, changed = run_step(sess, tensors, variables)
    assert (step, changed) == (2, True)
    assert sess.run([loss_scale.scale, loss_scale.good_steps]) == [2048.0, 0]


def matmul_operand_path(graph, variable):
  """Op types (Cast as Cast:<dst dtype>) from each read of variable to the op using it,
  ignoring Identity and the l2 regularizer (built but not run by inference)."""
  paths = set()

  def walk(tensor, path):
    for op in tensor.consumers():
      if "l2_regularizer" in op.name:
        continue
      if op.type in ("Identity", "Cast"):
        step = [] if op.type == "Identity" else ["Cast:" + op.get_attr("DstT").name]
        walk(op.outputs[0], path + step)
      else:
        paths.add(tuple(path + [op.type]))

  for read in graph.get_operations():
    if read.type == "ReadVariableOp" and read.inputs[0].op.name == variable.op.name:
      walk(read.outputs[0], [])
  return paths


@pytest.mark.parametrize("compute_dtype,path", [
    (tf.float32, ("Cast:float32", "MatMul")), (tf.float16, ("MatMul",)),
    (tf.bfloat16, ("Cast:float32", "Cast:bfloat16", "MatMul"))])
def test_float16_kernels_feed_the_matmuls_in_the_compute_dtype(compute_dtype, path):
  """--float16_flag kernels: float32 compute casts them to float32 (the original), float16
  compute multiplies them as stored, bfloat16 compute casts them to bfloat16 (through
  float32, TF's faster cast)."""
  config = test_training_graph.frame_config()
  config.float16_flag = True
  graph = tf.Graph()
  with graph.as_default():
    input_raw = tf1.placeholder(tf.float32, model_graph.input_shape(config))
    num_frames = tf1.placeholder(tf.int32, [None])
    model_graph.build_model(config, input_raw, num_frames, is_training=False,
                            compute_dtype=compute_dtype)
    kernels = [v for v in tf1.global_variables() if v.dtype.base_dtype == tf.float16]
  assert len(kernels) == 4
  for kernel in kernels:
    paths = matmul_operand_path(graph, kernel)
    # remove_diag is off: the matmul is the kernel's only use.
    assert paths == {path}, kernel.op.name
