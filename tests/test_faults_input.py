"""Faults of the inputs (issue 9, classes 4, 5 and 7): bad TFRecords, bad model artefacts and
gs:// reads failing mid-run. Every tool runs as a subprocess on real files and either goes on
correctly or exits 1 with one "ERROR:" line naming the file (and record), leaving no output."""

import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, run_cli, write_records, yt8m
from gcs_emulator import FaultProxy

tf1 = tf.compat.v1
storage = yt8m("storage")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=8"]


def one_error(result, *fragments):
  """The single ERROR line of a failed run (exit 1, no traceback), holding every fragment."""
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert result.returncode == 1 and len(errors) == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def video(video_id, frames, labels=(1,), rgb_size=1024, seed=0):
  """A frame-level SequenceExample with `frames` random frames (uint8 rgb and audio)."""
  rng = np.random.default_rng(seed)
  example = tf.train.SequenceExample()
  if video_id is not None:
    example.context.feature["id"].bytes_list.value.append(video_id)
  example.context.feature["labels"].int64_list.value.extend(labels)
  for name, size in (("rgb", rgb_size), ("audio", 128)):
    feature_list = example.feature_lists.feature_list[name]
    for frame in rng.integers(0, 256, (frames, size), dtype=np.uint8):
      feature_list.feature.add().bytes_list.value.append(frame.tobytes())
  return example.SerializeToString()


def good_videos(count, start=0):
  return [video(b"gd%02d" % i, 20, seed=i) for i in range(start, start + count)]


def record_offsets(path):
  """Byte offsets at which each record of a TFRecord file starts."""
  data, offsets, offset = open(path, "rb").read(), [], 0
  while offset < len(data):
    offsets.append(offset)
    offset += 16 + int.from_bytes(data[offset:offset + 8], "little")
  return offsets


@pytest.fixture(scope="module")
def model(tiny_data, tmp_path_factory):
  """A tiny trained model: train_dir with inference_model.*, and its submission tgz."""
  train_dir = str(tmp_path_factory.mktemp("faults_input_model"))
  run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
          "--train_dir=" + train_dir, "--batch_size=8", "--max_steps=2", *MODEL_FLAGS)
  run_cli("eval", "--train_dir=" + train_dir, "--checkpoint_file=model.ckpt-2",
          "--create_meta_only", "--force_output_model_name")
  tgz = os.path.join(train_dir, "sub.tgz")
  run_cli("inference", "--train_dir=" + train_dir, "--output_file=" + tgz + ".csv",
          "--input_data_pattern=" + tiny_data["test_pattern"], "--output_model_tgz=" + tgz)
  return {"dir": train_dir, "tgz": tgz}


def infer(model_args, pattern, output, *extra):
  return run_cli("inference", *model_args, "--input_data_pattern=" + pattern,
                 "--output_file=" + output, "--batch_size=2", *extra, check=False)


def read_rows(path):
  """{video id: [(label, score), ...]} of a submission CSV."""
  lines = open(path).read().splitlines()
  assert lines[0] == "VideoId,LabelConfidencePairs"
  rows = {}
  for line in lines[1:]:
    video_id, pairs = line.split(",")
    tokens = pairs.split(" ")
    rows[video_id] = [(int(l), float(s)) for l, s in zip(tokens[::2], tokens[1::2])]
  return rows


# ---------------------------------------------------------------------------------------
# 4. Bad data.


def cut_inside_record(record, within):
  """Damage: the file cut `within` bytes after the start of record number `record`."""
  def cut(path):
    end = record_offsets(path)[record] + within
    data = open(path, "rb").read()
    open(path, "wb").write(data[:end])
  return cut


def flip_byte_of_record(record):
  """Damage: a flipped byte in the payload of record number `record` (its CRC fails)."""
  def flip(path):
    data = bytearray(open(path, "rb").read())
    data[record_offsets(path)[record] + 40] ^= 0xFF
    open(path, "wb").write(bytes(data))
  return flip


