"""The seed's commands build the original's network and work on train_dirs the original wrote.

The "original" directories here are written with plain TensorFlow (tf.compat.v1 variables and
a Saver), never with this project's training code: checkpoints ``model.ckpt-N`` holding the
original's variable names (docs/original.md) with Adam slots, beta powers and an int32
global_step, an absolute-path ``checkpoint`` state file, and the original's 5-key
model_flags.json that says ``"model": "LogisticModel"`` for a single model.
"""

import json
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, TINY_NUM_CLASSES, run_cli, yt8m
from test_models import expected_variables

tf1 = tf.compat.v1
readers = yt8m("readers")
dataset_layout = yt8m("dataset_layout")

K, H = 4, 8
V = TINY_NUM_CLASSES
M = 5  # MoE mixtures (the original's default)
BN_EPSILON = 0.001
# The original's train.py writes these five keys; "model" is its (dead) --model flag.
ORIGINAL_MODEL_FLAGS = {"model": "LogisticModel", "feature_sizes": "1024,128",
                        "feature_names": "rgb,audio", "frame_features": True,
                        "label_loss": "CrossEntropyLoss"}
# The seed's eval command, verbatim but for the sizes (and this test's 40 classes).
SEED_EVAL_FLAGS = [
    "--model=NetVLADModelLF", "--frame_features", "--feature_names=rgb,audio",
    "--feature_sizes=1024,128", "--batch_size=1024", "--base_learning_rate=0.0001",
    "--netvlad_cluster_size=%d" % K, "--netvlad_hidden_size=%d" % H, "--moe_l2=1e-6",
    "--iterations=300", "--learning_rate_decay=0.8", "--netvlad_relu=False", "--gating=True",
    "--moe_prob_gating=True", "--run_once=True", "--num_classes=%d" % V]


def model_values(rng, clusters, hidden, scope="tower/", float16=False):
  """Random values for the 32 variables of one model, scaled so that every stage matters:
  hidden1's batch norm output spreads over [-7, 9], so relu6 clips at both ends."""
  values = {}
  for name, (shape, _, fp16) in expected_variables(clusters, hidden, scope, float16,
                                                   num_classes=V).items():
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "moving_variance":
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf == "gamma":
      value = rng.uniform(0.5, 1.5, shape)
    elif leaf in ("beta", "moving_mean", "biases", "hidden2_biases"):
      value = rng.normal(0, 0.1, shape)
    else:
      value = rng.normal(0, 1.0 / np.sqrt(shape[-2]), shape)
    values[name] = value.astype(np.float16 if fp16 else np.float32)
  hidden1_w = scope + "hidden1_weights/hidden1_weights"
  values[hidden1_w] = rng.normal(0, 1.0, values[hidden1_w].shape).astype(
      values[hidden1_w].dtype)  # vlad is unit-norm: pre-BN activations ~ N(0, 1)
  values[scope + "hidden1_bn/moving_mean"][:] = 0
  values[scope + "hidden1_bn/moving_variance"][:] = 1
  values[scope + "hidden1_bn/gamma"][:] = 4
  values[scope + "hidden1_bn/beta"][:] = 1
  return values


def adam_state(values, step, rng):
  """What the original's Adam adds to a training checkpoint."""
  state = {"beta1_power": np.float32(0.9 ** (step + 1)),
           "beta2_power": np.float32(0.999 ** (step + 1))}
  for name, value in values.items():
    if not name.endswith(("moving_mean", "moving_variance")):
      state[name + "/Adam"] = rng.normal(0, 1e-3, value.shape).astype(value.dtype)
      state[name + "/Adam_1"] = rng.uniform(0, 1e-6, value.shape).astype(value.dtype)
  return state


def write_checkpoint(directory, name, step, tensors):
  """directory/name-step.{data,index,meta} and an absolute-path `checkpoint` state file, as
  the original's tf.train.Saver (Supervisor) wrote them."""
  graph = tf.Graph()
  with graph.as_default():
    variables = [tf1.Variable(value, name=key) for key, value in sorted(tensors.items())]
    variables.append(tf1.Variable(np.int32(step), name="global_step", trainable=False))
    saver = tf1.train.Saver(variables)
    with tf1.Session(graph=graph) as sess:
      sess.run(tf1.global_variables_initializer())
      return saver.save(sess, os.path.join(directory, name), global_step=step)


