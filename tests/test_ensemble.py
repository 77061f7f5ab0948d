"""Ensemble tools: overwrite_float16_ckpt (the original's step 3), build_ensemble, ensemble_weights,
model_size, and the original's 5-step float16 ensemble path, on tiny real models.

Three single models (K, H) = (4, 16), (2, 8), (4, 8) are trained for 20 steps (model 0 is
also turned into an inference checkpoint by eval.py, models 1-2 are used as training
checkpoints); the original's steps 1-5 then run as subprocesses with the original's repeated
flags (tiny values), next to the one-command path. Independent command lines run concurrently,
stage by stage (module fixture `ens`), and library calls run in-process meanwhile.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, TINY_NUM_CLASSES, spawn_cli, yt8m

checkpoint_utils = yt8m("checkpoint_utils")
overwrite_lib = yt8m("overwrite_float16_ckpt")
ensemble_lib = yt8m("ensemble_checkpoint")
build_lib = yt8m("build_ensemble")
weights_lib = yt8m("ensemble_weights")
model_size = yt8m("model_size")
readers = yt8m("readers")
tf1 = tf.compat.v1

SINGLES = ((4, 16), (2, 8), (4, 8))
STEP1_WTS = (0.4, 0.3, 0.3)  # the original's first MIXING_WEIGHTS (steps 1-2)
WTS = (0.5, 0.3, 0.2)  # the "tuned" weights of steps 4-5
NAME = "inference_model_ensemble_X"  # the original's INFERENCE_MODEL_NAME
TAGGED = "inference_model_ensemble_05_03_02_X-0"
FP16_KERNELS = ("hidden1_weights/hidden1_weights", "gates/weights", "experts/weights",
                "gating_prob_weights")
# The original's model flags, with tiny values (TINY_FLAGS: 40 classes, 20 frames).
ORIGINAL_MODEL_FLAGS = ["--moe_l2=1e-6", "--iterations=20", "--netvlad_relu=False", "--gating=True",
                    "--moe_prob_gating=True", "--num_classes=%d" % TINY_NUM_CLASSES]
READER_FLAGS = ["--frame_features", "--feature_names=rgb,audio", "--feature_sizes=1024,128"]


def repeated_flags(weights):
  """The original's per-model lines: K, H and mixing weight of each model, in model order."""
  args = []
  for (cluster, hidden), weight in zip(SINGLES, weights):
    args += ["--netvlad_cluster_size=%d" % cluster, "--netvlad_hidden_size=%d" % hidden,
             "--ensemble_wts=%g" % weight]
  return args


class Result(object):

  def __init__(self, returncode, output):
    self.returncode = returncode
    self.output = output


class Stage(object):
  """Command lines {name: (module, args)} started concurrently in the background (forked by
  the fork server)."""

  def __init__(self, log_dir, jobs):
    self.start = time.time()
    self.running = {}
    for name, (module, args) in jobs.items():
      log_path = os.path.join(log_dir, name + ".log")
      log = open(log_path, "w")
      process = spawn_cli(module, *args, stdout=log, stderr=subprocess.STDOUT)
      self.running[name] = (process, log, log_path)

  def finish(self, must_succeed=None):
    """Waits for all; returns {name: Result}; asserts success of must_succeed (default all)."""
    results = {}
    for name, (process, log, log_path) in self.running.items():
      process.wait(timeout=600)
      log.close()
      with open(log_path) as handle:
        results[name] = Result(process.returncode, handle.read())
    sys.stderr.write("stage %s: %.1f s\n" % (",".join(results), time.time() - self.start))
    names = results if must_succeed is None else must_succeed
    failed = [n for n in names if results[n].returncode != 0]
    assert not failed, "\n\n".join("%s failed (exit %d):\n%s" % (
        n, results[n].returncode, results[n].output[-3000:]) for n in failed)
    return results


