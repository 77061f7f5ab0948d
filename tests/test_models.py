"""Graph structure of NetVLADModelLF / ensembles and the fp16_layers building blocks."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import yt8m

tf1 = tf.compat.v1
fp16_layers = yt8m("fp16_layers")
model_graph = yt8m("model_graph")

V = 3862


def seed_config(clusters, hiddens, weights=None, float16=False, num_classes=V):
  n = len(clusters)
  return model_graph.ModelConfig(
      frame_features=True, feature_names="rgb,audio", feature_sizes="1024,128",
      num_classes=num_classes, ensemble_num=n, netvlad_cluster_size=clusters,
      netvlad_hidden_size=hiddens, ensemble_wts=weights or [1.0] * n, float16_flag=float16,
      gating=True, iterations=300, moe_l2=1e-6, moe_prob_gating=True).validate()


def expected_variables(K, H, scope="tower/", float16=False, num_classes=V):
  """behavior.md 3.4: the 32 variables of one model: name -> (shape, trainable, fp16)."""
  V = num_classes  # pylint: disable=redefined-outer-name,invalid-name
  Ka = int(K / 2)
  Dv = 1024 * K + 128 * Ka
  table = {}

  def bn(prefix, size):
    table[prefix + "/beta"] = ([size], True, False)
    table[prefix + "/gamma"] = ([size], True, False)
    table[prefix + "/moving_mean"] = ([size], False, False)
    table[prefix + "/moving_variance"] = ([size], False, False)

  table["video_VLAD/conv2/cluster_weights"] = ([1024, K], True, False)
  bn("video_VLAD/cluster_bn", K)
  table["video_VLAD/cluster_weights2/cluster_weights2"] = ([1, 1024, K], True, False)
  table["audio_VLAD/conv2/cluster_weights"] = ([128, Ka], True, False)
  bn("audio_VLAD/cluster_bn", Ka)
  table["audio_VLAD/cluster_weights2/cluster_weights2"] = ([1, 128, Ka], True, False)
  table["hidden1_weights/hidden1_weights"] = ([Dv, H], True, True)
  bn("hidden1_bn", H)
  table["hidden2_weights/hidden2_weights"] = ([H, 2 * H], True, False)
  table["hidden2_biases"] = ([2 * H], True, False)
  table["gating_weights/gating_weights"] = ([2 * H, 2 * H], True, False)
  bn("gating_bn", 2 * H)
  table["gates/weights"] = ([2 * H, V * 6], True, True)
  table["experts/weights"] = ([2 * H, V * 5], True, True)
  table["experts/biases"] = ([V * 5], True, False)
  table["gating_prob_weights"] = ([V, V], True, True)
  bn("gating_prob_bn", V)
  return {scope + name: (shape, trainable, fp16 and float16)
          for name, (shape, trainable, fp16) in table.items()}


def graph_variables(config):
  graph, _ = model_graph.build_inference_graph(config)
  trainable = {v.op.name for v in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES)}
  return graph, {v.op.name: (v.shape.as_list(), v.op.name in trainable,
                             v.dtype.base_dtype == tf.float16)
                 for v in graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}


@pytest.mark.parametrize("K,H", [(32, 512), (25, 100)])
def test_netvlad_has_the_original_32_variables(K, H):
  _, variables = graph_variables(seed_config([K], [H]))
  expected = expected_variables(K, H)
  assert variables.pop("global_step") == ([], False, False)
  assert variables == expected
  assert len(variables) == 32
  assert sum(1 for _, trainable, _ in variables.values() if trainable) == 22
  Ka = int(K / 2)
  Dv = 1024 * K + 128 * Ka
  params = sum(int(np.prod(shape)) for shape, _, _ in variables.values())
  assert params == (2052 * K + 260 * Ka + Dv * H + 6 * H * H + 14 * H + 22 * H * V + V * V
                    + 9 * V)


def test_seed_32_512_parameter_count_matches_reference():
  _, variables = graph_variables(seed_config([32], [512]))
  params = sum(int(np.prod(shape)) for name, (shape, _, _) in variables.items()
               if name != "global_step")
  assert params == 77927018


def test_float16_ensemble_names_dtypes_and_count():
  clusters, hiddens = [8, 6, 4], [16, 24, 8]
  graph, variables = graph_variables(seed_config(clusters, hiddens, [0.5, 0.3, 0.2],
                                                 float16=True))
  assert len(variables) == 32 * 3 + 1
  for index, (K, H) in enumerate(zip(clusters, hiddens)):
    scope = "tower/" if index == 0 else "tower/model%d/" % index
    expected = expected_variables(K, H, scope, float16=True)
    for name, value in expected.items():
      assert variables[name] == value, name
  fp16 = sorted(name for name, (_, _, is_fp16) in variables.items() if is_fp16)
  assert len(fp16) == 12
  assert all(name.split("/")[-1] in ("hidden1_weights", "weights", "gating_prob_weights")
             for name in fp16)
  # compute stays float32
  assert graph.get_collection("predictions")[0].dtype == tf.float32


def test_wrong_repeated_flag_count_names_the_flag():
  with pytest.raises(ValueError, match="--netvlad_hidden_size was given 1 time"):
    seed_config([8, 8], [16])
  with pytest.raises(ValueError, match="--ensemble_wts was given 1 time"):
    model_graph.ModelConfig(**dict(seed_config([8, 8], [16, 16]).to_json_dict(),
                                   ensemble_wts=[1.0])).validate()


def test_config_defaults_are_the_flag_defaults():
  """ModelConfig() is what train.py builds from no flags (the defaults live in both)."""
  FLAGS = tf1.flags.FLAGS  # pylint: disable=invalid-name
  before, was_parsed = set(FLAGS), FLAGS.is_parsed()
  model_graph.define_flags()  # train.py / eval.py define these under __main__
  try:
    FLAGS.mark_as_parsed()
    assert model_graph.config_from_flags() == model_graph.ModelConfig()
  finally:
    for name in set(FLAGS) - before:
      delattr(FLAGS, name)
    if not was_parsed:
      FLAGS.unparse_flags()


def test_ensemble_prediction_is_weighted_sum_and_eval_is_deterministic():
  config = seed_config([4, 4], [8, 8], [0.7, 0.3], num_classes=20)
  config.iterations = 10
  graph, _ = model_graph.build_inference_graph(config)
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(3, 300, 1152)).astype(np.float32)
  frames = np.array([300, 50, 7], np.int32)
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    sess.run(tf1.global_variables_initializer())
    feeds = {graph.get_collection("input_batch_raw")[0]: raw,
             graph.get_collection("num_frames")[0]: frames}
    mixed = sess.run(graph.get_collection("predictions")[0], feeds)
    again = sess.run(graph.get_collection("predictions")[0], feeds)
    members = [t for t in graph.get_operations() if t.type == "Mul" and "predictions" not in
               t.name]
    # one video alone gets the same prediction as inside a batch (per-video sampling)
    alone = sess.run(graph.get_collection("predictions")[0],
                     {graph.get_collection("input_batch_raw")[0]: raw[1:2],
                      graph.get_collection("num_frames")[0]: frames[1:2]})
  assert members
  np.testing.assert_array_equal(mixed, again)
  np.testing.assert_allclose(alone[0], mixed[1], rtol=1e-5, atol=1e-6)
  assert mixed.shape == (3, 20) and np.all((mixed > 0) & (mixed < 1))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
def test_fully_connected_names_dtypes_collections(dtype):
  graph = tf.Graph()
  with graph.as_default():
    tf1.set_random_seed(7)
    x = tf1.placeholder(tf.float32, [None, 6])
    y = fp16_layers.fully_connected(x, 4, activation_fn=None, scope="experts",
                                    weights_regularizer=fp16_layers.l2_regularizer(0.5),
                                    dtype=dtype)
    variables = {v.op.name: v for v in tf1.global_variables()}
    assert set(variables) == {"experts/weights", "experts/biases"}
    assert variables["experts/weights"].dtype.base_dtype == dtype
    assert variables["experts/biases"].dtype.base_dtype == tf.float32
    assert set(v.op.name for v in tf1.get_collection(tf1.GraphKeys.MODEL_VARIABLES)) == set(
        variables)
    (reg,) = tf1.get_collection(tf1.GraphKeys.REGULARIZATION_LOSSES)
    assert y.dtype == tf.float32 and reg.dtype == tf.float32
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      w, b = sess.run([variables["experts/weights"], variables["experts/biases"]])
      feed = np.arange(12, dtype=np.float32).reshape(2, 6) / 10
      out, reg_value = sess.run([y, reg], {x: feed})
  # float32 matmul error is relative to the sum of |terms|, not to the result: an output
  # close to zero (cancellation) needs an absolute bound from the terms' magnitudes.
  w64 = w.astype(np.float64)
  term_magnitude = np.abs(feed) @ np.abs(w64) + np.abs(b)
  np.testing.assert_array_less(np.abs(out - (feed @ w64 + b)), 1e-6 * term_magnitude + 1e-12)
  np.testing.assert_allclose(reg_value, 0.5 * np.sum(w.astype(np.float64) ** 2) / 2,
                             rtol=1e-4)
  limit = np.sqrt(6.0 / (6 + 4))  # Glorot uniform
  assert np.all(np.abs(w.astype(np.float32)) <= limit + 1e-3)


def test_fully_connected_with_normalizer_has_no_bias():
  graph = tf.Graph()
  with graph.as_default():
    x = tf1.placeholder(tf.float32, [None, 3])
    fp16_layers.fully_connected(x, 2, normalizer_fn=fp16_layers.batch_norm,
                                normalizer_params={"is_training": True}, scope="fc")
    names = sorted(v.op.name for v in tf1.global_variables())
  assert names == ["fc/BatchNorm/beta", "fc/BatchNorm/gamma", "fc/BatchNorm/moving_mean",
                   "fc/BatchNorm/moving_variance", "fc/weights"]


def test_batch_norm_matches_slim_semantics():
  rng = np.random.default_rng(1)
  data = rng.normal(3.0, 2.0, size=(8, 5)).astype(np.float32)
  graph = tf.Graph()
  with graph.as_default():
    x = tf1.placeholder(tf.float32, [None, 5])
    train_out = fp16_layers.batch_norm(x, is_training=True, scope="bn")
    eval_out = fp16_layers.batch_norm(x, is_training=False, scope="bn", reuse=True)
    updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    assert len(updates) == 2
    moving = {v.op.name: v for v in tf1.get_collection(
        tf1.GraphKeys.MOVING_AVERAGE_VARIABLES)}
    trainable = sorted(v.op.name for v in tf1.trainable_variables())
    assert trainable == ["bn/beta", "bn/gamma"]
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      out = sess.run(train_out, {x: data})
      sess.run(updates, {x: data})
      mean, var = sess.run([moving["bn/moving_mean"], moving["bn/moving_variance"]])
      inference = sess.run(eval_out, {x: data})
  expected = (data - data.mean(0)) / np.sqrt(data.var(0) + 0.001)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(mean, 0.001 * data.mean(0), rtol=1e-4)
  # fused-kernel convention: the moving variance moves toward the Bessel-corrected variance
  np.testing.assert_allclose(var, 0.999 + 0.001 * data.var(0, ddof=1), rtol=1e-5)
  np.testing.assert_allclose(inference, (data - mean) / np.sqrt(var + 0.001), rtol=1e-4,
                             atol=1e-4)


def test_batch_norm_warmup_decay_follows_step():
  graph = tf.Graph()
  with graph.as_default():
    step = tf1.placeholder(tf.int32, [])
    tf1.add_to_collection(fp16_layers.BATCH_NORM_WARMUP_STEP, step)
    x = tf.constant([[2.0], [4.0]])
    fp16_layers.batch_norm(x, is_training=True, scope="bn")
    updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      mean = sess.run(updates, {step: 0})[0]
  # decay at step 0 is min(0.999, 1/10) = 0.1: the moving mean jumps 90% of the way to 3
  np.testing.assert_allclose(mean, [2.7], rtol=1e-5)
