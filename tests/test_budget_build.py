"""8-bit members and the budgeted build_ensemble, on tiny candidate models.

The candidates are single NetVLADModelLF checkpoints of the tiny settings (40 classes, 20
frames) with random weights, written in-process (a graph initialized with a seed and saved,
with its model_flags.json as train.py writes it): what the tools read of a trained model.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, TINY_NUM_CLASSES, run_cli, yt8m

build_lib = yt8m("build_ensemble")
budget_lib = yt8m("budget_build")
checkpoint_utils = yt8m("checkpoint_utils")
ensemble_lib = yt8m("ensemble_checkpoint")
model_graph = yt8m("model_graph")
model_size = yt8m("model_size")
quantization = yt8m("quantization")
readers = yt8m("readers")
utils = yt8m("utils")
weights_lib = yt8m("ensemble_weights")
tf1 = tf.compat.v1

CANDIDATES = ((4, 16, 1), (2, 8, 2), (4, 8, 3))  # (K, H, initialization seed)
BATCH = 64
# 8-bit codes round each weight by at most half a step, (max - min) / 510 of its column: ~0.2%
# of a column's range. Through the tiny model to a probability in (0, 1) we allow 5e-3 per
# class of each video (measured 4.6e-4 at most, 1.3e-4 on average, on 2026-12-07).
UINT8_TOLERANCE = 5e-3
EIGHT_BIT_KERNELS = ("hidden1_weights/hidden1_weights", "hidden2_weights/hidden2_weights",
                     "gating_weights/gating_weights", "gates/weights", "experts/weights",
                     "gating_prob_weights")


def tiny_config(**values):
  settings = dict(frame_features=True, feature_names="rgb,audio", feature_sizes="1024,128",
                  num_classes=TINY_NUM_CLASSES, iterations=20, moe_l2=1e-6, gating=True,
                  moe_prob_gating=True)
  settings.update(values)
  return model_graph.ModelConfig(**settings).validate()


def make_candidate(train_dir, cluster, hidden, seed):
  """A single-model checkpoint train_dir/model.ckpt-0 with random weights + model_flags.json."""
  config = tiny_config(netvlad_cluster_size=[cluster], netvlad_hidden_size=[hidden])
  graph, saver = model_graph.build_inference_graph(config)
  with graph.as_default():
    init = tf1.global_variables_initializer()
    variables = tf1.global_variables()
  prefix = os.path.join(train_dir, "model.ckpt-0")
  rng = np.random.default_rng(seed)
  with tf1.Session(graph=graph) as sess:
    sess.run(init)
    # Each random initialization drawn again from the seed (the batch-norm statistics and
    # the zero biases are constant and stay).
    for variable in variables:
      value = sess.run(variable)
      if value.dtype.kind == "f" and value.std() > 0:
        variable.load((rng.standard_normal(value.shape) * value.std()).astype(value.dtype),
                      sess)
    saver.save(sess, prefix, write_meta_graph=False, write_state=False)
  utils.write_model_flags(train_dir, config.to_json_dict())
  return prefix


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
  root = tmp_path_factory.mktemp("candidates")
  return [make_candidate(str(root / ("c%dh%d" % (k, h))), k, h, seed)
          for k, h, seed in CANDIDATES]


def read_json(path):
  with open(path) as handle:
    return json.load(handle)


# ---------------------------------------------------------------------------------------
# The setting (in-process, no data).


def test_kernel_storage_setting():
  # Empty: --float16_flag's storage; storages equal to it are recorded as [] (old jsons and
  # the original's commands build the same graph, and compare equal).
  assert tiny_config().kernel_storage == [] and tiny_config().member_storage(0) == "float32"
  assert tiny_config(kernel_storage=["float32"]).kernel_storage == []
  assert tiny_config(float16_flag=True, kernel_storage=["float16"]).kernel_storage == []
  mixed = tiny_config(ensemble_num=2, netvlad_cluster_size=[4, 2], netvlad_hidden_size=[8, 8],
                      ensemble_wts=[0.5, 0.5], float16_flag=True,
                      kernel_storage=["uint8", "float16"])
  assert [mixed.member_storage(i) for i in range(2)] == ["uint8", "float16"]
  assert "uint8+float16" in mixed.describe()
  with pytest.raises(ValueError, match="given 1 time"):
    tiny_config(ensemble_num=2, netvlad_cluster_size=[4, 2], netvlad_hidden_size=[8, 8],
                ensemble_wts=[0.5, 0.5], kernel_storage=["uint8"])
  with pytest.raises(ValueError, match="must be float32, float16, uint8"):
    tiny_config(kernel_storage=["int4"])
  with pytest.raises(ValueError, match="gating_remove_diag"):
    tiny_config(kernel_storage=["uint8"], gating_remove_diag=True)
  # The graph: six 8-bit kernels, each with its codebook; nothing of them trainable.
  graph, _ = model_graph.build_inference_graph(tiny_config(kernel_storage=["uint8"]))
  with graph.as_default():
    variables = {v.op.name: v.dtype.base_dtype for v in tf1.global_variables()}
  codes = sorted(name for name, dtype in variables.items() if dtype == tf.uint8)
  assert codes == sorted("tower/" + name for name in EIGHT_BIT_KERNELS)
  for name in codes:
    assert variables[quantization.codebook_name(name)] == tf.float32
  assert len(variables) == 32 + 1 + 6


# ---------------------------------------------------------------------------------------
# An 8-bit member against its float32 self (in-process, on the tiny held-out data).


@pytest.mark.slow  # several models over the held-out files: a tool's run in-process
def test_uint8_member_predictions_are_close_to_float32(candidates, tiny_data, tmp_path):
  files = readers.eval_files(tiny_data["validate_pattern"])
  single = tiny_config(netvlad_cluster_size=[4], netvlad_hidden_size=[16])
  (p32,), labels32, _ = weights_lib.collect_member_predictions(
      single, candidates[0], files, BATCH, 8, 0, np.float32, 20)
  # build_ensemble's library: candidate 0 in 8 bits and candidate 1 in float16, one graph.
  config = build_lib.assemble_config(
      candidates[:2], {"kernel_storage": ["uint8", "float16"], "iterations": 20,
                       "num_classes": TINY_NUM_CLASSES, "gating": True,
                       "moe_prob_gating": True, "moe_l2": 1e-6},
      [build_lib.member_model_flags(c) for c in candidates[:2]],
      [checkpoint_utils.variable_specs(tf.train.load_checkpoint(c)) for c in candidates[:2]])
  built = str(tmp_path / "built")
  with checkpoint_utils.LocalCopies() as copies:
    build_lib.build(config, candidates[:2], built, "inference_model", copies)
  assert read_json(os.path.join(built, "model_flags.json"))["kernel_storage"] == [
      "uint8", "float16"]
  written = tf.train.load_checkpoint(os.path.join(built, "inference_model"))
  source = tf.train.load_checkpoint(candidates[0])
  for name in EIGHT_BIT_KERNELS:  # codes and codebook = quantize(the float32 kernel)
    codes, codebook = quantization.quantize(source.get_tensor("tower/" + name))
    np.testing.assert_array_equal(written.get_tensor("tower/" + name), codes)
    np.testing.assert_array_equal(
        written.get_tensor(quantization.codebook_name("tower/" + name)), codebook)
  members, labels, _ = weights_lib.collect_member_predictions(
      config, os.path.join(built, "inference_model"), files, BATCH, 8, 0, np.float32, 20)
  np.testing.assert_array_equal(labels, labels32)
  # Model 0 samples its frames with the same seed as the single model: only the kernels
  # differ.
  difference = np.abs(members[0] - p32).max(1)
  print("8-bit vs float32 member: max |difference| %.5f per class, mean %.6f" % (
      difference.max(), np.abs(members[0] - p32).mean()))
  assert difference.max() <= UINT8_TOLERANCE, difference.max()
  assert difference.max() > 0
  overlap = [len(set(np.argsort(-a)[:20]) & set(np.argsort(-b)[:20])) / 20.0
             for a, b in zip(members[0], p32)]
  assert np.mean(overlap) >= 0.9, np.mean(overlap)
  report = model_size.measure(built)
  assert report["tensors_by_dtype"]["uint8"] == 6
  # 8-bit kernels count as float32 in the comparison; their codebooks do not count there.
  assert report["float32_tensor_bytes"] > report["tensor_bytes"]


@pytest.mark.slow  # several models over the held-out files: a tool's run in-process
def test_options_of_a_group_are_the_single_models_in_one_pass(candidates, tiny_data,
                                                              tmp_path):
  """group_predictions runs several options in one graph: each option's predictions are its
  candidate's own as a single model (sampling with seed (0, 0)), and the storages of one
  candidate differ by their kernels only."""
  files = readers.eval_files(tiny_data["validate_pattern"])
  pool = tiny_config(ensemble_num=2, netvlad_cluster_size=[4, 2], netvlad_hidden_size=[16, 8],
                     ensemble_wts=[0.5, 0.5])
  settings = budget_lib.Settings(eval_files=files, limit=2**30,
                                 storages=["float32", "uint8"], batch_size=BATCH)
  group = [(0, "float32"), (1, "float32"), (0, "uint8")]
  with checkpoint_utils.LocalCopies() as copies:
    predictions, labels, info = budget_lib.group_predictions(
        pool, group, candidates[:2], settings, copies, str(tmp_path))
  assert os.listdir(str(tmp_path)) == []  # the temporary checkpoint is gone
  assert len(predictions) == 3 and info["videos"] == len(labels)
  for index, (cluster, hidden, _) in enumerate(CANDIDATES[:2]):
    single = tiny_config(netvlad_cluster_size=[cluster], netvlad_hidden_size=[hidden])
    (alone,), alone_labels, _ = weights_lib.collect_member_predictions(
        single, candidates[index], files, BATCH, 8, 0, np.float32, 20)
    np.testing.assert_array_equal(alone_labels, labels)
    np.testing.assert_allclose(predictions[index], alone, rtol=0, atol=1e-5)
    if index == 1:  # as the second model of an ensemble it would sample other frames
      (second,), _, _ = weights_lib.collect_member_predictions(
          single, candidates[index], files, BATCH, 8, 0, np.float32, 20,
          sampling_seeds=[(0, 1)])
      # (Random tiny models barely depend on the frames: 1.9e-4 at most, measured on
      # 2026-12-07, against the 1e-5 above.)
      assert np.abs(second - alone).max() > 5e-5
  difference = np.abs(predictions[2] - predictions[0]).max()
  assert 0 < difference <= UINT8_TOLERANCE, difference


def test_option_groups_bound_the_tensor_bytes_of_a_pass():
  class Plan(object):
    def __init__(self, size):
      self.size = size

    def output_bytes(self):
      return self.size

  sizes = {(0, "float32"): (Plan(400), 0), (0, "uint8"): (Plan(100), 0),
           (1, "float32"): (Plan(700), 0), (2, "float32"): (Plan(1200), 0),
           (2, "uint8"): (Plan(300), 0)}
  assert budget_lib.option_groups(sizes, limit_bytes=1000) == [
      [(0, "float32"), (0, "uint8")], [(1, "float32")], [(2, "float32")], [(2, "uint8")]]
  assert budget_lib.option_groups(sizes, limit_bytes=10**6) == [list(sizes)]


# ---------------------------------------------------------------------------------------
# The budgeted build (tool processes).


def budget_args(candidates, tiny_data, train_dir, limit, *extra):
  return ["--train_dir=" + train_dir, "--candidates=" + ",".join(candidates),
          "--eval_data_pattern=" + tiny_data["validate_pattern"],
          "--size_limit_bytes=%d" % limit, "--batch_size=%d" % BATCH,
          "--search_iterations=2"] + [f for f in TINY_FLAGS if "feature" not in f] + list(
              extra)


@pytest.mark.slow
def test_budgeted_build_never_exceeds_the_limit(candidates, tiny_data, tmp_path):
  # A dry run under the default limit (everything fits): the plan, nothing written.
  dry_dir = str(tmp_path / "dry")
  dry_json = str(tmp_path / "dry.json")
  result = run_cli("build_ensemble", *budget_args(candidates, tiny_data, dry_dir, 2**30,
                                                  "--dry_run", "--results_json=" + dry_json))
  assert not os.path.exists(dry_dir), os.listdir(dry_dir)
  dry = read_json(dry_json)
  assert len(dry["options"]) == 9 and dry["dry_run"]
  assert "Options (candidate x storage)" in result.stdout and "dry run" in result.stdout
  by_storage = {}
  for option in dry["options"]:
    by_storage.setdefault(option["candidate"], {})[option["storage"]] = option["bytes"]
  for sizes in by_storage.values():
    assert sizes["uint8"] < sizes["float16"] < sizes["float32"]
  assert dry["measured_bytes"] <= 2**30

  # A limit that binds: under the unconstrained choice's size. The result fits, as model_size
  # counts the written files, and eval.py reports the GAP the tool reported for the graph.
  limit = dry["measured_bytes"] - 1
  out = str(tmp_path / "budget")
  results_json = str(tmp_path / "budget.json")
  result = run_cli("build_ensemble", *budget_args(candidates, tiny_data, out, limit,
                                                  "--results_json=" + results_json))
  chosen = read_json(results_json)
  print(result.stdout)
  print("unconstrained: %s, %d B measured (%d estimated), graph GAP %.5f" % (
      [(m["candidate"][-14:], m["storage"]) for m in dry["members"]], dry["measured_bytes"],
      dry["estimated_bytes"], dry["graph_gap"]))
  assert chosen["measured_bytes"] <= limit
  assert ([(m["candidate"], m["storage"]) for m in chosen["members"]]
          != [(m["candidate"], m["storage"]) for m in dry["members"]])
  report = model_size.measure(out, limit=limit)
  assert report["fits"] and report["total_bytes"] == chosen["measured_bytes"]
  assert os.path.exists(os.path.join(out, budget_lib.TABLE_FILE))
  stored = read_json(os.path.join(out, "model_flags.json"))
  assert stored["ensemble_num"] == len(chosen["members"])
  assert [s or "float32" for s in (stored["kernel_storage"] or [None] * len(
      chosen["members"]))] == [m["storage"] for m in chosen["members"]]
  eval_json = str(tmp_path / "eval.json")
  run_cli("eval", "--train_dir=" + out, "--checkpoint_file=inference_model",
          "--eval_data_pattern=" + tiny_data["validate_pattern"], "--batch_size=%d" % BATCH,
          "--run_once", "--results_json=" + eval_json)
  assert abs(read_json(eval_json)["gap"] - chosen["graph_gap"]) < 1e-5
  # The submission tgz of it, read back by model_size.
  tgz = str(tmp_path / "budget.tgz")
  run_cli("inference", "--train_dir=" + out, "--output_model_tgz=" + tgz,
          "--input_data_pattern=" + tiny_data["test_pattern"], "--batch_size=7",
          "--output_file=" + str(tmp_path / "budget.csv"))
  assert model_size.measure(model_tgz=tgz)["total_bytes"] == chosen["measured_bytes"]

  # A budget too small for any member: one clear error, nothing written. (One candidate, the
  # smallest: the tool estimates every option's size before it can tell.)
  small = str(tmp_path / "small")
  result = run_cli("build_ensemble", *budget_args(candidates[1:2], tiny_data, small, 10000),
                   check=False)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "holds no member" in errors[0], result.stderr[-2000:]
  assert not os.path.exists(small)