BAD_DATA = {
    # name: (records of the bad file, how its bytes are then damaged, the expected message)
    "feature_size": ([video(b"bad0", 10, rgb_size=1000)], None,
                     "record 2: feature 'rgb' has a frame of 1000 bytes, expected 1024"),
    "label_id": ([video(b"bad1", 10, labels=(3, 5000))], None,
                 "record 2: label id 5000 outside the vocabulary [0, 40)"),
    "missing_id": ([video(None, 10)], None, "record 2: 0 values of feature 'id', expected 1"),
    "not_a_proto": ([b"not a protocol buffer"], None, "record 2"),
    "non_utf8_id": ([video(b"\xff\xfeid", 10)], None,
                    "record 2: video id b'\\xff\\xfeid' is not UTF-8"),
    "comma_in_id": ([video(b"a,b", 10)], None,
                    "record 2: video id b'a,b' holds a comma or a line break"),
    "corrupted_bytes": ([video(b"bad2", 10)], flip_byte_of_record(2),
                        "record 2: corrupted TFRecord"),
    # TensorFlow itself reports a cut after a record's first 12 bytes, the reader before.
    "truncated_in_data": ([video(b"bad3", 10)], cut_inside_record(2, 300),
                          "record 2: truncated TFRecord file (it ends inside this record)"),
    "truncated_in_header": ([video(b"bad4", 10)], cut_inside_record(2, 5),
                            "record 2: truncated TFRecord file (it ends inside this record)"),
}


def bad_data_dir(directory, case):
  """directory/test00 (good) and test01 (good, good, the bad record(s), good)."""
  records, damage, _ = BAD_DATA[case]
  os.makedirs(directory)
  write_records(os.path.join(directory, "test00.tfrecord"), good_videos(3))
  bad_file = write_records(os.path.join(directory, "test01.tfrecord"),
                           good_videos(2, 3) + records + good_videos(1, 5))
  if damage:
    damage(bad_file)
  return bad_file


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_inference_names_the_bad_record_and_writes_no_csv(model, tmp_path, case):
  bad_file = bad_data_dir(str(tmp_path / "data"), case)
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  result = infer(["--train_dir=" + model["dir"]], str(tmp_path / "data" / "test*.tfrecord"),
                 str(out_dir / "sub.csv"))
  one_error(result, "%s: %s" % (bad_file, BAD_DATA[case][2]))
  assert os.listdir(str(out_dir)) == []  # neither the CSV nor its temporary file


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_id", "truncated_in_header", "label_id"])
def test_train_and_eval_name_the_bad_record_too(model, tmp_path, case):
  bad_file = bad_data_dir(str(tmp_path / "data"), case)
  pattern = str(tmp_path / "data" / "test*.tfrecord")
  expected = "%s: %s" % (bad_file, BAD_DATA[case][2])
  train_dir = str(tmp_path / "train")
  one_error(run_cli("train", "--train_data_pattern=" + pattern, "--train_dir=" + train_dir,
                    "--batch_size=2", "--num_epochs=1", *MODEL_FLAGS, check=False), expected)
  results = str(tmp_path / "results.json")
  one_error(run_cli("eval", "--train_dir=" + model["dir"], "--eval_data_pattern=" + pattern,
                    "--noeval_holdout_only", "--run_once", "--batch_size=2",
                    "--results_json=" + results, check=False), expected)
  assert not os.path.exists(results)


