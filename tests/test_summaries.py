"""Vertex AI TensorBoard: train.py and eval.py also write their summaries to
AIP_TENSORBOARD_LOG_DIR when it is set (a local directory, or gs:// on the local GCS emulator),
the same events as in the train_dir; nothing more is written when it is unset."""

import os

import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, run_cli, yt8m

storage = yt8m("storage")
summaries = yt8m("summaries")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp("summaries_data"))
  yt8m("synthetic_data").generate(
      output_dir, num_train_files=2, num_validate_files=1, num_test_files=0,
      videos_per_file=24, validate_videos_per_file=16, num_classes=40,
      seed=3, difficulty=0.2, min_frames=20, max_frames=40, levels="frame")
  return os.path.join(output_dir, "frame")


def train_and_evaluate(data, train_dir, env):
  """20 steps (summaries at steps 10 and 20), then eval.py of model.ckpt-20."""
  run_cli("train", "--train_data_pattern=%s/train*.tfrecord" % data, "--train_dir=" + train_dir,
          "--batch_size=8", "--num_epochs=100", "--max_steps=20", "--export_model_steps=10",
          "--random_seed=5", "--num_readers=1", *MODEL_FLAGS, env=env)
  run_cli("eval", "--eval_data_pattern=%s/validate*.tfrecord" % data, "--train_dir=" + train_dir,
          "--noeval_holdout_only", "--checkpoint_file=model.ckpt-20", "--batch_size=16",
          env=env)


def events(path):
  """(scalars [(step, tag, value)], has a graph) of one event file."""
  scalars, graph = [], False
  for event in tf.compat.v1.train.summary_iterator(path):
    graph = graph or bool(event.graph_def)
    scalars.extend((event.step, value.tag, value.simple_value) for value in event.summary.value)
  return scalars, graph


def event_files(directory):
  """{name: (scalars, has a graph)} of the event files directly in a local directory."""
  return {name: events(os.path.join(directory, name)) for name in os.listdir(directory)
          if name.startswith("events.out.tfevents.")}


def by_kind(files):
  """{"train" | "eval": (scalars, has a graph)} of one training and one evaluation event file
  (their names carry the second each writer was created in: the two copies' may differ)."""
  kinds = {}
  for name, content in files.items():
    kind = "eval" if ".eval." in name else "train"
    assert kind not in kinds, sorted(files)
    kinds[kind] = content
  return kinds


def check_same_events(train_events, mirrored):
  """The train_dir's event files (training's and the evaluation's) and the mirror's: the same
  scalars and graphs."""
  train_events, mirrored = by_kind(train_events), by_kind(mirrored)
  assert sorted(train_events) == sorted(mirrored) == ["eval", "train"]
  for kind, (scalars, graph) in train_events.items():
    assert mirrored[kind] == (scalars, graph), kind
    tags = {tag for _, tag, _ in scalars}
    if kind == "eval":
      assert "Epoch/Eval_GAP" in tags and not graph
      assert {step for step, _, _ in scalars} == {20}
    else:
      assert {"model/Training_GAP", "label_loss", "learning_rate"} <= tags and graph
      assert {step for step, _, _ in scalars} == {10, 20}


@pytest.mark.slow
def test_summaries_mirrored_into_a_local_tensorboard_dir(data, tmp_path):
  train_dir, logs = str(tmp_path / "train"), str(tmp_path / "base" / "logs")
  train_and_evaluate(data, train_dir, {summaries.TENSORBOARD_DIR_ENV: logs + "/"})
  check_same_events(event_files(train_dir), event_files(logs))
  assert sorted(os.listdir(logs)) == sorted(event_files(logs))  # nothing else there


@pytest.mark.slow
def test_summaries_mirrored_into_gcs(data, tmp_path, gcs_bucket):
  """As Vertex AI sets it: gs://BUCKET/<baseOutputDirectory>/logs/, here below a gs://
  train_dir (the scripts' baseOutputDirectory is the job's train_dir)."""
  train_dir = gcs_bucket + "/c4h16_8"
  logs = train_dir + "/logs/"
  train_and_evaluate(data, train_dir, {summaries.TENSORBOARD_DIR_ENV: logs})
  local = {}
  for kind, remote in (("train", train_dir), ("logs", logs.rstrip("/"))):
    local[kind] = str(tmp_path / kind)
    for name in storage.list_files(remote):
      if "/" not in name and name.startswith("events.out.tfevents."):
        storage.download(remote + "/" + name, os.path.join(local[kind], name))
  assert [name for name in storage.list_files(logs.rstrip("/"))
          if not name.startswith("events.out.tfevents.")] == []
  check_same_events(event_files(local["train"]), event_files(local["logs"]))


def test_no_mirror_without_the_variable(tmp_path, monkeypatch):
  for value in (None, "", "  "):
    if value is None:
      monkeypatch.delenv(summaries.TENSORBOARD_DIR_ENV, raising=False)
    else:
      monkeypatch.setenv(summaries.TENSORBOARD_DIR_ENV, value)
    logdir = tmp_path / ("run%r" % value)
    with tf.Graph().as_default():  # FileWriter is graph-mode only, as in the tools
      writer = summaries.SummaryWriter(str(logdir))
      assert writer.mirror is None
      writer.add_summary(tf.compat.v1.Summary(value=[
          tf.compat.v1.Summary.Value(tag="x", simple_value=1.0)]), 3)
      writer.close()
    [name] = os.listdir(str(logdir))
    assert events(os.path.join(str(logdir), name)) == ([(3, "x", 1.0)], False)
  assert sorted(os.listdir(str(tmp_path))) == sorted("run%r" % v for v in (None, "", "  "))
