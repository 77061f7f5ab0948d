"""Graph structure of NetVLADModelLF / ensembles and the fp16_layers building blocks."""

import math

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
  """docs/original.md: the 32 variables of one model: name -> (shape, trainable, fp16)."""
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
  if "model" not in FLAGS:  # another test may have imported train.py or eval.py already
    model_graph.define_flags()
  try:
    FLAGS.mark_as_parsed()
    assert model_graph.config_from_flags() == model_graph.ModelConfig()
  finally:
    for name in set(FLAGS) - before:
      delattr(FLAGS, name)
    if not was_parsed:
      FLAGS.unparse_flags()


def test_ensemble_prediction_is_weighted_sum_and_eval_is_deterministic():
  weights = [0.7, 0.3]
  config = seed_config([4, 2], [8, 6], weights, num_classes=20)
  config.iterations = 10
  graph, _ = model_graph.build_inference_graph(config)
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(3, 300, 1152)).astype(np.float32)
  frames = np.array([300, 50, 7], np.int32)
  predictions = graph.get_collection("predictions")[0]
  members = graph.get_collection(model_graph.MEMBER_PREDICTIONS)
  assert len(members) == 2
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    sess.run(tf1.global_variables_initializer())
    feeds = {graph.get_collection("input_batch_raw")[0]: raw,
             graph.get_collection("num_frames")[0]: frames}
    mixed = sess.run(predictions, feeds)
    again = sess.run(predictions, feeds)
    # members fetched alongside: the same values up to float32 rounding of another schedule
    with_members, member_values = sess.run([predictions, members], feeds)
    # one video alone gets the same prediction as inside a batch (per-video sampling)
    alone = sess.run(predictions, {graph.get_collection("input_batch_raw")[0]: raw[1:2],
                                   graph.get_collection("num_frames")[0]: frames[1:2]})
  # the mixing weights applied as given (not normalized, not reordered): 0.7 p0 + 0.3 p1
  m0, m1 = (m.astype(np.float64) for m in member_values)
  assert np.abs(m0 - m1).max() > 1e-3  # the two members differ, so a swap would show
  np.testing.assert_allclose(with_members, weights[0] * m0 + weights[1] * m1, rtol=1e-5)
  np.testing.assert_allclose(with_members, mixed, rtol=1e-5)
  np.testing.assert_array_equal(mixed, again)
  np.testing.assert_allclose(alone[0], mixed[1], rtol=1e-5, atol=1e-6)
  assert mixed.shape == (3, 20) and np.all((mixed > 0) & (mixed < 1))


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("prob_gating", [False, True])
def test_moe_softmax_over_m_plus_1_with_a_dummy_expert(prob_gating):
  """docs/original.md, in numpy: class-major columns, softmax over M+1 gates, the
  (M+1)-th gate's expert contributes 0; prob gating multiplies by sigmoid(BN(p W)), BN with
  the initial moving statistics (0, 1) at inference."""
  video_level_models = yt8m("video_level_models")
  V, M, D = 3, 2, 6
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, D)).astype(np.float32)
  graph = tf.Graph()
  with graph.as_default():
    tf1.set_random_seed(1)
    inputs = tf1.placeholder(tf.float32, [None, D])
    out = video_level_models.MoeModel().create_model(
        inputs, V, num_mixtures=M, l2_penalty=1e-8, is_training=False,
        prob_gating=prob_gating, prob_gating_input="prob", remove_diag=False)["predictions"]
    variables = {v.op.name: v for v in tf1.global_variables()}
    # non-zero expert biases, so that the biases' layout matters too
    init = [tf1.global_variables_initializer()]
    with tf1.Session() as sess:
      sess.run(init)
      variables["experts/biases"].load(rng.normal(size=V * M), sess)
      values = {name: sess.run(v) for name, v in variables.items()}
      predictions = sess.run(out, {inputs: x})
  x64 = x.astype(np.float64)
  gates = (x64 @ values["gates/weights"]).reshape(4, V, M + 1)
  gates = np.exp(gates - gates.max(-1, keepdims=True))
  gates /= gates.sum(-1, keepdims=True)
  experts = sigmoid(x64 @ values["experts/weights"] + values["experts/biases"]).reshape(4, V, M)
  expected = (gates[..., :M] * experts).sum(-1)
  assert np.all(gates[..., M] > 0.01)  # the dummy really takes probability mass
  if prob_gating:
    assert values["gating_prob_weights"].shape == (V, V)
    q = expected @ values["gating_prob_weights"]
    expected = expected * sigmoid((q - 0.0) / np.sqrt(1.0 + 0.001))
  np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [None, (0, 0)])