def write_original_model_flags(directory, **changes):
  with open(os.path.join(directory, "model_flags.json"), "w") as handle:
    handle.write(json.dumps(dict(ORIGINAL_MODEL_FLAGS, **changes)))


@pytest.fixture(scope="module")
def original_dir(tmp_path_factory):
  """A single-model train_dir as the original wrote it: model.ckpt-10 and model.ckpt-20."""
  directory = str(tmp_path_factory.mktemp("original_c4h8"))
  rng = np.random.default_rng(2018)
  steps = {}
  for step in (10, 20):
    values = model_values(rng, K, H)
    steps[step] = values
    write_checkpoint(directory, "model.ckpt", step, dict(values, **adam_state(values, step,
                                                                             rng)))
  write_original_model_flags(directory)
  return {"dir": directory, "values": steps}


@pytest.fixture(scope="module")
def constant_videos(tmp_path_factory):
  """Videos whose frames are all the same: any frame sampling gives the same input, so a
  plain numpy forward pass predicts exactly what the graph must."""
  rng = np.random.default_rng(7)
  path = str(tmp_path_factory.mktemp("constant_videos") / "test0000.tfrecord")
  videos = []
  with tf.io.TFRecordWriter(path) as writer:
    for index, frames in enumerate((1, 7, 300, 345)):
      rgb = rng.integers(0, 256, 1024, dtype=np.uint8)
      audio = rng.integers(0, 256, 128, dtype=np.uint8)
      example = tf.train.SequenceExample()
      example.context.feature["id"].bytes_list.value.append(b"v%03d" % index)
      for name, frame in (("rgb", rgb), ("audio", audio)):
        feature_list = example.feature_lists.feature_list[name]
        for _ in range(frames):
          feature_list.feature.add().bytes_list.value.append(frame.tobytes())
      writer.write(example.SerializeToString())
      videos.append(("v%03d" % index, np.concatenate([rgb, audio])))
  return {"path": path, "videos": videos}


def numpy_predictions(values, quantized, relu6=True, scope="tower/"):
  """docs/original.md in float64, eval mode, for a video whose every frame is `quantized`."""
  v = lambda name: values[scope + name].astype(np.float64)

  def batch_norm(x, prefix):
    return ((x - v(prefix + "/moving_mean")) / np.sqrt(v(prefix + "/moving_variance")
                                                       + BN_EPSILON) * v(prefix + "/gamma")
            + v(prefix + "/beta"))

  def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  frame = quantized.astype(np.float64) * 4 / 255 + 4 / 512 - 2
  frame = frame / np.sqrt(max(np.sum(frame ** 2), 1e-12))

  def netvlad(x, prefix):
    # Every frame is x: the assignment a is the same for all frames; the residual
    # sum_t a_k (x - c_k) is the frame count times a_k (x - c_k), a factor the norms remove.
    a = softmax(batch_norm(x @ v(prefix + "/conv2/cluster_weights"), prefix + "/cluster_bn"))
    residual = a[None, :] * (x[:, None] - v(prefix + "/cluster_weights2/cluster_weights2")[0])
    residual = residual / np.linalg.norm(residual, axis=0, keepdims=True)
    flat = residual.reshape(-1)  # D-major: index d * clusters + k
    return flat / np.linalg.norm(flat)

  vlad = np.concatenate([netvlad(frame[:1024], "video_VLAD"),
                         netvlad(frame[1024:], "audio_VLAD")])
  hidden = batch_norm(vlad @ v("hidden1_weights/hidden1_weights"), "hidden1_bn")
  if relu6:
    hidden = np.clip(hidden, 0, 6)
  hidden = hidden @ v("hidden2_weights/hidden2_weights") + v("hidden2_biases")
  hidden = hidden * sigmoid(batch_norm(hidden @ v("gating_weights/gating_weights"),
                                       "gating_bn"))
  gates = softmax((hidden @ v("gates/weights")).reshape(V, M + 1))
  experts = sigmoid((hidden @ v("experts/weights") + v("experts/biases")).reshape(V, M))
  probabilities = np.sum(gates[:, :M] * experts, axis=1)
  return probabilities * sigmoid(batch_norm(probabilities @ v("gating_prob_weights"),
                                            "gating_prob_bn"))