def list_dir(path):
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def read_all(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def read_json(path):
  with open(path) as handle:
    return json.load(handle)


def write_variables(prefix, values, meta=False):
  """A checkpoint of plain tf.compat.v1 variables {name: ndarray} (+ its .meta)."""
  graph = tf.Graph()
  with graph.as_default():
    for name in sorted(values):
      tf1.Variable(values[name], name=name)
    saver = tf1.train.Saver(sharded=False)
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      saver.save(sess, prefix, write_meta_graph=meta, write_state=False)


@pytest.fixture(scope="module")
def ens(tiny_data, tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ensemble"))
  logs = os.path.join(root, "logs")
  os.makedirs(logs)
  d = {"root": root, "ens": os.path.join(root, "ensemble_X"),
       "built": os.path.join(root, "built"), "built32": os.path.join(root, "built32")}
  singles = {}
  for cluster, hidden in SINGLES:
    singles[(cluster, hidden)] = os.path.join(root, "c%dh%d" % (cluster, hidden))
  # Model 0's source is eval.py's inference checkpoint (as in the original's commands); models 1
  # and 2 use their training checkpoints directly (the tools ignore the Adam slots), which keeps the
  # number of TensorFlow processes of this file down.
  d["sources"] = [os.path.join(singles[SINGLES[0]], "inference_model_20")] + [
      os.path.join(singles[kh], "model.ckpt-20") for kh in SINGLES[1:]]
  validate = "--eval_data_pattern=" + tiny_data["validate_pattern"]

  # Stage A: the single models, and the original's step 1 (train 10 steps, float16 graph).
  jobs = {}
  for (cluster, hidden), train_dir in singles.items():
    jobs["train_c%dh%d" % (cluster, hidden)] = ("train", [
        "--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
        "--batch_size=16", "--base_learning_rate=0.01", "--num_epochs=100",
        "--max_steps=20", "--export_model_steps=20", "--netvlad_cluster_size=%d" % cluster,
        "--netvlad_hidden_size=%d" % hidden] + TINY_FLAGS)
  jobs["step1"] = ("train", [
      "--train_data_pattern=" + tiny_data["train_pattern"], "--model=NetVLADModelLF",
      "--train_dir=" + d["ens"]] + READER_FLAGS + [
          "--batch_size=10", "--base_learning_rate=0.00003"] + repeated_flags(STEP1_WTS)
      + ORIGINAL_MODEL_FLAGS + ["--learning_rate_decay=0.8", "--max_steps=10",
                            "--export_model_steps=2000", "--ensemble_num=3",
                            "--float16_flag=True"])
  d["A"] = Stage(logs, jobs).finish()

  # Stage B: single-model inference checkpoints; step 2 (the 32*n+1 template + meta).
  jobs = {"eval_single": ("eval", ["--train_dir=" + singles[SINGLES[0]], "--create_meta_only",
                                   "--run_once"])}
  jobs["step2"] = ("eval", [validate, "--model=NetVLADModelLF", "--train_dir=" + d["ens"]]
                   + READER_FLAGS + ["--batch_size=500", "--base_learning_rate=0.0001"]
                   + repeated_flags(STEP1_WTS) + ORIGINAL_MODEL_FLAGS
                   + ["--learning_rate_decay=0.8", "--run_once=True", "--ensemble_num=3",
                      "--float16_flag=True", "--create_meta_only"])
  d["B"] = Stage(logs, jobs).finish()
  d["state_before"] = open(os.path.join(d["ens"], "checkpoint")).read()
  d["ens_files_before"] = list_dir(d["ens"])

  # Stage C: step 3 (overwrite), the one-command path, two bad command lines. Meanwhile,
  # in-process: the float32 ensemble (build_ensemble's library with float16_flag=False).
  overwrite_common = ["--train_dir=" + d["ens"], "--inference_model=inference_model_10"]
  stage = Stage(logs, {
      "step3": ("overwrite_float16_ckpt", overwrite_common + [
          "--out_name=" + NAME, "--checkpoints=" + ",".join(d["sources"])]),
      "build16": ("build_ensemble", ["--train_dir=" + d["built"],
                                     "--checkpoints=" + ",".join(d["sources"])]
                  + repeated_flags(WTS) + ORIGINAL_MODEL_FLAGS),
      "bad_count": ("overwrite_float16_ckpt", overwrite_common + [
          "--out_name=bad_count", "--checkpoints=" + ",".join(d["sources"][:2])]),
      "bad_wts": ("build_ensemble", [
          "--train_dir=" + os.path.join(root, "bad_wts"),
          "--checkpoints=" + ",".join(d["sources"]), "--ensemble_wts=0.5",
          "--ensemble_wts=0.5"] + ORIGINAL_MODEL_FLAGS),
  })
  d["config32"] = tiny_ensemble_config(d["sources"], float16=False)
  with checkpoint_utils.LocalCopies() as copies:
    build_lib.build(d["config32"], d["sources"], d["built32"], "inference_model", copies)
  d["C"] = stage.finish(must_succeed=("step3", "build16"))

  # Stage D: step 5 (submission name), inference + tgz of the one-command output, weight
  # search. Meanwhile, in-process: the float32 ensemble's GAP (eval.py's metric code).
  d["json"] = {name: os.path.join(root, name + ".json")
               for name in ("step4", "weights", "eval_best", "size")}
  original_eval = [validate, "--model=NetVLADModelLF", "--train_dir=" + d["ens"]] + (
      READER_FLAGS + ["--batch_size=64", "--base_learning_rate=0.0001"] + repeated_flags(WTS)
      + ORIGINAL_MODEL_FLAGS + ["--learning_rate_decay=0.8", "--run_once=True",
                            "--ensemble_num=3", "--float16_flag=True",
                            "--checkpoint_file=%s-0" % NAME])
  d["tgz"] = os.path.join(root, "submission.tgz")
  d["csv"] = {name: os.path.join(root, name + ".csv") for name in ("original", "built", "tgz")}
  test_data = "--input_data_pattern=" + tiny_data["test_pattern"]
  stage = Stage(logs, {
      "step5": ("eval", original_eval + ["--force_output_model_name=True"]),
      "infer_built": ("inference", ["--train_dir=" + d["built"], test_data, "--batch_size=7",
                                    "--output_file=" + d["csv"]["built"],
                                    "--output_model_tgz=" + d["tgz"]]),
      "weights": ("ensemble_weights", [
          "--train_dir=" + d["built"], validate, "--batch_size=64", "--search_iterations=3",
          "--results_json=" + d["json"]["weights"]]),
  })
  d["members32"], d["labels32"], _ = weights_lib.collect_member_predictions(
      d["config32"], os.path.join(d["built32"], "inference_model"),
      readers.eval_files(tiny_data["validate_pattern"]), 64, 8, 0, np.float32, 20)
  d["D"] = stage.finish()

  # Stage E: step 4 (evaluate, weights-tagged copy), inference with the original's path's
  # submission model and from the tgz, eval.py with the best weights, size of the tgz.
  best = read_json(d["json"]["weights"])["best_weights"]["flags"]
  stage = Stage(logs, {
      "step4": ("eval", original_eval + ["--results_json=" + d["json"]["step4"]]),
      "infer_original": ("inference", ["--train_dir=" + d["ens"], test_data, "--batch_size=7",
                                   "--output_file=" + d["csv"]["original"]]),
      "infer_tgz": ("inference", ["--input_model_tgz=" + d["tgz"], test_data,
                                  "--untar_model_dir=" + os.path.join(root, "untar"),
                                  "--batch_size=7", "--output_file=" + d["csv"]["tgz"]]),
      "eval_best": ("eval", [validate, "--train_dir=" + d["built"], "--batch_size=64",
                             "--run_once", "--checkpoint_file=inference_model",
                             "--results_json=" + d["json"]["eval_best"]] + best),
      "size_tgz": ("model_size", ["--model_tgz=" + d["tgz"], "--limit_bytes=100000",
                                  "--fail_if_over", "--results_json=" + d["json"]["size"]]),
  })
  # Meanwhile, in-process: the float16 ensemble's member predictions (what the weight
  # search mixed).
  d["members16"], d["labels16"], _ = weights_lib.collect_member_predictions(
      tiny_ensemble_config(d["sources"]), os.path.join(d["built"], "inference_model"),
      readers.eval_files(tiny_data["validate_pattern"]), 64, 8, 0, np.float32, 20)
  d["E"] = stage.finish(must_succeed=("step4", "infer_original", "infer_tgz", "eval_best"))
  return d


def tiny_ensemble_config(sources, float16=True, weights=WTS, **explicit):
  """build_ensemble's configuration of the 3 tiny models (as from its command line)."""
  values = dict(float16_flag=float16, ensemble_wts=list(weights), iterations=20, moe_l2=1e-6,
                gating=True, moe_prob_gating=True,
                num_classes=TINY_NUM_CLASSES)
  values.update(explicit)
  with checkpoint_utils.LocalCopies() as copies:
    specs = [ensemble_lib.specs_from_checkpoint(s, copies) for s in sources]
  members = [build_lib.member_model_flags(s) for s in sources]
  return build_lib.assemble_config(sources, values, members, specs)


# ---------------------------------------------------------------------------------------
# Mapping (in-process, no training needed).


def test_model_scope_mapping_is_exact():
  assert ensemble_lib.model_of("tower/gates/weights") == (0, "tower/gates/weights")
  assert ensemble_lib.model_of("tower/model1/gates/weights") == (1, "tower/gates/weights")
  assert ensemble_lib.model_of("tower/model10/gates/weights") == (10, "tower/gates/weights")
  assert ensemble_lib.model_of("tower/model12/video_VLAD/cluster_bn/beta") == (
      12, "tower/video_VLAD/cluster_bn/beta")
  # 'model' as a leaf name or as part of a longer component is not a model scope
  assert ensemble_lib.model_of("tower/model1x/w") == (0, "tower/model1x/w")
  assert ensemble_lib.model_of("tower/x/model3") == (0, "tower/x/model3")
  for bad in ("tower/model0/w", "tower/model01/w", "tower/model1/model2/w"):
    with pytest.raises(checkpoint_utils.CheckpointToolError):
      ensemble_lib.model_of(bad)


def test_eleven_models_each_get_their_own_source(tmp_path):
  """11 sources: model1 and model10 (and 11 distinct shapes) must not be confused."""
  count = 11
  rng = np.random.default_rng(3)
  template, sources, expected = {}, [], {}
  for index in range(count):
    scope = "tower/" if index == 0 else "tower/model%d/" % index
    source = {
        "tower/gates/weights": rng.standard_normal((2, index + 1)).astype(np.float32),
        "tower/hidden1_bn/beta": np.full((index + 2,), index, np.float32),
        "global_step": np.int32(1000 + index),
        "tower/gates/weights/Adam": np.zeros((2, index + 1), np.float32),  # not used
    }
    prefix = str(tmp_path / ("single%d" % index))
    write_variables(prefix, source)
    sources.append(prefix + (".index" if index == 5 else ""))
    template[scope + "gates/weights"] = np.zeros((2, index + 1), np.float16)
    template[scope + "hidden1_bn/beta"] = np.zeros((index + 2,), np.float32)
    expected[scope + "gates/weights"] = source["tower/gates/weights"].astype(np.float16)
    expected[scope + "hidden1_bn/beta"] = source["tower/hidden1_bn/beta"]
  template["global_step"] = np.int32(10)
  template_prefix = str(tmp_path / "inference_model_10")
  write_variables(template_prefix, template, meta=True)

  output = str(tmp_path / "out-0")
  sources = ensemble_lib.parse_checkpoint_list(",".join(sources))
  summary = overwrite_lib.overwrite(template_prefix, sources, output)
  written = read_all(output)
  assert sorted(written) == sorted(template)
  for name, value in expected.items():
    assert written[name].dtype == value.dtype and written[name].tobytes() == value.tobytes(), name
  assert written["global_step"].dtype == np.int32 and written["global_step"] == 0
  assert summary["tensors"] == 2 * count + 1 and summary["rounded_tensors"] == count
  assert open(output + ".meta", "rb").read() == open(template_prefix + ".meta", "rb").read()
  assert sorted(n for n in os.listdir(str(tmp_path)) if n.startswith("out")) == [
      "out-0.data-00000-of-00001", "out-0.index", "out-0.meta"]

  # 10 sources for 11 models: refused before anything is written
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="10 source checkpoint"):
    overwrite_lib.overwrite(template_prefix, sources[:10], str(tmp_path / "short-0"))
  assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(("short", ".tmp"))]


