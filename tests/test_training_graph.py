"""train.py's training graph, in-process: learning-rate schedule, gradient clipping, tower
averaging and batch split, optimizers, losses and batch-norm updates (the stop signal:
test_preemption.py).

Expected values come from the formulas of docs/original.md ("Loss and optimizer", "Batch
normalization") and the optimizers' documented update rules, evaluated in numpy on values
fetched from the graph.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from conftest import TINY_NUM_CLASSES, yt8m

tf1 = tf.compat.v1
train = yt8m("train")
training_graph = yt8m("training_graph")
optimization = yt8m("optimization")
model_graph = yt8m("model_graph")
losses = yt8m("losses")

VIDEOS = 15  # one batch: 3 towers x 5 or 1 tower x 15


def video_config(label_loss="CrossEntropyLoss", prob_gating=False):
  """A video-level MoeModel: no frame sampling and (without prob gating) no batch norm, so a
  batch's gradient does not depend on how the batch is split."""
  return model_graph.ModelConfig(
      model="MoeModel", frame_features=False, feature_names="mean_rgb,mean_audio",
      feature_sizes="1024,128", num_classes=TINY_NUM_CLASSES, label_loss=label_loss,
      ensemble_num=1, netvlad_cluster_size=[4], netvlad_hidden_size=[16], ensemble_wts=[1.0],
      float16_flag=False, gating=True, netvlad_add_batch_norm=True,
      gating_remove_diag=False, iterations=20, sample_random_frames=True,
      video_level_classifier_model="MoeModel", moe_num_mixtures=2, moe_l2=1e-6,
      moe_prob_gating=prob_gating, moe_prob_gating_input="prob").validate()


def frame_config():
  return model_graph.ModelConfig(
      model="NetVLADModelLF", frame_features=True, feature_names="rgb,audio",
      feature_sizes="1024,128", num_classes=TINY_NUM_CLASSES, label_loss="CrossEntropyLoss",
      ensemble_num=1, netvlad_cluster_size=[4], netvlad_hidden_size=[16], ensemble_wts=[1.0],
      float16_flag=False, gating=True, netvlad_add_batch_norm=True,
      gating_remove_diag=False, iterations=20, sample_random_frames=True,
      video_level_classifier_model="MoeModel", moe_num_mixtures=2, moe_l2=1e-6,
      moe_prob_gating=True, moe_prob_gating_input="prob").validate()


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
  """One file of exactly VIDEOS video-level examples (one epoch = one batch of 15)."""
  path = str(tmp_path_factory.mktemp("video15") / "train00.tfrecord")
  rng = np.random.default_rng(11)
  with tf.io.TFRecordWriter(path) as writer:
    for index in range(VIDEOS):
      example = tf.train.Example()
      example.features.feature["id"].bytes_list.value.append(b"v%03d" % index)
      example.features.feature["labels"].int64_list.value.extend(
          sorted(set(rng.integers(0, TINY_NUM_CLASSES, 3).tolist())))
      example.features.feature["mean_rgb"].float_list.value.extend(rng.normal(size=1024))
      example.features.feature["mean_audio"].float_list.value.extend(rng.normal(size=128))
      writer.write(example.SerializeToString())
  return path


def build(config, files, towers=1, **flag_values):
  """training_graph.build_training_graph under the given flags of train.py; returns (graph,
  tensors)."""
  if "batch_size" not in flags.FLAGS:  # train.py defines its flags when it runs
    train.define_flags()
  values = dict(batch_size=VIDEOS // towers, num_epochs=1, num_readers=1, random_seed=3,
                clip_gradient_norm=0.0, optimizer="GradientDescentOptimizer",
                base_learning_rate=0.5, learning_rate_decay=0.95,
                learning_rate_decay_examples=4000000, regularization_penalty=1.0,
                batch_norm_warmup=True)
  values.update(flag_values)
  graph = tf.Graph()
  with flagsaver.flagsaver(**values), graph.as_default():
    tensors = training_graph.build_training_graph(config, files, ["/cpu:0"] * towers)
  return graph, tensors


def trainable_values(graph, sess):
  variables = graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES)
  return dict(zip([v.op.name for v in variables], sess.run(variables)))


def one_step(graph, tensors, initial=None, fetch=()):
  """Initializes (optionally loading `initial` trainable values), runs one training step;
  returns (before, after, fetched) trainable values as float64."""
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    sess.run(tf1.global_variables_initializer())
    sess.run(tensors["iterator"].initializer)
    if initial:
      for variable in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES):
        variable.load(initial[variable.op.name], sess)
    before = trainable_values(graph, sess)
    fetched = sess.run([tensors["step_after"]] + list(fetch))[1:]
    after = trainable_values(graph, sess)
  as64 = lambda d: {k: v.astype(np.float64) for k, v in d.items()}
  return as64(before), as64(after), fetched


