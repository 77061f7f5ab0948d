"""End to end: train, eval, inference as real subprocesses on real TFRecords/checkpoints."""

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import (REPO_ROOT, TINY_FLAGS, TINY_NUM_CLASSES, cli_env, corrupt, run, run_cli,
                      script_python, spawn_cli, yt8m)

# Every test here starts tool processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

eval_util = yt8m("eval_util")
readers = yt8m("readers")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]


def train_args(data, train_dir, *extra):
  return ["--train_data_pattern=" + data["train_pattern"], "--train_dir=" + train_dir,
          "--batch_size=32", "--base_learning_rate=0.01", "--learning_rate_decay=0.8",
          "--num_epochs=100", "--export_model_steps=20"] + MODEL_FLAGS + list(extra)


def eval_args(data, train_dir, *extra):
  return ["--eval_data_pattern=" + data["validate_pattern"], "--train_dir=" + train_dir,
          "--batch_size=64", "--run_once=True"] + list(extra)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  train_dir = str(tmp_path_factory.mktemp("trained"))
  result = run_cli("train", *train_args(tiny_data, train_dir, "--max_steps=60"))
  return {"dir": train_dir, "log": result.stderr}


@pytest.fixture(scope="module")
def exported(trained, tiny_data):
  """trained["dir"]/inference_model.* from model.ckpt-60 (eval --force_output_model_name)."""
  run_cli("eval", *eval_args(tiny_data, trained["dir"], "--checkpoint_file=model.ckpt-60",
                             "--force_output_model_name"))
  return trained


def run_eval(data, train_dir, tmp_path, *extra):
  results = str(tmp_path / ("results-%d.json" % time.time_ns()))
  result = run_cli("eval", *eval_args(data, train_dir, "--results_json=" + results, *extra))
  with open(results) as handle:
    return json.load(handle), result.stderr


def label_prior_gap(data):
  """GAP of predicting each class's training frequency for every held-out video."""
  def labels_of(files):
    rows = []
    for path in files:
      for record in tf.compat.v1.io.tf_record_iterator(path):
        example = tf.train.SequenceExample.FromString(record)
        row = np.zeros(TINY_NUM_CLASSES)
        row[list(example.context.feature["labels"].int64_list.value)] = 1
        rows.append(row)
    return np.array(rows)

  train = labels_of(readers.training_files(data["train_pattern"]))
  holdout = labels_of(readers.eval_files(data["validate_pattern"]))
  prior = np.tile(train.mean(0), (len(holdout), 1))
  return eval_util.calculate_gap(prior, holdout)


def test_training_exports_on_the_original_cadence(trained):
  steps = sorted(int(m) for m in re.findall(r"model\.ckpt-(\d+)\.index",
                                            " ".join(os.listdir(trained["dir"]))))
  assert steps == [10, 30, 50, 60]
  assert re.search(r"training step 10 \| Loss: [\d.]+ Examples/sec: [\d.]+ \| Hit@1: [\d.]+ "
                   r"PERR: [\d.]+ GAP: [\d.]+", trained["log"])
  assert "training step 11 | Loss:" in trained["log"]
  # the 4 train files + the 62 validate files minus the 60 held-out ones (docs/original.md,
  # "Training data")
  assert re.search(r"Training .* on 6 files, batch 32 x 1 tower", trained["log"])
  model_flags = json.load(open(os.path.join(trained["dir"], "model_flags.json")))
  assert model_flags["model"] == "NetVLADModelLF"
  assert model_flags["feature_names"] == "rgb,audio"
  assert model_flags["feature_sizes"] == "1024,128"
  assert model_flags["frame_features"] is True
  assert model_flags["netvlad_cluster_size"] == [4]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(trained["dir"]))
  variables = dict(tf.train.list_variables(os.path.join(trained["dir"], "model.ckpt-60")))
  assert len(variables) == 22 * 3 + 10 + 3  # weights + 2 Adam slots, BN stats, powers, step
  reader = tf.train.load_checkpoint(os.path.join(trained["dir"], "model.ckpt-60"))
  assert reader.get_tensor("global_step") == 60