def test_float32_to_float16_rounds_once_to_nearest_even(tmp_path):
  # values next to float16 rounding boundaries, beyond its range, and subnormal
  half_ulp = np.float32(2.0**-11)
  values = np.array([1 + half_ulp, 1 + 3 * half_ulp, 1 + half_ulp * 1.0001, -2.0**-20,
                     70000.0, 1e-8, 0.1], np.float32)
  write_variables(str(tmp_path / "src"), {"tower/w": values})
  write_variables(str(tmp_path / "tmpl"), {"tower/w": np.zeros(7, np.float16)}, meta=True)
  overwrite_lib.overwrite(str(tmp_path / "tmpl"), [str(tmp_path / "src")],
                          str(tmp_path / "out-0"))
  out = read_all(str(tmp_path / "out-0"))["tower/w"]
  assert out.dtype == np.float16
  with np.errstate(over="ignore"):
    assert out.tobytes() == values.astype(np.float16).tobytes()
  graph = tf.Graph()
  with graph.as_default(), tf1.Session() as sess:
    cast = sess.run(tf.cast(tf.constant(values), tf.float16))
  assert out.tobytes() == cast.tobytes()
  assert out[0] == 1.0 and out[1] == np.float16(1 + 4 * half_ulp) and np.isinf(out[4])