def test_learning_rate_is_staircase_with_the_towers_factor(video_file):
  base, decay, period, batch, towers = 0.1, 0.5, 40.0, 5, 3
  graph, tensors = build(video_config(), [video_file], towers=towers, batch_size=batch,
                         base_learning_rate=base, learning_rate_decay=decay,
                         learning_rate_decay_examples=period)
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    sess.run(tf1.global_variables_initializer())
    for step in (0, 1, 2, 3, 5, 8, 11, 100):
      tensors["global_step"].load(step, sess)
      expected = base * decay ** math.floor(step * batch * towers / period)
      np.testing.assert_allclose(sess.run(tensors["learning_rate"]), expected, rtol=1e-6,
                                 err_msg="step %d" % step)


def test_three_towers_of_five_equal_one_tower_of_fifteen(video_file):
  """The original summed the tower gradients (docs/original.md, "Loss and optimizer"); this project
  averages them (optimization.average_gradients): one plain-SGD step on 3 towers x 5 moves every
  variable as one step on 1 tower x 15 does, and each tower really gets 5 of the 15 videos."""
  graph1, tensors1 = build(video_config(), [video_file], towers=1)
  before1, after1, _ = one_step(graph1, tensors1)
  graph3, tensors3 = build(video_config(), [video_file], towers=3)
  concat = tensors3["predictions"].op
  assert concat.type == "ConcatV2"
  tower_predictions = list(concat.inputs[:-1])
  assert len(tower_predictions) == 3
  before3, after3, parts = one_step(graph3, tensors3, initial=before1,
                                    fetch=tower_predictions)
  assert [len(p) for p in parts] == [5, 5, 5]
  assert sorted(before3) == sorted(before1)
  for name in before1:
    np.testing.assert_array_equal(before3[name], before1[name])
    delta1, delta3 = after1[name] - before1[name], after3[name] - before3[name]
    assert np.abs(delta1).max() > 0, name
    np.testing.assert_allclose(delta3, delta1, rtol=1e-3,
                               atol=1e-4 * np.abs(delta1).max(), err_msg=name)


# One step of each optimizer on a gradient clipped to norm c (tiny against 0.1 / 0.9, the
# initial accumulators of Adagrad / RMSProp): |update| of every variable = lr * c * factor.
UPDATE_FACTOR = {"GradientDescentOptimizer": 1.0,
                 "AdagradOptimizer": 1 / math.sqrt(0.1),  # accumulator starts at 0.1
                 "RMSPropOptimizer": 1 / math.sqrt(0.9)}  # ms = 0.9 * 1 + 0.1 * g^2


@pytest.mark.parametrize("optimizer", sorted(UPDATE_FACTOR))
def test_each_gradient_tensor_is_clipped_separately(video_file, optimizer):
  lr, clip = 2.0, 1e-3
  graph, tensors = build(video_config(), [video_file], optimizer=optimizer,
                         base_learning_rate=lr, clip_gradient_norm=clip)
  slots = sorted(v.op.name.split("/")[-1]
                 for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
                 if v.op.name.startswith("tower/gates/weights/"))
  assert slots == {"GradientDescentOptimizer": [], "AdagradOptimizer": ["Adagrad"],
                   "RMSPropOptimizer": ["RMSProp", "RMSProp_1"]}[optimizer]
  before, after, _ = one_step(graph, tensors)
  assert sorted(before) == ["tower/experts/biases", "tower/experts/weights",
                            "tower/gates/weights"]
  for name in before:
    # per tensor: each variable's update has norm lr * c (a global norm would share c
    # between the 3 variables; no clipping would leave larger updates)
    norm = np.linalg.norm(after[name] - before[name])
    np.testing.assert_allclose(norm, lr * clip * UPDATE_FACTOR[optimizer], rtol=2e-3,
                               err_msg=name)