def test_eval_beats_label_prior_and_is_deterministic(trained, tiny_data, tmp_path):
  first, log = run_eval(tiny_data, trained["dir"], tmp_path,
                        "--checkpoint=model.ckpt-60.index")
  # Each batch of 64 read and evaluated in 4 parts of 16 videos: the same metrics and log.
  second, second_log = run_eval(tiny_data, trained["dir"], tmp_path,
                                "--checkpoint_file=model.ckpt-60", "--videos_per_run=16")
  prior = label_prior_gap(tiny_data)
  assert first["examples"] == 240  # the 60 held-out files x 4 videos, not the 2 extra files
  assert first["examples"] == second["examples"]
  for key in ("gap", "hit_at_one", "perr", "map", "loss"):  # matmuls of 16 rows, not 64
    assert second[key] == pytest.approx(first[key], rel=1e-6), key
  batch_line = r"examples_processed: (\d+) \| global_step 60 \| Batch Hit@1: ([\d.]+) \| "
  assert re.findall(batch_line, log) == re.findall(batch_line, second_log)
  assert len(re.findall(batch_line, log)) == 4  # 64, 128, 192, 240
  assert "in 4 parts of 16 videos" in second_log
  assert first["gap"] > prior + 0.1, (first["gap"], prior)
  assert re.search(r"epoch/eval number 60 \| Avg_Hit@1: [\d.]+ \| Avg_PERR: [\d.]+ \| "
                   r"MAP: [\d.]+ \| GAP: \d\.\d{5} \| Avg_Loss: [\d.]+", log)
  assert os.path.exists(os.path.join(trained["dir"], "inference_model_60.index"))


def test_eval_selects_the_requested_checkpoint(trained, tiny_data, tmp_path):
  at10, log = run_eval(tiny_data, trained["dir"], tmp_path, "--checkpoint=model.ckpt-10.index")
  assert at10["global_step"] == "10" and "global_step 10" in log
  newest, _ = run_eval(tiny_data, trained["dir"], tmp_path)
  assert newest["global_step"] == "60"
  assert at10["gap"] != newest["gap"]
  assert os.path.exists(os.path.join(trained["dir"], "inference_model_10.meta"))
  every, _ = run_eval(tiny_data, trained["dir"], tmp_path, "--noeval_holdout_only")
  assert every["examples"] == 248
  bad = run_cli("eval", *eval_args(tiny_data, trained["dir"], "--checkpoint=model.ckpt-10",
                                   "--checkpoint_file=model.ckpt-30"), check=False)
  assert bad.returncode != 0 and "name different checkpoints" in bad.stderr
  missing = run_cli("eval", *eval_args(tiny_data, trained["dir"],
                                       "--checkpoint=model.ckpt-70.index"), check=False)
  assert missing.returncode != 0 and "model.ckpt-70" in missing.stderr
  negative = run_cli("eval", *eval_args(tiny_data, trained["dir"], "--videos_per_run=-1"),
                     check=False)
  assert negative.returncode == 1 and "ERROR: --videos_per_run must be >= 0" in negative.stderr


def eval_summaries(train_dir):
  """{(tag, step): value} of the eval.py summaries in train_dir."""
  values = {}
  for name in os.listdir(train_dir):
    if name.startswith("events.out.tfevents") and ".eval." in name:
      for event in tf.compat.v1.train.summary_iterator(os.path.join(train_dir, name)):
        for value in event.summary.value:
          values[(value.tag, event.step)] = value.simple_value
  return values