# ---------------------------------------------------------------------------------------
# The original's 5-step path and the one-command path.


def check_ensemble_checkpoint(prefix, float16=True):
  reader = tf.train.load_checkpoint(prefix)
  dtypes = reader.get_variable_to_dtype_map()
  assert len(dtypes) == 32 * 3 + 1, (prefix, len(dtypes))
  assert dtypes["global_step"] == tf.int32
  for index in range(3):
    scope = "tower/" if index == 0 else "tower/model%d/" % index
    names = [n for n in dtypes if ensemble_lib.model_of(n)[0] == index and n != "global_step"]
    assert len(names) == 32, (prefix, index)
    half = sorted(n for n in names if dtypes[n] == tf.float16)
    if float16:
      assert half == sorted(scope + k for k in FP16_KERNELS), (prefix, half)
    else:
      assert not half
    assert all(dtypes[n] == tf.float32 for n in names if n not in half)
  return reader


@pytest.mark.slow
def test_original_steps_1_to_5(ens):
  files = list_dir(ens["ens"])
  for name in ("model.ckpt-10", "inference_model_10", NAME + "-0", TAGGED,
               "inference_model"):
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
      assert name + suffix in files, (name + suffix, files)
  template = check_ensemble_checkpoint(os.path.join(ens["ens"], "inference_model_10"))
  assert template.get_tensor("global_step") == 10
  for name in (NAME + "-0", TAGGED, "inference_model"):
    check_ensemble_checkpoint(os.path.join(ens["ens"], name))
  output = os.path.join(ens["ens"], NAME + "-0")
  assert tf.train.load_checkpoint(output).get_tensor("global_step") == 0
  # the output's meta is the template's (clean inference graph); the state file untouched
  assert open(output + ".meta", "rb").read() == open(
      os.path.join(ens["ens"], "inference_model_10.meta"), "rb").read()
  assert ens["state_before"] == open(os.path.join(ens["ens"], "checkpoint")).read()
  # values: model i <- source i, float16 kernels rounded once
  written = read_all(output)
  sources = [tf.train.load_checkpoint(source) for source in ens["sources"]]
  for name, target in written.items():
    if name != "global_step":
      index, source_name = ensemble_lib.model_of(name)
      value = sources[index].get_tensor(source_name)
      assert target.tobytes() == value.astype(target.dtype).tobytes(), name
  log = ens["C"]["step3"].output
  assert "model 0 (tower/) <- %s: 32 variables" % ens["sources"][0] in log
  # models 1, 2 come from training checkpoints: 22 Adam slot pairs + 2 powers not used
  assert "model 2 (tower/model2/) <- %s: 32 variables, 53040 parameters (46 other " % (
      ens["sources"][2]) in log
  # step 4's GAP is reported; the original's weights tag names the copy
  step4 = read_json(ens["json"]["step4"])
  assert step4["examples"] == 240 and 0 < step4["gap"] <= 1
  assert "Saved inference checkpoint %s/%s" % (ens["ens"], TAGGED) in ens["E"]["step4"].output