def read_csv(path):
  with open(path) as handle:
    lines = handle.read().splitlines()
  assert lines[0] == "VideoId,LabelConfidencePairs"
  rows = {}
  for line in lines[1:]:
    video_id, pairs = line.split(",")
    fields = pairs.split(" ")
    rows[video_id] = {int(label): float(score) for label, score in zip(fields[::2],
                                                                         fields[1::2])}
  return rows


def gap_line(stderr):
  lines = [line for line in stderr.splitlines() if "GAP:" in line]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def evaluated(original_dir, tiny_data):
  """The seed's loop-eval command on model.ckpt-10 of the original dir."""
  json_before = open(os.path.join(original_dir["dir"], "model_flags.json")).read()
  result = run_cli("eval", *SEED_EVAL_FLAGS, "--train_dir=" + original_dir["dir"],
                   "--eval_data_pattern=" + tiny_data["validate_pattern"],
                   "--checkpoint=model.ckpt-10.index")
  return dict(original_dir, stderr=result.stderr, json_before=json_before)


def test_seed_eval_command_on_an_original_train_dir(evaluated):
  line = gap_line(evaluated["stderr"])
  assert "epoch/eval number 10 " in line  # model.ckpt-10, not the newest (20)
  assert 0 <= float(line.split("GAP: ")[1].split()[0]) <= 1
  assert "was written by the original code" in evaluated["stderr"]
  assert "--netvlad_relu=False has no effect" in evaluated["stderr"]
  names = os.listdir(evaluated["dir"])
  for suffix in (".data-00000-of-00001", ".index", ".meta"):
    assert "inference_model_10" + suffix in names
  # The user's directory keeps the original's json untouched.
  assert open(os.path.join(evaluated["dir"], "model_flags.json")).read() == evaluated[
      "json_before"]


def test_predictions_of_an_original_checkpoint_are_the_originals_network(
    evaluated, constant_videos, tmp_path):
  """inference.py on eval's inference_model_10 equals an independent numpy forward pass
  with relu6 after hidden1's batch norm (and not one without it)."""
  output = str(tmp_path / "predictions.csv")
  run_cli("inference", "--train_dir=" + evaluated["dir"],
          "--inference_model_file=inference_model_10",
          "--input_data_pattern=" + constant_videos["path"], "--output_file=" + output)
  rows = read_csv(output)
  values = evaluated["values"][10]
  for video_id, quantized in constant_videos["videos"]:
    expected = numpy_predictions(values, quantized)
    without_relu6 = numpy_predictions(values, quantized, relu6=False)
    top = set(np.argsort(-expected)[:20].tolist())
    assert set(rows[video_id]) == top, video_id
    got = np.array([rows[video_id][label] for label in sorted(top)])
    want = expected[sorted(top)]
    # The CSV prints 6 significant digits; the graph computes in float32.
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7, err_msg=video_id)
    assert np.max(np.abs(without_relu6 - expected)) > 100 * 2e-5 * np.max(expected)