def test_eval_of_a_checkpoint_list_equals_single_runs(trained, tiny_data, tmp_path):
  singles_dir, list_dir = str(tmp_path / "singles"), str(tmp_path / "list")
  for directory in (singles_dir, list_dir):
    shutil.copytree(trained["dir"], directory,
                    ignore=shutil.ignore_patterns("inference_model*", "events.*"))
  singles = [run_eval(tiny_data, singles_dir, tmp_path, "--checkpoint=model.ckpt-%d.index" % s)
             for s in (10, 60)]
  listed, log = run_eval(tiny_data, list_dir, tmp_path,
                         "--checkpoint=model.ckpt-10.index,model.ckpt-60.index")
  assert [r["global_step"] for r in listed] == ["10", "60"]
  for (single, single_log), result in zip(singles, listed):
    assert result["checkpoint"].startswith(list_dir)
    result["checkpoint"] = result["checkpoint"].replace(list_dir, singles_dir)
    assert result == single
    step = single["global_step"]
    for pattern in (r"Restored .*model\.ckpt-%s \(global step %s\)" % (step, step),
                    r"epoch/eval number %s \| .* \| GAP: %.5f \|" % (step, single["gap"]),
                    r"Saved inference checkpoint .*inference_model_%s " % step):
      assert len(re.findall(pattern, log)) == 1 and re.search(pattern, single_log), pattern
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
      assert os.path.exists(os.path.join(list_dir, "inference_model_%s%s" % (step, suffix)))
    single_model = tf.train.load_checkpoint(os.path.join(singles_dir, "inference_model_" + step))
    list_model = tf.train.load_checkpoint(os.path.join(list_dir, "inference_model_" + step))
    for name in single_model.get_variable_to_shape_map():
      assert np.array_equal(single_model.get_tensor(name), list_model.get_tensor(name)), name
  assert eval_summaries(list_dir) == eval_summaries(singles_dir)
  assert eval_summaries(list_dir)[("Epoch/Eval_GAP", 10)] == pytest.approx(listed[0]["gap"])
  # --checkpoint_file takes the same list; one missing checkpoint stops the run before any
  # evaluation, naming it
  results = str(tmp_path / "missing.json")
  missing = run_cli("eval", *eval_args(
      tiny_data, list_dir, "--checkpoint_file=model.ckpt-10,model.ckpt-70",
      "--results_json=" + results), check=False)
  assert missing.returncode != 0
  assert re.fullmatch(r"ERROR: --checkpoint_file: no checkpoint \S*model\.ckpt-70 .*",
                      missing.stderr.splitlines()[-1]), missing.stderr[-500:]
  assert "Restored" not in missing.stderr and not os.path.exists(results)
  for flags, message in ((["--checkpoint=model.ckpt-10,"], "--checkpoint='model.ckpt-10,'"),
                         (["--checkpoint=model.ckpt-10,model.ckpt-60",
                           "--force_output_model_name"], "--force_output_model_name")):
    bad = run_cli("eval", *eval_args(tiny_data, list_dir, *flags), check=False)
    assert bad.returncode != 0 and message in bad.stderr.splitlines()[-1], bad.stderr[-500:]


def test_eval_checks_the_original_flags_against_model_flags(trained, tiny_data, tmp_path):
  original_style, log = run_eval(
      tiny_data, trained["dir"], tmp_path, "--model=NetVLADModelLF", *MODEL_FLAGS,
      "--base_learning_rate=0.0001", "--learning_rate_decay=0.8",
      "--checkpoint=model.ckpt-60.index")
  assert "--base_learning_rate=0.0001 has no effect on evaluation" in log
  for flag, fragment in (("--netvlad_cluster_size=8", "--netvlad_cluster_size"),
                         ("--feature_sizes=1024,127", "--feature_sizes"),
                         ("--model=LogisticModel", "--model"),
                         ("--noframe_features", "--frame_features")):
    bad = run_cli("eval", *eval_args(tiny_data, trained["dir"], flag), check=False)
    assert bad.returncode != 0, flag
    assert fragment in bad.stderr.splitlines()[-1], bad.stderr[-500:]
  unknown = run_cli("eval", *eval_args(tiny_data, trained["dir"], "--no_such_flag=1"),
                    check=False)
  assert unknown.returncode != 0 and "no_such_flag" in unknown.stderr


def read_csv(path):
  with open(path) as handle:
    lines = handle.read().split("\n")
  assert lines[-1] == ""
  return lines[0], lines[1:-1]