def mixture(members, weights):
  """sum_i w_i * member_i in float32, in member order, as the graph's add_n sums them (written
  independently of ensemble_weights.mix): float64 sums can break or make exact score ties."""
  total = np.float32(weights[0]) * members[0].astype(np.float32)
  for weight, member in zip(weights[1:], members[1:]):
    total = total + np.float32(weight) * member.astype(np.float32)
  return total


def brute_force_gap(predictions, labels, top_k=20):
  """GAP@k written out (docs/original.md, "Metrics"): pool every video's top-k (score, is_true)
  pairs, sort by score, average the precision at each true pair over ALL true labels. Exactly equal
  scores: within a video by class index, in the pool negatives first (docs/differences.md, "GAP
  ties")."""
  pool = []
  for scores, truth in zip(predictions, labels):
    for label in sorted(range(len(scores)), key=lambda c: (-scores[c], c))[:top_k]:
      pool.append((scores[label], bool(truth[label])))
  pool.sort(key=lambda pair: (-pair[0], pair[1]))
  hits, total = 0, 0.0
  for rank, (_, is_true) in enumerate(pool, 1):
    if is_true:
      hits += 1
      total += hits / float(rank)
  return total / labels.sum()


# float16 stores 4 kernels per model with a relative rounding <= 2^-11 (4.9e-4); through
# the few layers to a probability in (0, 1) we allow 10x that per class of each video.
FLOAT16_TOLERANCE = 5e-3