@pytest.mark.slow
def test_empty_shards_are_named_and_no_videos_is_an_error(model, tmp_path):
  """A 0-byte shard is a valid TFRecord file without records: warned about by name; no video
  in any input file is an error (an empty submission), as in eval."""
  data = tmp_path / "data"
  data.mkdir()
  empty = str(data / "test00.tfrecord")
  open(empty, "wb").close()
  write_records(str(data / "test01.tfrecord"), good_videos(3))
  csv_path = str(tmp_path / "sub.csv")
  result = infer(["--train_dir=" + model["dir"]], str(data / "test*.tfrecord"), csv_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "%s is empty (0 bytes): no videos" % empty in result.stderr
  assert sorted(read_rows(csv_path)) == ["gd00", "gd01", "gd02"]
  out = str(tmp_path / "none.csv")
  result = infer(["--train_dir=" + model["dir"]], empty, out)
  one_error(result, "--input_data_pattern: the 1 file(s) hold no videos")
  assert not [name for name in os.listdir(str(tmp_path)) if name.startswith(".none.csv")]
  assert not os.path.exists(out)


@pytest.mark.slow
def test_training_on_files_without_videos_is_an_error(tmp_path):
  """train.py on input files that hold no record trains nothing: an error naming the flag,
  and no checkpoint (before, it said the epochs were done and exited 0)."""
  data = tmp_path / "data"
  data.mkdir()
  for name in ("train00.tfrecord", "train01.tfrecord"):
    open(str(data / name), "wb").close()
  train_dir = str(tmp_path / "run")
  result = run_cli("train", "--train_data_pattern=%s/train*.tfrecord" % data,
                   "--train_dir=" + train_dir, "--batch_size=2", *MODEL_FLAGS, check=False)
  one_error(result, "--train_data_pattern: the 2 training file(s) hold no videos")
  assert not [name for name in os.listdir(train_dir) if name.startswith("model.ckpt")]


@pytest.mark.slow
def test_zero_frame_and_long_videos_are_scored(model, tmp_path):
  """A video without frames is scored, as the original (its sampled frames are the zero
  padding), with the graph's prediction for an all-zero input; a video longer than 300
  frames is silently cut to its first 300, so it scores as that cut."""
  long_video = video(b"long", 400, seed=9)
  cut = tf.train.SequenceExample.FromString(long_video)
  cut.context.feature["id"].bytes_list.value[:] = [b"cut3"]
  for name in ("rgb", "audio"):
    del cut.feature_lists.feature_list[name].feature[300:]
  data = tmp_path / "data"
  data.mkdir()
  write_records(str(data / "test00.tfrecord"), good_videos(1) + [
      video(b"zero", 0), long_video, cut.SerializeToString()])
  csv_path = str(tmp_path / "sub.csv")
  result = infer(["--train_dir=" + model["dir"]], str(data / "test*.tfrecord"), csv_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not [line for line in result.stderr.splitlines()
              if line.startswith("W") and "readers.py" in line]  # the cut is silent
  rows = read_rows(csv_path)
  assert rows["long"] == rows["cut3"]
  prefix = os.path.join(model["dir"], "inference_model")
  graph = tf.Graph()
  with graph.as_default(), tf1.Session(graph=graph) as sess:
    tf1.train.import_meta_graph(prefix + ".meta").restore(sess, prefix)
    scores = sess.run(graph.get_collection("predictions")[0], {
        graph.get_collection("input_batch_raw")[0]: np.zeros([1, 300, 1152], np.float32),
        graph.get_collection("num_frames")[0]: np.zeros([1], np.int32)})[0]
  assert np.isfinite(scores).all()
  labels = [label for label, _ in rows["zero"]]
  assert labels == list(np.argsort(-scores, kind="stable")[:20])
  np.testing.assert_allclose([s for _, s in rows["zero"]], scores[labels], rtol=1e-5)


# ---------------------------------------------------------------------------------------
# 5. Bad artefacts.


def tgz_members(tgz):
  with tarfile.open(tgz) as archive:
    return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def write_tgz(path, members):
  with tarfile.open(path, "w:gz") as archive:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return path


def other_architecture_meta(tmp_path):
  """The inference meta graph of the same model with 2 clusters instead of 4."""
  model_graph = yt8m("model_graph")
  config = model_graph.ModelConfig(
      frame_features=True, feature_names="rgb,audio", feature_sizes="1024,128",
      num_classes=40, iterations=20, moe_l2=1e-6, gating=True, moe_prob_gating=True,
      netvlad_cluster_size=[2], netvlad_hidden_size=[8]).validate()
  path = str(tmp_path / "other.meta")
  model_graph.export_inference_meta(path, config)
  return open(path, "rb").read()


def bad_tgz(case, tgz, tmp_path):
  """(path of a broken copy of the submission tgz, expected message fragments)."""
  path = str(tmp_path / (case + ".tgz"))
  data = open(tgz, "rb").read()
  members = tgz_members(tgz)
  flags = json.loads(members["model_flags.json"])
  if case == "truncated":
    open(path, "wb").write(data[:len(data) // 2])
    return path, ["--input_model_tgz %s is truncated or not a tgz" % path]
  if case == "cut_after_last_member":  # every file complete, the gzip trailer missing
    open(path, "wb").write(data[:-30])
    return path, ["--input_model_tgz %s is truncated or not a tgz" % path]
  if case == "not_gzip":
    open(path, "wb").write(b"<html>Not Found</html>\n")
    return path, ["--input_model_tgz %s is truncated or not a tgz: not a gzip file" % path]
  if case == "no_model_files":
    write_tgz(path, {"model_flags.json": members["model_flags.json"]})
    return path, ["Inference model %s:inference_model is incomplete (missing .meta, .index, "
                  ".data-*)" % path]
  if case == "no_model_flags":
    write_tgz(path, {k: v for k, v in members.items() if k != "model_flags.json"})
    return path, ["--input_model_tgz %s holds no model_flags.json" % path]
  if case == "corrupt_json":
    members["model_flags.json"] = members["model_flags.json"][:60]
    return write_tgz(path, members), ["%s:model_flags.json is not valid JSON" % path]
  if case == "edited_json":
    members["model_flags.json"] = json.dumps(dict(flags, num_classes="40")).encode()
    return write_tgz(path, members), [
        '%s:model_flags.json: num_classes is "40", expected an integer' % path]
  if case == "truncated_meta":
    members["inference_model.meta"] = members["inference_model.meta"][:1000]
    return write_tgz(path, members), ["%s:inference_model.meta is not a meta graph" % path]
  if case == "truncated_data":
    data_name = "inference_model.data-00000-of-00001"
    members[data_name] = members[data_name][:len(members[data_name]) // 2]
    return write_tgz(path, members), [
        "Cannot restore the inference model %s:inference_model" % path]
  if case == "meta_of_another_model":
    members["inference_model.meta"] = other_architecture_meta(tmp_path)
    return write_tgz(path, members), [
        "Checkpoint %s:inference_model does not match the model of %s:inference_model.meta"
        % (path, path), "cluster_weights has shape [1024, 4] there, the model needs [1024, 2]"]
  raise ValueError(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    "truncated", "cut_after_last_member", "not_gzip", "no_model_files", "no_model_flags",
    "corrupt_json", "edited_json", "truncated_meta", "truncated_data",
    "meta_of_another_model"])
def test_bad_submission_tgz_is_one_line_naming_it(model, tiny_data, tmp_path, case):
  tgz, fragments = bad_tgz(case, model["tgz"], tmp_path)
  untar = tmp_path / "untar"
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  result = infer(["--input_model_tgz=" + tgz, "--untar_model_dir=" + str(untar)],
                 tiny_data["test_pattern"], str(out_dir / "sub.csv"),
                 "--output_model_tgz=" + str(out_dir / "again.tgz"))
  one_error(result, *fragments)
  assert os.listdir(str(out_dir)) == []
  assert os.listdir(str(untar)) == []  # the extracted files are removed
  if case in ("truncated", "cut_after_last_member", "not_gzip"):
    one_error(run_cli("model_size", "--model_tgz=" + tgz, check=False),
              "%s is truncated or not a tgz" % tgz)


@pytest.mark.slow
def test_meta_graph_that_does_not_match_the_checkpoint(model, tiny_data, tmp_path):
  train_dir = str(tmp_path / "mixed")
  shutil.copytree(model["dir"], train_dir)
  with open(os.path.join(train_dir, "inference_model.meta"), "wb") as meta:
    meta.write(other_architecture_meta(tmp_path))
  output = str(tmp_path / "sub.csv")
  one_error(infer(["--train_dir=" + train_dir], tiny_data["test_pattern"], output),
            "Checkpoint %s/inference_model does not match the model of %s/inference_model.meta"
            % (train_dir, train_dir))
  assert not os.path.exists(output)


@pytest.mark.parametrize("text,message", [
    ('{"feature_names": "rgb,audio", "feature_sizes": "1024,1', "is not valid JSON"),
    ("[]", "holds a JSON list, expected an object of model flags"),
    ('{"feature_names": "rgb,audio", "frame_features": true}', "lacks feature_sizes"),
    ('{"feature_names": "rgb,audio", "feature_sizes": "1024,128", "frame_features": 1}',
     "frame_features is 1, expected true or false"),
    ('{"feature_names": "rgb,audio", "feature_sizes": "1024,128", "frame_features": true, '
     '"num_classes": true}', "num_classes is true, expected an integer"),
    ('{"feature_names": "rgb,audio", "feature_sizes": "1024,128", "frame_features": true, '
     '"ensemble_wts": [0.5, "x"]}', 'ensemble_wts is [0.5, "x"], expected a list of numbers'),
])
def test_read_model_flags_names_the_key_at_fault(tmp_path, text, message):
  (tmp_path / "model_flags.json").write_text(text)
  with pytest.raises(ValueError) as error:
    yt8m("model_graph").read_model_flags(str(tmp_path))
  assert str(tmp_path / "model_flags.json") in str(error.value) and message in str(error.value)


@pytest.mark.slow
def test_hand_edited_model_flags_json_in_every_tool(model, tiny_data, tmp_path):
  """One check where the file is read: every tool reading it stops with the same line."""
  train_dir = str(tmp_path / "edited")
  shutil.copytree(model["dir"], train_dir)
  path = os.path.join(train_dir, "model_flags.json")
  text = open(path).read()
  open(path, "w").write(json.dumps(dict(json.loads(text), netvlad_cluster_size=4)))
  before = sorted(os.listdir(train_dir))
  runs = {
      "eval": ["--train_dir=" + train_dir, "--run_once", "--noeval_holdout_only",
               "--eval_data_pattern=" + tiny_data["test_pattern"]],
      "train": ["--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
                "--batch_size=8", "--max_steps=4"] + MODEL_FLAGS,
      "ensemble_weights": ["--train_dir=" + train_dir,
                           "--eval_data_pattern=" + tiny_data["test_pattern"],
                           "--noeval_holdout_only"],
      "build_ensemble": ["--train_dir=" + str(tmp_path / "ensemble"), "--checkpoints=%s,%s" % (
          os.path.join(train_dir, "model.ckpt-2"), os.path.join(model["dir"], "model.ckpt-2"))],
      "inference": ["--train_dir=" + train_dir, "--output_file=" + str(tmp_path / "sub.csv"),
                    "--input_data_pattern=" + tiny_data["test_pattern"]],
  }
  for tool, args in runs.items():
    one_error(run_cli(tool, *args, check=False), path,
              "netvlad_cluster_size is 4, expected a list of integers")
  assert sorted(os.listdir(train_dir)) == before
  assert not [name for name in os.listdir(str(tmp_path)) if name not in ("edited",)]


# ---------------------------------------------------------------------------------------
# 7. gs:// faults while reading (storage's retries and the emulator's faults: test_storage.py
# and test_gcs_pipeline.py).


@pytest.mark.slow
def test_gcs_shard_refused_mid_run_is_one_line(model, gcs_bucket, gcs_emulator, tmp_path):
  """A shard whose download fails for good once the run has started (a 403 through the fault
  proxy; retried faults are test_storage.py's): inference and training stop with one line
  naming the gs:// shard; no CSV."""
  for index in range(2):
    local = write_records(str(tmp_path / ("test%02d.tfrecord" % index)),
                          good_videos(3, 3 * index))
    storage.copy(local, "%s/data/test%02d.tfrecord" % (gcs_bucket, index))
  pattern = "%s/data/test*.tfrecord" % gcs_bucket
  (tmp_path / "out").mkdir()
  runs = {"inference": ["--train_dir=" + model["dir"], "--input_data_pattern=" + pattern,
                        "--output_file=" + str(tmp_path / "out" / "sub.csv")],
          "train": ["--train_data_pattern=" + pattern, "--num_epochs=1",
                    "--train_dir=" + str(tmp_path / "train")] + MODEL_FLAGS}
  for tool, args in runs.items():
    with FaultProxy(gcs_emulator.host) as proxy:
      proxy.fail("403", 10, when="test01.tfrecord?alt=media")
      result = run_cli(tool, "--batch_size=2", *args, check=False,
                       env={"STORAGE_EMULATOR_HOST": proxy.host,
                            "YT8M_STORAGE_CACHE": str(tmp_path / ("cache_" + tool))})
    one_error(result, "download %s/data/test01.tfrecord failed: Forbidden" % gcs_bucket)
  assert os.listdir(str(tmp_path / "out")) == []