def test_shapes_that_contradict_the_flags_are_refused(original_dir, tiny_data):
  flags = [f.replace("--netvlad_hidden_size=%d" % H, "--netvlad_hidden_size=16")
           for f in SEED_EVAL_FLAGS]
  result = run_cli("eval", *flags, "--train_dir=" + original_dir["dir"],
                   "--eval_data_pattern=" + tiny_data["validate_pattern"],
                   "--checkpoint=model.ckpt-20.index", check=False)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr
  assert "tower/hidden1_weights/hidden1_weights has shape [%d, %d] there, the model needs " \
         "[%d, 16]" % (1024 * K + 128 * (K // 2), H, 1024 * K + 128 * (K // 2)) in errors[0]


def test_seed_average_and_its_eval_on_an_original_train_dir(original_dir, tiny_data):
  """The seed's "average all checkpoints in a range" and "evaluate an averaged checkpoint"
  commands (the latter passes no --model)."""
  directory = original_dir["dir"]
  run_cli("avg_checkpoints", "--checkpoints_start_end=10,20",
          "--prefix=%s/model.ckpt-" % directory,
          "--output_path=%s/avg_c%dh%d_10_20.ckpt" % (directory, K, H))
  reader = tf.train.load_checkpoint("%s/avg_c%dh%d_10_20.ckpt-0" % (directory, K, H))
  name = "tower/gates/weights"
  np.testing.assert_allclose(
      reader.get_tensor(name),
      (original_dir["values"][10][name].astype(np.float64)
       + original_dir["values"][20][name]) / 2, rtol=1e-6)
  flags = [f for f in SEED_EVAL_FLAGS if not f.startswith("--model=")]
  result = run_cli("eval", *flags, "--train_dir=" + directory,
                   "--eval_data_pattern=" + tiny_data["validate_pattern"],
                   "--checkpoint=avg_c%dh%d_10_20.ckpt-0.index" % (K, H))
  assert "epoch/eval number 0 " in gap_line(result.stderr)
  assert os.path.exists("%s/inference_model_avg_c%dh%d_10_20.ckpt-0.index" % (directory, K, H))


ENSEMBLE_FLAGS = [
    "--model=NetVLADModelLF", "--frame_features", "--feature_names=rgb,audio",
    "--feature_sizes=1024,128", "--netvlad_cluster_size=%d" % K,
    "--netvlad_hidden_size=%d" % H, "--ensemble_wts=0.7", "--netvlad_cluster_size=%d" % K,
    "--netvlad_hidden_size=%d" % H, "--ensemble_wts=0.3", "--moe_l2=1e-6", "--iterations=300",
    "--netvlad_relu=False", "--gating=True", "--moe_prob_gating=True", "--ensemble_num=2",
    "--float16_flag=True", "--num_classes=%d" % V]


def test_seed_ensemble_steps_on_original_directories(original_dir, tiny_data, tmp_path):
  """Seed steps 3-5 and 7 (and the weight search) on an ensemble dir in the original's form:
  its 32*2+1-tensor float16 template inference_model_10 and 5-key json."""
  directory = str(tmp_path / "ensemble_YHLS")
  os.makedirs(directory)
  rng = np.random.default_rng(3)
  template = model_values(rng, K, H, float16=True)
  template.update(model_values(rng, K, H, scope="tower/model1/", float16=True))
  # The original's eval saved it as inference_model_10 (no "-<step>" suffix).
  saved = write_checkpoint(directory, "inference_model", 10, template)
  for path in tf.io.gfile.glob(saved + ".*"):
    os.rename(path, path.replace("inference_model-10", "inference_model_10"))
  write_original_model_flags(directory, model="NetVLADModelLF")
  sources = "%s/model.ckpt-10,%s/model.ckpt-20" % (original_dir["dir"], original_dir["dir"])
  run_cli("overwrite_float16_ckpt", "--train_dir=" + directory,
          "--inference_model=inference_model_10", "--out_name=inference_model_ensemble_YHLS",
          "--checkpoints=" + sources)
  filled = tf.train.load_checkpoint(directory + "/inference_model_ensemble_YHLS-0")
  name = "hidden1_weights/hidden1_weights"
  assert filled.get_variable_to_dtype_map()["tower/model1/" + name] == tf.float16
  np.testing.assert_array_equal(filled.get_tensor("tower/model1/" + name),
                                original_dir["values"][20]["tower/" + name].astype(np.float16))

  eval_flags = ENSEMBLE_FLAGS + ["--train_dir=" + directory, "--run_once=True",
                                 "--eval_data_pattern=" + tiny_data["validate_pattern"]]
  result = run_cli("eval", *eval_flags, "--checkpoint_file=inference_model_ensemble_YHLS-0")
  gap_line(result.stderr)
  assert os.path.exists(directory + "/inference_model_ensemble_07_03_YHLS-0.index")
  weights = run_cli("ensemble_weights", *ENSEMBLE_FLAGS, "--train_dir=" + directory,
                    "--checkpoint_file=inference_model_ensemble_YHLS-0",
                    "--eval_data_pattern=" + tiny_data["validate_pattern"],
                    "--search_iterations=1")
  assert "youtube-8m.eval" in weights.stdout + weights.stderr
  run_cli("eval", *eval_flags, "--checkpoint_file=inference_model_ensemble_YHLS-0",
          "--force_output_model_name=True", "--create_meta_only")
  output = str(tmp_path / "submission.csv")
  run_cli("inference", "--train_dir=" + directory,
          "--input_data_pattern=" + tiny_data["test_pattern"], "--output_file=" + output,
          "--batch_size=512")
  assert len(read_csv(output)) == 20  # 2 test files x 10 videos


def test_build_ensemble_from_original_single_models(original_dir, tmp_path):
  """build_ensemble reads the members' original json (model "LogisticModel") as a reader
  description and takes the architecture from the shapes and flags."""
  directory = str(tmp_path / "built")
  run_cli("build_ensemble", "--train_dir=" + directory,
          "--checkpoints=%s/model.ckpt-10,%s/model.ckpt-20" % (original_dir["dir"],
                                                              original_dir["dir"]),
          "--iterations=300", "--netvlad_relu=False", "--gating=True", "--moe_prob_gating=True",
          "--moe_l2=1e-6", "--num_classes=%d" % V)
  with open(os.path.join(directory, "model_flags.json")) as handle:
    built = json.load(handle)
  assert built["model"] == "NetVLADModelLF" and built["netvlad_hidden_size"] == [H, H]


def test_seed_training_exports_relu6_after_hidden1(tiny_data, tmp_path):
  """The seed's flags (with --netvlad_relu=False) train the original's network: the
  inference meta graph eval writes from the training checkpoint has relu6 fed by hidden1's
  batch norm, in every model."""
  train_dir = str(tmp_path / "trained")
  result = run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
                   "--train_dir=" + train_dir, "--batch_size=8", "--max_steps=10",
                   "--export_model_steps=10", "--netvlad_cluster_size=4",
                   "--netvlad_hidden_size=8", *TINY_FLAGS)
  assert "--netvlad_relu=False has no effect" in result.stderr
  run_cli("eval", "--train_dir=" + train_dir, "--create_meta_only", "--run_once=True",
          "--checkpoint_file=model.ckpt-10")
  meta = tf1.MetaGraphDef()
  with open(os.path.join(train_dir, "inference_model_10.meta"), "rb") as handle:
    meta.ParseFromString(handle.read())
  nodes = {node.name: node for node in meta.graph_def.node}
  relu6 = [node for node in nodes.values() if node.op == "Relu6"]
  assert len(relu6) == 1
  feeder = nodes[relu6[0].input[0].split(":")[0]]
  assert re.match(r"(tower/)+hidden1_bn/", feeder.name), feeder.name
  # ... and hidden2's matmul reads the relu6 output.
  consumers = [node for node in nodes.values()
               if node.op == "MatMul" and relu6[0].name in [i.split(":")[0] for i in node.input]]
  assert consumers and consumers[0].name.startswith("tower/"), consumers


@pytest.mark.parametrize("validate_names, warned_count", [
    (["validate%s.tfrecord" % code for code in dataset_layout.HOLDOUT_VALIDATE_CODES] + [
        "validateZZ.tfrecord"], None),
    (["validate%s.tfrecord" % code for code in dataset_layout.HOLDOUT_VALIDATE_CODES[:30]], 30),
    (["validate%04d.tfrecord" % i for i in range(5)], 0)])
def test_held_out_files_missing_from_the_validate_glob_are_reported(
    tmp_path, caplog, validate_names, warned_count):
  for name in validate_names + ["train0000.tfrecord"]:
    (tmp_path / name).write_bytes(b"")
  pattern = "%s/train*.tfrecord,%s/validate*.tfrecord" % (tmp_path, tmp_path)
  with caplog.at_level(logging.WARNING):
    files = readers.training_files(pattern)
  held_out = {str(tmp_path / ("validate%s.tfrecord" % code))
              for code in dataset_layout.HOLDOUT_VALIDATE_CODES}
  assert not held_out.intersection(files)
  assert len(files) == 1 + len([n for n in validate_names if str(tmp_path / n) not in held_out])
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  if warned_count is None:
    assert not warnings
  else:
    assert len(warnings) == 1
    assert "only %d of the 60 held-out validate files" % warned_count in warnings[0]