def test_clip_by_norm_equals_tensorflows():
  rng = np.random.default_rng(0)
  cases = [rng.normal(size=(300, 70)).astype(np.float32) * scale for scale in (1e-4, 1, 50)]
  cases.append(np.zeros((3, 4), np.float32))
  graph = tf.Graph()
  with graph.as_default(), tf1.Session() as sess:
    for values in cases:
      ours, reference = sess.run([optimization.clip_by_norm(tf.constant(values), 1.0),
                                  tf.clip_by_norm(tf.constant(values), 1.0)])
      # One product instead of tf.clip_by_norm's product and quotient: a rounding apart.
      np.testing.assert_allclose(ours, reference, rtol=2.5e-7, atol=0)
      if np.linalg.norm(values) <= 1.0:
        np.testing.assert_array_equal(ours, values)  # within the norm: unchanged
      else:
        np.testing.assert_allclose(np.linalg.norm(ours), 1.0, rtol=1e-5)


@pytest.mark.parametrize("label_loss", ["CrossEntropyLoss", "HingeLoss", "SoftmaxLoss"])
def test_training_uses_the_configured_label_loss(video_file, label_loss):
  graph, tensors = build(video_config(label_loss), [video_file])
  _, _, (loss, predictions, labels) = one_step(
      graph, tensors, fetch=[tensors["label_loss"], tensors["predictions"], tensors["labels"]])
  p, y = predictions.astype(np.float64), labels.astype(np.float64)
  if label_loss == "CrossEntropyLoss":
    expected = -(y * np.log(p + 1e-5) + (1 - y) * np.log(1 - p + 1e-5)).sum(1).mean()
  elif label_loss == "HingeLoss":
    expected = np.maximum(0, 1 - (2 * y - 1) * p).sum(1).mean()
  else:
    softmax = np.exp(p) / np.exp(p).sum(1, keepdims=True)
    target = y / np.maximum(y.sum(1, keepdims=True), 1e-7)
    expected = -(target * np.log(softmax + 1e-7)).sum(1).mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_cross_entropy_epsilon_is_1e_5():
  predictions = np.array([[0.0, 1.0, 0.25], [1.0, 0.0, 0.5]], np.float32)
  labels = np.array([[1, 0, 1], [1, 0, 0]], bool)
  graph = tf.Graph()
  with graph.as_default(), tf1.Session() as sess:
    loss = sess.run(losses.CrossEntropyLoss().calculate_loss(tf.constant(predictions),
                                                             tf.constant(labels)))
  e = 1e-5  # docs/original.md, "Loss and optimizer" (the original's literal 10e-6)
  row0 = -(math.log(0 + e) + math.log(1 - 1 + e) + math.log(0.25 + e))
  row1 = -(math.log(1 + e) + math.log(1 - 0 + e) + math.log(1 - 0.5 + e))
  np.testing.assert_allclose(loss, (row0 + row1) / 2, rtol=1e-6)


def test_training_step_updates_batch_norm_moving_statistics(tiny_data):
  """The UPDATE_OPS dependency: one step moves hidden1_bn's moving mean/variance to the
  batch statistics of its input with decay min(0.999, (1+step)/(10+step)) = 0.1 at step 0,
  the variance Bessel-corrected (n/(n-1)) as TF 1.8's fused kernel (docs/original.md, "Batch
  normalization")."""
  files = yt8m("readers").training_files(tiny_data["train_pattern"])
  graph, tensors = build(frame_config(), files, batch_size=8, optimizer="AdamOptimizer",
                         base_learning_rate=0.01, clip_gradient_norm=1.0)
  (bn_input,) = [op.inputs[0] for op in graph.get_operations()
                 if op.name.endswith("tower/hidden1_bn/moments/mean")]
  variables = {v.op.name: v for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    sess.run(tf1.global_variables_initializer())
    sess.run(tensors["iterator"].initializer)
    # as train_loop: the loss is fetched with the step; the moving-average updates run
    # through the loss's control dependency (the gradients alone do not need them)
    _, _, x = sess.run([tensors["step_after"], tensors["label_loss"], bn_input])
    mean, variance = sess.run([variables["tower/hidden1_bn/moving_mean"],
                               variables["tower/hidden1_bn/moving_variance"]])
  x = x.astype(np.float64)
  assert x.shape == (8, 16)
  decay = min(0.999, 1.0 / 10.0)
  np.testing.assert_allclose(mean, (1 - decay) * x.mean(0), rtol=1e-4, atol=1e-7)
  # the variance moved from 1 by (1 - decay) * (1 - v): compare what moved, v, on its own scale
  moved = (variance.astype(np.float64) - decay) / (1 - decay)
  # atol: the float32 moving variance (~1) carries ~1e-7 absolute error into `moved`
  np.testing.assert_allclose(moved, x.var(0, ddof=1), rtol=2e-3, atol=1e-6)
  assert not np.allclose(moved, x.var(0), rtol=2e-2)  # not the biased variance (8/7 apart)