def parse_test_videos(pattern):
  """{video id: (raw [300, 1152] float32, num_frames)} read and dequantized in numpy
  (docs/original.md, "Input data": q * 4/255 + 4/512 - 2, zero padding after dequantization)."""
  videos = {}
  for path in sorted(tf.io.gfile.glob(pattern)):
    for record in tf.compat.v1.io.tf_record_iterator(path):
      example = tf.train.SequenceExample.FromString(record)
      video_id = example.context.feature["id"].bytes_list.value[0].decode()
      parts = []
      for name, size in (("rgb", 1024), ("audio", 128)):
        frames = example.feature_lists.feature_list[name].feature
        q = np.array([np.frombuffer(f.bytes_list.value[0], np.uint8) for f in frames],
                     np.float64).reshape(-1, size)
        parts.append(q * (4.0 / 255.0) + (4.0 / 512.0 - 2.0))
      values = np.concatenate(parts, 1)[:300]
      raw = np.zeros((300, 1152), np.float32)
      raw[:len(values)] = values
      videos[video_id] = (raw, len(values))
  return videos


def check_csv_against_graph(rows, prefix, data, count=6):
  """The CSV's top-20 labels and scores of a few videos = the inference graph's top 20 for
  those videos, fed with features decoded independently of readers.py."""
  videos = parse_test_videos(data["test_pattern"])
  rows = rows[:count]
  ids = [row.split(",")[0] for row in rows]
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
    saver = tf.compat.v1.train.import_meta_graph(prefix + ".meta", clear_devices=True)
    (saver or tf.compat.v1.train.Saver()).restore(sess, prefix)
    predictions = sess.run(graph.get_collection("predictions")[0], {
        graph.get_collection("input_batch_raw")[0]: np.stack([videos[i][0] for i in ids]),
        graph.get_collection("num_frames")[0]: np.array([videos[i][1] for i in ids],
                                                        np.int32)})
  for row, scores in zip(rows, predictions):
    tokens = row.split(",")[1].split(" ")
    labels, csv_scores = [int(t) for t in tokens[::2]], [float(t) for t in tokens[1::2]]
    top = np.argsort(-scores, kind="stable")[:20]
    assert labels == [int(label) for label in top], row
    # %g keeps 6 significant digits (2e-6 relative at most); this graph runs a batch of
    # `count` videos where inference ran 7, so oneDNN's matmuls sum in another order (1.06e-5
    # relative seen once on an AVX2 host, 2026-12-07).
    np.testing.assert_allclose(csv_scores, scores[top], rtol=5e-5, err_msg=row)


def test_inference_csv_tgz_and_inference_from_tgz(exported, tiny_data, tmp_path):
  trained = exported
  for suffix in (".index", ".meta", ".data-00000-of-00001"):
    assert os.path.exists(os.path.join(trained["dir"], "inference_model" + suffix))
  csv_path, tgz_path = str(tmp_path / "sub.csv"), str(tmp_path / "sub.tgz")
  result = run_cli("inference", "--train_dir=" + trained["dir"],
                   "--input_data_pattern=" + tiny_data["test_pattern"],
                   "--output_file=" + csv_path, "--output_model_tgz=" + tgz_path,
                   "--batch_size=7")
  assert re.search(r"num examples processed: 20 elapsed seconds: [\d.]+", result.stderr)
  header, rows = read_csv(csv_path)
  assert header == "VideoId,LabelConfidencePairs"
  assert len(rows) == 20
  ids = []
  for row in rows:
    video_id, pairs = row.split(",")
    ids.append(video_id)
    tokens = pairs.split(" ")
    assert len(tokens) == 40
    labels, scores = [int(t) for t in tokens[::2]], [float(t) for t in tokens[1::2]]
    assert len(set(labels)) == 20 and all(0 <= l < TINY_NUM_CLASSES for l in labels)
    assert scores == sorted(scores, reverse=True)
    assert all(t == "%g" % float(t) for t in tokens[1::2])
  assert len(set(ids)) == 20 and all(len(i) == 4 for i in ids)
  with tarfile.open(tgz_path) as archive:
    assert sorted(archive.getnames()) == sorted([
        "inference_model.data-00000-of-00001", "inference_model.index",
        "inference_model.meta", "model_flags.json"])
  from_tgz = str(tmp_path / "from_tgz.csv")
  run_cli("inference", "--input_model_tgz=" + tgz_path,
          "--untar_model_dir=" + str(tmp_path / "untar"),
          "--input_data_pattern=" + tiny_data["test_pattern"], "--output_file=" + from_tgz,
          "--batch_size=7")
  assert open(from_tgz).read() == open(csv_path).read()
  check_csv_against_graph(rows, os.path.join(trained["dir"], "inference_model"), tiny_data)
  both = run_cli("inference", "--input_model_tgz=" + tgz_path, "--train_dir=" + trained["dir"],
                 "--input_data_pattern=" + tiny_data["test_pattern"],
                 "--output_file=" + str(tmp_path / "x.csv"), check=False)
  assert both.returncode != 0 and "--train_dir must be empty" in both.stderr