def test_frame_sampling_stays_within_each_videos_frames(seed):
  """Uniform with replacement over [0, num_frames - 1] (docs/original.md); 0 frames -> row 0.
  Each frame row holds its index + 1, padding rows -1, so a sampled value names its frame."""
  model_utils = yt8m("model_utils")
  num_frames = np.array([1, 7, 300, 0, 150], np.int32)
  frames = np.full((5, 300, 2), -1.0, np.float32)
  for video, count in enumerate(num_frames):
    frames[video, :count] = np.arange(1, count + 1)[:, None]
  frames[3, 0] = 0.0  # the 0-frame video's row 0 (a padding row in real data is 0)
  samples = 3000
  graph = tf.Graph()
  with graph.as_default(), tf1.Session() as sess:
    sampled = sess.run(model_utils.sample_random_frames(
        tf.constant(frames), tf.constant(num_frames), samples, seed=seed))[..., 0]
  assert sampled.shape == (5, samples)
  for video, count in enumerate(num_frames):
    values = sampled[video]
    if count == 0:
      assert np.all(values == 0)
      continue
    assert values.min() >= 1 and values.max() <= count, (video, values.min(), values.max())
    if count <= 7:  # every frame is drawn (a missing one has probability < 1e-190)
      assert sorted(set(values.tolist())) == list(range(1, count + 1))
    # uniform: the mean index is (count + 1) / 2 within 5 standard errors
    std_error = math.sqrt((count ** 2 - 1) / 12.0 / samples)
    assert abs(values.mean() - (count + 1) / 2.0) < 5 * std_error + 1e-9, (video, values.mean())


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


def test_recomputed_features_give_autodiffs_gradients_bit_for_bit():
  """float32 training recomputes the sampled rgb features in the backward pass (from the uint8
  frames and the frames' norms) instead of holding them: every gradient equals autodiff's
  through the held features, bit for bit (a frameless video included), and the
  recomputation waits for the backward pass (it must not run with the forward one).
  bfloat16 training holds its (half-size) features."""
  frame_level_models = yt8m("frame_level_models")
  frames = np.random.default_rng(3).integers(0, 256, (4, 30, 1152), dtype=np.uint8)
  num_frames = np.array([30, 7, 0, 12], np.int32)

  def gradients(recompute, compute_dtype=tf.float32):
    with tf.Graph().as_default() as graph:
      tf1.set_random_seed(5)
      result = frame_level_models.NetVLADModelLF().create_model(
          tf.constant(frames), 40, num_frames=tf.constant(num_frames), cluster_size=4,
          hidden_size=8, iterations=20, sample_random_frames=True, gating=True,
          float16_flag=False, classifier_model="MoeModel", is_training=True,
          compute_dtype=compute_dtype, recompute_features=recompute, num_mixtures=2,
          l2_penalty=1e-6, prob_gating=True, prob_gating_input="prediction", remove_diag=False)
      loss = tf.reduce_sum(tf.square(result["predictions"] - 0.25))
      variables = tf1.trainable_variables()
      grads = tf.gradients(loss, variables)
      dequantize_ops = [op for op in graph.get_operations() if op.type == "Dequantize"]
      with tf1.Session() as sess:
        sess.run(tf1.global_variables_initializer())
        values = sess.run(grads)
    return {v.op.name: g for v, g in zip(variables, values)}, dequantize_ops

  assert len(gradients(True, tf.bfloat16)[1]) == 2
  recomputed, ops = gradients(True)
  held, held_ops = gradients(False)
  assert len(held_ops) == 2 and len(ops) == 3  # rgb + audio, and rgb once more
  again = [op for op in ops if op.name.startswith("gradients/")]
  assert len(again) == 1
  ancestors, todo = set(), [again[0]]
  while todo:
    op = todo.pop()
    for parent in [t.op for t in op.inputs] + list(op.control_inputs):
      if parent not in ancestors:
        ancestors.add(parent)
        todo.append(parent)
  # it waits for the incoming gradient: backward ops other than its own input's
  assert [op for op in ancestors if op.name.startswith("gradients/")
          and op.type not in ("Bitcast", "Const", "StridedSlice")]
  assert sorted(recomputed) == sorted(held) and len(held) >= 20
  for name, value in held.items():
    assert value.dtype == np.float32
    np.testing.assert_array_equal(recomputed[name].view(np.uint32), value.view(np.uint32),
                                  err_msg=name)
  assert np.abs(held["video_VLAD/conv2/cluster_weights"]).sum() > 0