@pytest.mark.slow
def test_float16_predictions_are_close_to_float32(ens):
  check_ensemble_checkpoint(os.path.join(ens["built32"], "inference_model"), float16=False)
  np.testing.assert_array_equal(ens["labels16"], ens["labels32"])  # the same videos
  p16, p32 = mixture(ens["members16"], WTS), mixture(ens["members32"], WTS)
  assert p16.shape == p32.shape == (240, TINY_NUM_CLASSES)
  per_video = np.abs(p16 - p32).max(1)
  assert per_video.max() <= FLOAT16_TOLERANCE, per_video.max()
  assert per_video.max() > 0  # the kernels really were rounded
  overlap = [len(set(np.argsort(-a)[:20]) & set(np.argsort(-b)[:20])) / 20.0
             for a, b in zip(p16, p32)]
  assert np.mean(overlap) >= 0.95, np.mean(overlap)


@pytest.mark.slow
def test_one_command_path_equals_the_original_path(ens):
  built = check_ensemble_checkpoint(os.path.join(ens["built"], "inference_model"))
  for other in (NAME + "-0", "inference_model"):
    original = tf.train.load_checkpoint(os.path.join(ens["ens"], other))
    assert original.get_variable_to_dtype_map() == built.get_variable_to_dtype_map()
    for name in built.get_variable_to_shape_map():
      a, b = original.get_tensor(name), built.get_tensor(name)
      assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
  model_flags = read_json(os.path.join(ens["built"], "model_flags.json"))
  assert model_flags["ensemble_num"] == 3 and model_flags["float16_flag"] is True
  assert model_flags["netvlad_cluster_size"] == [4, 2, 4]
  assert model_flags["ensemble_wts"] == list(WTS)
  assert model_flags["iterations"] == 20 and "netvlad_relu" not in model_flags
  assert sorted(list_dir(ens["built"])) == sorted([
      "inference_model.data-00000-of-00001", "inference_model.index", "inference_model.meta",
      "model_flags.json"] + [n for n in list_dir(ens["built"]) if n.startswith("events")])
  original_csv = open(ens["csv"]["original"]).read()
  assert original_csv.count("\n") == 21
  assert open(ens["csv"]["built"]).read() == original_csv
  assert open(ens["csv"]["tgz"]).read() == original_csv