def test_inference_on_a_corrupted_file_writes_no_csv(exported, tiny_data, tmp_path):
  trained = exported
  source = sorted(readers.tf.io.gfile.glob(tiny_data["test_pattern"]))[0]
  data = bytearray(open(source, "rb").read())
  data[len(data) // 2] ^= 0xFF
  bad_dir = tmp_path / "bad"
  bad_dir.mkdir()
  bad_file = str(bad_dir / "test00.tfrecord")
  open(bad_file, "wb").write(bytes(data))
  output = str(tmp_path / "out.csv")
  result = run_cli("inference", "--train_dir=" + trained["dir"],
                   "--input_data_pattern=" + str(bad_dir / "test*.tfrecord"),
                   "--output_file=" + output, "--batch_size=2", check=False)
  assert result.returncode != 0
  assert re.search(re.escape(bad_file) + r": record \d+: corrupted TFRecord", result.stderr)
  assert os.listdir(str(tmp_path)) == ["bad"] or not os.path.exists(output)
  assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("out.csv")]
  missing = run_cli("inference", "--train_dir=" + trained["dir"],
                    "--inference_model_file=inference_model_12345",
                    "--input_data_pattern=" + tiny_data["test_pattern"],
                    "--output_file=" + output, check=False)
  assert missing.returncode != 0 and "inference_model_12345" in missing.stderr