@pytest.mark.slow
def test_submission_tgz_layout(ens):
  with tarfile.open(ens["tgz"]) as archive:
    assert sorted(archive.getnames()) == [
        "inference_model.data-00000-of-00001", "inference_model.index",
        "inference_model.meta", "model_flags.json"]


def error_line(result):
  lines = [line for line in result.output.splitlines() if line.startswith("ERROR: ")]
  assert result.returncode != 0 and lines, result.output[-2000:]
  return lines[-1]


@pytest.mark.slow
def test_bad_inputs_are_refused_and_write_nothing(ens, tmp_path):
  # command lines: exit status 1, one ERROR line naming the flag, no output
  message = error_line(ens["C"]["bad_count"])
  assert "--checkpoints gives 2 source checkpoint(s)" in message
  assert "holds 3 models (tower/, tower/model1/, tower/model2/)" in message
  message = error_line(ens["C"]["bad_wts"])
  assert "--ensemble_wts was given 2 time(s) ([0.5, 0.5])" in message and "3 models" in message
  new = set(list_dir(ens["ens"])) - set(ens["ens_files_before"])
  assert new and all(n.startswith(("inference_model", "events")) for n in new), sorted(new)
  assert not os.path.exists(os.path.join(ens["root"], "bad_wts"))

  # the library: a source without a variable, sources in the wrong order, wrong K
  template = os.path.join(ens["ens"], "inference_model_10")
  broken = str(tmp_path / "c2h8-inference_model_0")
  values = read_all(ens["sources"][1])
  del values["tower/gates/weights"]
  checkpoint_utils.write_checkpoint_tensors(broken, values)
  output = str(tmp_path / "out-0")
  s0, s1, s2 = ens["sources"]
  with pytest.raises(checkpoint_utils.CheckpointToolError) as error:
    overwrite_lib.overwrite(template, [s0, broken, s2], output)
  assert ("source 1 (--checkpoints entry 2, model 1 in tower/model1/): %s has no variable "
          "'tower/gates/weights' (needed for template %s variable "
          "'tower/model1/gates/weights')" % (broken, template)) in str(error.value)
  with pytest.raises(checkpoint_utils.CheckpointToolError) as error:
    overwrite_lib.overwrite(template, [s1, s0, s2], output)
  assert re.search(r"variable 'tower/[\w/]+' has shape \[[\d, ]+\] in source 0 \(--checkpoints "
                   r"entry 1, model 0 in tower/\): %s but template .* variable "
                   r"'tower/[\w/]+' needs \[[\d, ]+\]" % re.escape(s1), str(error.value))
  with pytest.raises(checkpoint_utils.CheckpointToolError) as error:
    tiny_ensemble_config(ens["sources"], netvlad_cluster_size=[4, 4, 4])
  assert ("model 1: --netvlad_cluster_size=4 (occurrence 2) but checkpoint %s has "
          "tower/video_VLAD/conv2/cluster_weights of shape [1024, 2]" % s1) in str(error.value)
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="model 0: --gating=False but"):
    tiny_ensemble_config(ens["sources"], gating=False)
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="--ensemble_num=2 but"):
    tiny_ensemble_config(ens["sources"], ensemble_num=2)
  assert sorted(os.listdir(str(tmp_path))) == [
      "c2h8-inference_model_0.data-00000-of-00001", "c2h8-inference_model_0.index"]