def wait_for(path, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert time.time() < deadline, "timed out waiting for %s" % path
    time.sleep(0.2)


def checkpoint_steps(train_dir):
  return sorted(int(m) for m in re.findall(r"model\.ckpt-(\d+)\.index",
                                           " ".join(os.listdir(train_dir))))


def test_resume_after_kill_and_architecture_check(tiny_data, tmp_path):
  train_dir = str(tmp_path / "run")
  args = train_args(tiny_data, train_dir)
  process = spawn_cli("train", "--max_steps=100000", *args, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
  try:
    wait_for(os.path.join(train_dir, "model.ckpt-30.index"))
  finally:
    process.kill()  # SIGKILL: no chance to save anything more
    process.wait()
  newest = max(int(m) for m in re.findall(r"model\.ckpt-(\d+)\.index",
                                          " ".join(os.listdir(train_dir))))
  before = tf.train.load_checkpoint(os.path.join(train_dir, "model.ckpt-%d" % newest))
  # Two steps with learning rate 0 and a negligible clip norm: a resumed run keeps every
  # weight bit for bit and carries the Adam state on (m *= beta1, v *= beta2, the powers
  # times beta per step; TF's defaults 0.9 / 0.999); a re-initialised one would not.
  steps = 2
  resumed = run_cli("train", "--max_steps=%d" % (newest + steps), *args,
                    "--base_learning_rate=0", "--clip_gradient_norm=1e-12")
  assert "Resumed from %s/model.ckpt-%d (step %d)" % (train_dir, newest, newest) in (
      resumed.stderr)
  assert "training step %d |" % (newest + 1) in resumed.stderr
  after = tf.train.load_checkpoint(os.path.join(train_dir, "model.ckpt-%d" % (newest + steps)))
  assert after.get_tensor("global_step") == newest + steps
  names = sorted(before.get_variable_to_shape_map())
  assert names == sorted(after.get_variable_to_shape_map())
  adam = [n for n in names if n.endswith(("/Adam", "/Adam_1"))]
  assert len(adam) == 2 * 22
  for name in names:
    old, new = before.get_tensor(name), after.get_tensor(name)
    if name == "global_step" or "moving_" in name:
      continue  # the step counts on; BN moving statistics follow the batches
    if name.endswith("/Adam"):
      np.testing.assert_allclose(new, old * 0.9 ** steps, rtol=1e-5, atol=1e-12, err_msg=name)
    elif name.endswith("/Adam_1"):
      np.testing.assert_allclose(new, old * 0.999 ** steps, rtol=1e-5, atol=1e-20,
                                 err_msg=name)
    elif name in ("beta1_power", "beta2_power"):
      beta = 0.9 if name == "beta1_power" else 0.999
      assert old < beta ** newest * 1.0001  # not the initial value beta
      np.testing.assert_allclose(new, old * beta ** steps, rtol=1e-6, err_msg=name)
    else:
      assert new.tobytes() == old.tobytes(), name
  assert any(np.abs(before.get_tensor(n)).max() > 0 for n in adam)

  # SIGTERM: finishes the step, exports, exits 0. --save_model_secs=1 also exports on a
  # timer, at steps off the 10-step cadence.
  # the log goes to a file: a pipe nobody reads while waiting would fill up and block it
  log_path = str(tmp_path / "sigterm.log")
  log = open(log_path, "w")
  process = spawn_cli("train", "--max_steps=100000", *args, "--save_model_secs=1",
                      stdout=subprocess.DEVNULL, stderr=log)
  # the export cadence continues E=20 steps after the newest checkpoint (at a multiple of 10)
  resumed_at = newest + steps
  next_export = (resumed_at + 20 + 9) // 10 * 10

  def timer_exports():
    return [step for step in checkpoint_steps(train_dir) if step > resumed_at and step % 10]

  wait_for(os.path.join(train_dir, "model.ckpt-%d.index" % next_export))
  deadline = time.time() + 240
  while not timer_exports():
    assert time.time() < deadline and process.poll() is None, (
        "no timer export", checkpoint_steps(train_dir), open(log_path).read()[-2000:])
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  process.wait(timeout=120)
  log.close()
  stderr = open(log_path).read()
  assert process.returncode == 0, stderr[-2000:]
  stopped = int(re.search(r"stopped by SIGTERM \(step (\d+)\)", stderr).group(1))
  assert os.path.exists(os.path.join(train_dir, "model.ckpt-%d.index" % stopped))

  files_before = sorted(os.listdir(train_dir))
  changed = run_cli("train", "--max_steps=100000",
                    *[a for a in args if not a.startswith("--netvlad_hidden_size")],
                    "--netvlad_hidden_size=32", check=False)
  assert changed.returncode != 0
  assert "--netvlad_hidden_size: [16]" in changed.stderr
  assert sorted(os.listdir(train_dir)) == files_before

  restarted = run_cli("train", "--max_steps=10", "--start_new_model",
                      *[a for a in args if not a.startswith("--netvlad_hidden_size")],
                      "--netvlad_hidden_size=32")
  assert "starting a new model" in restarted.stderr
  assert sorted(n for n in os.listdir(train_dir) if n.endswith(".index")) == [
      "model.ckpt-10.index"]


def test_train_rejects_bad_flags(tiny_data, tmp_path):
  train_dir = str(tmp_path / "bad")
  cases = [
      (["--pruning_hparams=x"], "pruning_hparams"),
      (["--optimizer=FooOptimizer"], "--optimizer"),
      (["--ensemble_num=2"], "--netvlad_cluster_size was given 1 time"),
      (["--model=LogisticModel"], "video-level model"),
      (["--feature_sizes=1024"], "--feature_names (2 names: rgb,audio) and --feature_sizes"),
      (["--train_data_pattern=/nonexistent/train*.tfrecord"], "no file matches"),
  ]
  for extra, message in cases:
    result = run_cli("train", *train_args(tiny_data, train_dir, "--max_steps=1", *extra),
                     check=False)
    assert result.returncode != 0, extra
    assert message in result.stderr, (extra, result.stderr[-800:])
  assert not os.path.exists(os.path.join(train_dir, "model.ckpt-1.index"))


def test_video_level_model_is_really_selected(tiny_data, tmp_path):
  train_dir = str(tmp_path / "video")
  video = tiny_data["video_dir"]
  common = ["--feature_names=mean_rgb,mean_audio", "--feature_sizes=1024,128",
            "--num_classes=%d" % TINY_NUM_CLASSES]
  run_cli("train", "--train_data_pattern=%s/train*.tfrecord,%s/validate*.tfrecord" % (video,
                                                                                      video),
          "--train_dir=" + train_dir, "--model=MoeModel", "--batch_size=32",
          "--base_learning_rate=0.01", "--max_steps=20", "--export_model_steps=10", *common)
  names = dict(tf.train.list_variables(os.path.join(train_dir, "model.ckpt-20")))
  assert "tower/gates/weights" in names and "tower/experts/weights" in names
  assert not any("VLAD" in name for name in names)
  results = str(tmp_path / "r.json")
  run_cli("eval", "--train_dir=" + train_dir, "--eval_data_pattern=%s/validate*.tfrecord"
          % video, "--run_once", "--results_json=" + results)
  assert json.load(open(results))["examples"] == 240


def test_eval_polling_loop_evaluates_each_new_checkpoint_once(trained, tiny_data, tmp_path):
  poll_dir = str(tmp_path / "poll")
  os.makedirs(poll_dir)
  for name in os.listdir(trained["dir"]):
    if name.startswith("model.ckpt-10.") or name == "model_flags.json":
      shutil.copy(os.path.join(trained["dir"], name), poll_dir)
  log_path = str(tmp_path / "eval.log")
  with open(log_path, "w") as log:
    process = spawn_cli("eval", "--eval_interval_secs=1", "--run_once=False",
                        *eval_args(tiny_data, poll_dir)[:-1], stdout=log, stderr=log)
  try:
    deadline = time.time() + 240

    def log_text():
      return open(log_path).read()

    def evaluated():
      return re.findall(r"epoch/eval number (\d+) ", log_text())

    def wait_until(condition):
      while not condition():
        assert time.time() < deadline and process.poll() is None, log_text()[-2000:]
        time.sleep(0.5)

    def copy_checkpoint(step, as_step, corrupt_data=False):
      # the .index last, as a Saver writes it: eval may poll between two copies
      for name in sorted(os.listdir(trained["dir"]), key=lambda n: n.endswith(".index")):
        if name.startswith("model.ckpt-%d." % step):
          copy = os.path.join(poll_dir, name.replace("-%d." % step, "-%d." % as_step))
          shutil.copy(os.path.join(trained["dir"], name), copy)
          if corrupt_data and ".data-" in name:
            corrupt(copy)

    wait_until(lambda: len(evaluated()) >= 1)
    # an unreadable newer checkpoint is named and skipped: the loop waits for the next one
    copy_checkpoint(10, 20, corrupt_data=True)
    broken = "cannot read checkpoint %s/model.ckpt-20 (truncated or corrupt?)" % poll_dir
    wait_until(lambda: broken in log_text())
    copy_checkpoint(30, 30)
    wait_until(lambda: len(evaluated()) >= 2)
    time.sleep(3)  # several more polls: nothing new, nothing re-evaluated
  finally:
    process.terminate()
    process.wait()
  assert evaluated() == ["10", "30"]
  assert log_text().count("Restored ") == 2
  assert log_text().count(broken) == 1  # named once, not retried at every poll


def run_script(name, *args):
  return run(["bash", os.path.join(REPO_ROOT, "scripts", name)] + list(args),
             env=cli_env({"EXTRA_FLAGS": "--num_classes=%d --iterations=20" % TINY_NUM_CLASSES,
                          "PYTHON": script_python()}))


def test_original_checkpoint_workflow_scripts(trained, tiny_data, tmp_path):
  """The original's loop / range / select / evaluate-average commands, then resume training."""
  train_dir = str(tmp_path / "c4h16_32")
  shutil.copytree(trained["dir"], train_dir)
  state_file = os.path.join(train_dir, "checkpoint")
  state_before = open(state_file).read()

  table = run_script("eval_checkpoints.sh", train_dir, tiny_data["validate_pattern"], "4", "16",
                     "64", "10", "30", "60")
  rows = open(os.path.join(train_dir, "eval_checkpoints.csv")).read().split("\n")
  assert rows[0] == "step,gap,hit_at_one,perr,videos"
  assert [r.split(",")[0] for r in rows[1:4]] == ["10", "30", "60"]
  gaps = {r.split(",")[0]: float(r.split(",")[1]) for r in rows[1:4]}
  assert len(set(gaps.values())) == 3  # each step really is its own checkpoint
  # one eval.py process for the three checkpoints
  assert table.stderr.count("-m youtube-8m.eval ") == 1
  assert ("--checkpoint=model.ckpt-10.index,model.ckpt-30.index,model.ckpt-60.index"
          in table.stderr)
  assert table.stdout.split("\n")[1].split()[0] == "10"

  run_script("avg_range.sh", train_dir, "4", "16", "30", "60")
  run_script("avg_select.sh", train_dir, "4", "16", "10_etc_3", "10,50,60")
  for name in ("avg_c4h16_30_60.ckpt-0", "avg_c4h16_10_etc_3.ckpt-0"):
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
      assert os.path.exists(os.path.join(train_dir, name + suffix)), name + suffix
  assert open(state_file).read() == state_before

  run_script("eval_average.sh", train_dir, tiny_data["validate_pattern"], "4", "16", "64",
             "30_60")
  assert os.path.exists(os.path.join(train_dir,
                                     "inference_model_avg_c4h16_30_60.ckpt-0.index"))
  averaged = json.load(open(os.path.join(train_dir,
                                         "eval_results_avg_c4h16_30_60.json")))
  assert averaged["checkpoint"].endswith("avg_c4h16_30_60.ckpt-0")
  # a real model: better than predicting every class's training frequency
  assert averaged["gap"] > label_prior_gap(tiny_data) + 0.1, averaged["gap"]

  resumed = run_cli("train", "--max_steps=62", *train_args(tiny_data, train_dir))
  assert "Resumed from %s/model.ckpt-60 (step 60)" % train_dir in resumed.stderr
  assert tf.train.load_checkpoint(os.path.join(train_dir, "model.ckpt-62")).get_tensor(
      "global_step") == 62

  # warm start a new run from the average (its global_step is 0, optimizer slots included)
  warm_dir = str(tmp_path / "warm")
  warm = run_cli("train", "--max_steps=2",
                 "--checkpoint_file=" + os.path.join(train_dir, "avg_c4h16_30_60.ckpt-0"),
                 *train_args(tiny_data, warm_dir))
  assert re.search(r"Warm start from .*avg_c4h16_30_60.ckpt-0: restored 79 variables, 0 start "
                   r"fresh", warm.stderr), warm.stderr[-2000:]
  assert os.path.exists(os.path.join(warm_dir, "model.ckpt-2.index"))
  refused = run_cli("train", "--max_steps=4", "--checkpoint_file=model.ckpt-30",
                    *train_args(tiny_data, train_dir), check=False)
  assert refused.returncode != 0 and "already holds training checkpoints" in refused.stderr