@pytest.mark.slow
def test_weight_search_beats_equal_weights_and_matches_eval(ens):
  results = read_json(ens["json"]["weights"])
  output = ens["D"]["weights"].output
  best, equal = results["best_weights"], results["equal_weights"]
  assert results["videos"] == 240 and not results["truncated"]
  members, labels = ens["members16"], ens["labels16"]

  def gap_of(weights):
    return brute_force_gap(mixture(members, weights), labels)

  # every reported GAP is the GAP of its weights' mixture, recomputed independently
  for entry in (best, equal, results["configured_weights"]):
    assert abs(gap_of(entry["weights"]) - entry["gap"]) < 1e-6, entry
  for index, member in enumerate(results["members"]):
    one_hot = [float(i == index) for i in range(3)]
    assert abs(gap_of(one_hot) - member["gap"]) < 1e-6, member
  assert abs(sum(best["weights"]) - 1) < 1e-9
  units = [round(w * 100) for w in best["weights"]]
  if all(abs(w * 100 - u) < 1e-9 for w, u in zip(best["weights"], units)):
    # a grid point: no move of 0.01 between two members improves it (a local optimum)
    for i in range(3):
      for j in range(3):
        if i != j and units[j] >= 1:
          moved = list(units)
          moved[i] += 1
          moved[j] -= 1
          assert gap_of([u / 100.0 for u in moved]) <= best["gap"] + 1e-6, moved
  else:  # equal thirds (off the grid) only when they beat every searched grid point
    assert best["weights"] == equal["weights"]
    assert all(start["gap"] <= best["gap"] for start in results["search"]["starts"])
  # eval.py with the printed flags reports the same GAP
  assert abs(read_json(ens["json"]["eval_best"])["gap"] - best["gap"]) < 1e-4
  # the numpy mixture of the checkpoint's own weights = eval.py's GAP of that checkpoint
  # eval.py's GAP of the original's path's checkpoint (byte-identical to the one-command one, see
  # test_one_command_path_equals_the_original_path) = the independent GAP of the mixture
  step4_gap = read_json(ens["json"]["step4"])["gap"]
  assert abs(gap_of(WTS) - step4_gap) < 1e-5, (gap_of(WTS), step4_gap)
  assert len(results["members"]) == 3
  assert "python -m youtube-8m.eval --train_dir=%s --checkpoint_file=inference_model" % (
      ens["built"]) in output
  assert " ".join(best["flags"]) in output
  assert re.search(r"best weights [\d. ]+ +\d\.\d{6} \(\+", output)


def expected_tensor_bytes(float16):
  """Bytes of the 3 tiny models' tensors from the formulas of docs/original.md, "Sizes" (V classes,
  M=5)."""
  v = TINY_NUM_CLASSES
  total = 4  # global_step
  for k, h in SINGLES:
    ka = int(k / 2)
    dv = 1024 * k + 128 * ka
    p16 = dv * h + 22 * h * v + v * v
    p = 2052 * k + 260 * ka + dv * h + 6 * h * h + 14 * h + 22 * h * v + v * v + 9 * v
    total += (2 * p16 + 4 * (p - p16)) if float16 else 4 * p
  return total


@pytest.mark.slow
def test_model_size_report(ens):
  report = model_size.measure(ens["built"])
  data = os.path.join(ens["built"], "inference_model.data-00000-of-00001")
  assert report["tensors"] == 97
  assert report["tensors_by_dtype"] == {"float16": 12, "float32": 84, "int32": 1}
  assert report["tensor_bytes"] == report["data_bytes"] == os.path.getsize(data) == (
      expected_tensor_bytes(True))
  assert report["float32_tensor_bytes"] == expected_tensor_bytes(False) == os.path.getsize(
      os.path.join(ens["built32"], "inference_model.data-00000-of-00001"))
  assert report["ratio"] == expected_tensor_bytes(True) / expected_tensor_bytes(False)
  assert report["total_bytes"] == sum(
      os.path.getsize(os.path.join(ens["built"], name)) for name in (
          "inference_model.data-00000-of-00001", "inference_model.index",
          "inference_model.meta", "model_flags.json"))
  assert report["fits"] and "FITS: total" in model_size.format_report(report)
  # the tgz: same numbers, over the tiny limit -> DOES NOT FIT and exit 1 (--fail_if_over)
  result = ens["E"]["size_tgz"]
  assert result.returncode == 1 and "DOES NOT FIT" in result.output
  from_tgz = read_json(ens["json"]["size"])
  for key in ("files", "total_bytes", "tensor_bytes", "float32_tensor_bytes", "ratio"):
    assert from_tgz[key] == report[key], key
  assert from_tgz["fits"] is False and from_tgz["headroom_bytes"] < 0
