"""The whole pipeline with EVERY path on gs:// (a real local GCS emulator) against the same
commands on local paths.

The tiny frame-level dataset is uploaded to gs://BUCKET/data/ with storage.copy; then, as
tool processes forked by the fork server (STORAGE_EMULATOR_HOST / GOOGLE_CLOUD_PROJECT in
their environment, set as the `gcs_bucket` fixture sets them), each job starting as soon as
the jobs it needs are done (at most 3 at a time; gs:// and local jobs interleaved):

  * train (seeded, one reader: deterministic) -- twice on local paths, once on gs://;
  * eval --run_once of the newest checkpoint; avg_checkpoints --checkpoints_start_end=10,30;
    eval of the average with --force_output_model_name (inference_model.*); inference
    (train_dir -> CSV + submission tgz); build_ensemble of model.ckpt-20/30 (2 models) --
    on both sides;
  * gs:// only (checked against the above or in-process): inference from the gs:// tgz,
    overwrite_float16_ckpt with the built ensemble as template, ensemble_weights,
    model_size of the tgz (and, in-process, of the gs:// ensemble directory).

The results are compared: checkpoint tensors (np.array_equal), GAPs, CSV bytes, tgz members,
JSON reports, the remote files and the train_dir's `checkpoint` state file. Each command
line's wall time is recorded and printed by test_report_timings.

If the gs:// training run does not reproduce the local one, the downstream local commands
run on a local copy of the gs:// train_dir, so that every later comparison still compares
the tools on identical inputs (the training difference is reported on its own).
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, spawn_cli, yt8m
from gcs_emulator import EMULATOR_PROJECT

# Every test here starts tool processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

storage = yt8m("storage")
readers = yt8m("readers")
model_size = yt8m("model_size")
model_graph = yt8m("model_graph")
weights_lib = yt8m("ensemble_weights")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]
TRAIN_FLAGS = ["--batch_size=16", "--max_steps=30", "--export_model_steps=10",
               "--random_seed=5", "--num_readers=1"]
STEPS = (10, 20, 30)
CKPT_SUFFIXES = (".index", ".data-00000-of-00001", ".meta")


# ---------------------------------------------------------------------------------------
# Helpers.


class Job(object):

  def __init__(self, name, module, args, log_dir):
    self.name = name
    self.module = module
    self.log_path = os.path.join(log_dir, name + ".log")
    self._log = open(self.log_path, "w")
    self.start = time.time()
    self.end = None
    # Forked by the fork server (the emulator's variables are not start-up settings).
    self.process = spawn_cli(module, *args, stdout=self._log, stderr=subprocess.STDOUT)

  def poll(self):
    if self.end is None and self.process.poll() is not None:
      self.end = time.time()
      self._log.close()
    return self.end is not None

  @property
  def seconds(self):
    return self.end - self.start

  @property
  def returncode(self):
    return self.process.returncode

  @property
  def output(self):
    with open(self.log_path) as handle:
      return handle.read()


def run_jobs(log_dir, jobs, timings, max_parallel=3, must_succeed=True, timeout=400):
  """Runs {name: (module, args, [names it depends on])}: each job starts once its
  dependencies have succeeded, at most max_parallel at a time; records wall times."""
  started = time.time()
  pending = dict(jobs)
  running, done = {}, {}
  try:
    while pending or running:
      for name, job in list(running.items()):
        if job.poll():
          done[name] = running.pop(name)
          timings[name] = job.seconds
          if must_succeed and job.returncode != 0:
            raise AssertionError("%s failed (exit %d):\n%s" % (name, job.returncode,
                                                                job.output[-3000:]))
      for name, (module, args, deps) in sorted(pending.items()):
        if len(running) < max_parallel and all(d in done for d in deps):
          running[name] = Job(name, module, args, log_dir)
          del pending[name]
      if time.time() - started > timeout:
        raise AssertionError("jobs %s did not finish within %d s" % (
            sorted(pending) + sorted(running), timeout))
      time.sleep(0.05)
  finally:
    for job in running.values():
      job.process.kill()
      job.process.wait()
      job.poll()
  return done


def emulator_object(path):
  """The emulator's JSON metadata of a gs:// object (plain HTTP, not the code under test)."""
  bucket, name = path[len("gs://"):].split("/", 1)
  url = "%s/storage/v1/b/%s/o/%s" % (os.environ["STORAGE_EMULATOR_HOST"], bucket,
                                      urllib.parse.quote(name, safe=""))
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.loads(response.read())


def read_checkpoint(prefix, staging_dir):
  """{name: ndarray} of a local or gs:// checkpoint (gs:// is downloaded first)."""
  if storage.is_gcs(prefix):
    local = os.path.join(staging_dir, uuid.uuid4().hex, os.path.basename(prefix))
    os.makedirs(os.path.dirname(local))
    for suffix in (".index", ".data-00000-of-00001"):
      storage.copy(prefix + suffix, local + suffix)
    prefix = local
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def differing(a, b):
  """Names whose tensors differ (or exist on one side only)."""
  names = set(a) | set(b)
  return sorted(n for n in names if n not in a or n not in b or a[n].dtype != b[n].dtype
                or not np.array_equal(a[n], b[n]))


def read_json(path):
  return json.loads(storage.read_text(path))


def first_video_ids(pattern, count=48):
  """The first training videos the reader yields for a pattern (seeded like train.py)."""
  files = readers.training_files(pattern)
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(5)
    reader = readers.YT8MFrameFeatureReader(num_classes=40)
    dataset = reader.dataset(files, 16, num_epochs=None, shuffle=True, num_readers=1, seed=5)
    batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    ids = []
    with tf.compat.v1.Session(graph=graph) as sess:
      while len(ids) < count:
        ids.extend(v.decode() for v in sess.run(batch["video_id"]))
  return ids[:count]


# ---------------------------------------------------------------------------------------
# The two pipelines.


def layout(root, data_root):
  """Every path of one pipeline: root is 'gs://BUCKET' or a local directory."""
  join = lambda *parts: "/".join((root,) + parts)
  return {
      "root": root,
      "train_pattern": "%s/train*.tfrecord,%s/validate*.tfrecord" % (data_root, data_root),
      "validate_pattern": data_root + "/validate*.tfrecord",
      "test_pattern": data_root + "/test*.tfrecord",
      "train": join("train"),
      "eval_json": join("results", "eval.json"),
      "eval_avg_json": join("results", "eval_avg.json"),
      "avg": join("train", "avg.ckpt"),
      "csv": join("out", "predictions.csv"),
      "tgz": join("out", "submission.tgz"),
      "csv_tgz": join("out", "predictions_from_tgz.csv"),
      "ens": join("ensemble"),
      "weights_json": join("results", "weights.json"),
      "size_tgz_json": join("results", "size_tgz.json"),
  }


def train_args(p, train_dir):
  return ["--train_data_pattern=" + p["train_pattern"], "--train_dir=" + train_dir
          ] + MODEL_FLAGS + TRAIN_FLAGS


def downstream_jobs(p, prefix, untar_dir, full=True):
  """The jobs after training of one pipeline (all paths from layout p), names prefixed.

  full=False: only the jobs whose results are compared with the gs:// side (the others are
  checked against it or in-process).
  """
  train, validate = p["train"], "--eval_data_pattern=" + p["validate_pattern"]
  # One reader: readers.py's staging of gs:// shards races with a parallel interleave (see
  # test_parallel_readers_keep_staged_shards), and the metrics do not depend on the order.
  one_reader = "--num_readers=1"
  sources = "--checkpoints=%s/model.ckpt-20,%s/model.ckpt-30" % (train, train)
  jobs = {
      "eval": ("eval", ["--train_dir=" + train, validate, "--batch_size=64", "--run_once",
                        one_reader, "--results_json=" + p["eval_json"]], []),
      "avg": ("avg_checkpoints", ["--prefix=%s/model.ckpt-" % train,
                                  "--checkpoints_start_end=10,30",
                                  "--output_path=" + p["avg"]], []),
      "eval_avg": ("eval", ["--train_dir=" + train, validate, "--batch_size=64",
                            "--run_once", one_reader, "--checkpoint_file=avg.ckpt-0",
                            "--force_output_model_name",
                            "--results_json=" + p["eval_avg_json"]], ["eval", "avg"]),
      "infer": ("inference", ["--train_dir=" + train,
                              "--input_data_pattern=" + p["test_pattern"], "--batch_size=7",
                              "--output_file=" + p["csv"], "--output_model_tgz=" + p["tgz"]],
                ["eval_avg"]),
      "build": ("build_ensemble", ["--train_dir=" + p["ens"], sources, "--ensemble_wts=0.6",
                                   "--ensemble_wts=0.4"], []),
  }
  if full:
    jobs.update({
        "weights": ("ensemble_weights", ["--train_dir=" + p["ens"], validate, one_reader,
                                         "--batch_size=64", "--search_iterations=1",
                                         "--results_json=" + p["weights_json"]], ["build"]),
        "infer_tgz": ("inference", ["--input_model_tgz=" + p["tgz"],
                                    "--input_data_pattern=" + p["test_pattern"],
                                    "--untar_model_dir=" + untar_dir, "--batch_size=7",
                                    "--output_file=" + p["csv_tgz"]], ["infer"]),
        "overwrite": ("overwrite_float16_ckpt", ["--train_dir=" + p["ens"],
                                                 "--inference_model=inference_model",
                                                 "--out_name=overwritten", sources],
                      ["build"]),
        "size_tgz": ("model_size", ["--model_tgz=" + p["tgz"],
                                    "--results_json=" + p["size_tgz_json"]], ["infer"]),
    })
  return {prefix + name: (module, args, [prefix + d for d in deps])
          for name, (module, args, deps) in jobs.items()}


@pytest.fixture(scope="module")
def runs(gcs_emulator, tiny_data, tmp_path_factory):
  """Both pipelines, run once for the module. The environment and the bucket are set up
  as the per-test `gcs_bucket` fixture does it, for the whole module."""
  root = str(tmp_path_factory.mktemp("gcs_pipeline"))
  logs = os.path.join(root, "logs")
  staging = os.path.join(root, "staging")
  os.makedirs(logs)
  os.makedirs(staging)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    patch.setenv("GOOGLE_CLOUD_PROJECT", EMULATOR_PROJECT)
    bucket = "gs://" + gcs_emulator.create_bucket()
    r = {"bucket": bucket, "staging": staging, "timings": {}, "root": root}
    timings = r["timings"]
    start = time.time()

    frame_dir = os.path.join(tiny_data["dir"], "frame")
    uploaded = sorted(n for n in os.listdir(frame_dir)
                      if n.startswith(("train", "validate", "test")))
    for name in uploaded:
      storage.copy(os.path.join(frame_dir, name), "%s/data/%s" % (bucket, name))
    r["uploaded"] = uploaded
    r["upload_seconds"] = time.time() - start

    gs = layout(bucket, bucket + "/data")
    local = layout(os.path.join(root, "local"), frame_dir)
    r["gs"], r["local"] = gs, local
    r["local_trained"] = [os.path.join(root, "local", "train_run%d" % i) for i in (1, 2)]

    # Training (local twice: determinism on local paths first).
    phase_start = time.time()
    run_jobs(logs, {"gs_train": ("train", train_args(gs, gs["train"]), []),
                    "local_train": ("train", train_args(local, r["local_trained"][0]), []),
                    "local_train_again": ("train", train_args(local, r["local_trained"][1]),
                                          [])}, timings)
    r["phase_seconds"] = [time.time() - phase_start]
    r["train_files"] = storage.listdir(gs["train"])
    state = gs["train"] + "/checkpoint"
    r["state_after_train"] = (storage.read_bytes(state), emulator_object(state)["generation"])
    r["ckpt30"] = {
        "gs": read_checkpoint(gs["train"] + "/model.ckpt-30", staging),
        "local": read_checkpoint(r["local_trained"][0] + "/model.ckpt-30", staging),
        "local_again": read_checkpoint(r["local_trained"][1] + "/model.ckpt-30", staging)}
    r["train_differs"] = differing(r["ckpt30"]["gs"], r["ckpt30"]["local"])
    if not r["train_differs"]:
      shutil.copytree(r["local_trained"][0], local["train"])
    else:  # compare the downstream tools on identical inputs
      os.makedirs(local["train"])
      for name in r["train_files"]:
        storage.copy(gs["train"] + "/" + name, os.path.join(local["train"], name))

    # Everything after training, gs:// and local side by side (local outputs need their
    # directories).
    for name in ("results", "out"):
      os.makedirs(os.path.join(local["root"], name))
    jobs = downstream_jobs(gs, "gs_", os.path.join(root, "untar_gs"))
    jobs.update(downstream_jobs(local, "local_", os.path.join(root, "untar_local"),
                                full=False))
    phase_start = time.time()
    run_jobs(logs, jobs, timings)
    r["phase_seconds"].append(time.time() - phase_start)
    r["state_at_end"] = (storage.read_bytes(state), emulator_object(state)["generation"])
    r["total_seconds"] = time.time() - start
    yield r


# ---------------------------------------------------------------------------------------
# Training.


def test_training_is_deterministic_on_local_paths(runs):
  assert not differing(runs["ckpt30"]["local"], runs["ckpt30"]["local_again"])


def test_training_on_gcs_matches_local(runs):
  # gs:// and local files go through the same shuffling (readers.BaseReader._staged_files)
  assert not runs["train_differs"], runs["train_differs"][:5]
  assert len(runs["ckpt30"]["gs"]) == 79


def test_remote_train_dir_contents(runs):
  names = runs["train_files"]
  for step in STEPS:
    for suffix in CKPT_SUFFIXES:
      assert "model.ckpt-%d%s" % (step, suffix) in names, names
  assert "model_flags.json" in names and "checkpoint" in names
  assert any(n.startswith("events.out.tfevents.") for n in names), names
  assert not [n for n in names if "tmp" in n or n.startswith(".")], names
  flags = read_json(runs["gs"]["train"] + "/model_flags.json")
  assert flags["netvlad_cluster_size"] == [4] and flags["netvlad_hidden_size"] == [16]
  # the state file is uploaded after the checkpoint it points at
  train = runs["gs"]["train"]
  assert int(runs["state_after_train"][1]) > int(
      emulator_object(train + "/model.ckpt-30.index")["generation"])


def test_state_file_untouched_by_avg_and_the_other_tools(runs):
  # same bytes AND same object generation: avg_checkpoints, eval, build_ensemble,
  # overwrite_float16_ckpt, ... never re-uploaded it
  assert runs["state_at_end"] == runs["state_after_train"]


def test_remote_state_file_names_the_remote_checkpoint(runs):
  state = runs["state_after_train"][0].decode()
  assert state.splitlines()[0] == 'model_checkpoint_path: "model.ckpt-30"', state


# ---------------------------------------------------------------------------------------
# Evaluation, averaging, inference.


def test_eval_gap_matches_local(runs):
  gs = read_json(runs["gs"]["eval_json"])
  local = read_json(runs["local"]["eval_json"])
  assert gs["examples"] == local["examples"] == 240
  assert gs["global_step"] == "30"
  assert gs["checkpoint"] == runs["gs"]["train"] + "/model.ckpt-30"
  for key in ("gap", "hit_at_one", "perr", "map", "loss"):
    assert gs[key] == local[key], key
  names = storage.listdir(runs["gs"]["train"])
  for suffix in CKPT_SUFFIXES:
    assert "inference_model_30" + suffix in names


def test_avg_checkpoints_on_gcs(runs):
  gs, local = runs["gs"]["avg"] + "-0", runs["local"]["avg"] + "-0"
  names = storage.listdir(runs["gs"]["train"])
  assert sorted(n for n in names if n.startswith("avg")) == [
      "avg.ckpt-0" + s for s in sorted(CKPT_SUFFIXES)]
  generations = {s: int(emulator_object(gs + s)["generation"]) for s in CKPT_SUFFIXES}
  assert (generations[".data-00000-of-00001"] < generations[".meta"]
          < generations[".index"]), generations  # the index is uploaded last
  gs_values = read_checkpoint(gs, runs["staging"])
  assert not differing(gs_values, read_checkpoint(local, runs["staging"]))
  inputs = [read_checkpoint("%s/model.ckpt-%d" % (runs["gs"]["train"], s), runs["staging"])
            for s in STEPS]
  weights = "tower/hidden1_weights/hidden1_weights"
  np.testing.assert_allclose(gs_values[weights], np.mean([v[weights] for v in inputs], 0),
                             rtol=1e-6, atol=1e-7)
  assert gs_values["global_step"] == 0


def test_eval_of_the_average_and_exported_model(runs):
  gs = read_json(runs["gs"]["eval_avg_json"])
  local = read_json(runs["local"]["eval_avg_json"])
  assert gs["checkpoint"] == runs["gs"]["train"] + "/avg.ckpt-0"
  assert gs["gap"] == local["gap"] and gs["examples"] == 240
  assert gs["gap"] != read_json(runs["gs"]["eval_json"])["gap"]
  exported = runs["gs"]["train"] + "/inference_model"
  for suffix in CKPT_SUFFIXES:
    assert storage.exists(exported + suffix)
  gs_values = read_checkpoint(exported, runs["staging"])
  assert not differing(gs_values, read_checkpoint(runs["local"]["train"] + "/inference_model",
                                                  runs["staging"]))
  average = read_checkpoint(runs["gs"]["avg"] + "-0", runs["staging"])
  assert not differing(gs_values, {n: average[n] for n in gs_values})  # the average's weights


def tgz_members(path):
  with storage.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:gz") as tgz:
    return {m.name: tgz.extractfile(m).read() for m in tgz.getmembers()}


def test_inference_csv_and_tgz_match_local(runs):
  gs_csv = storage.read_bytes(runs["gs"]["csv"])
  with open(runs["local"]["csv"], "rb") as handle:
    local_csv = handle.read()
  assert gs_csv == local_csv
  lines = gs_csv.decode().splitlines()
  assert lines[0] == "VideoId,LabelConfidencePairs" and len(lines) == 1 + 20
  assert storage.read_bytes(runs["gs"]["csv_tgz"]) == gs_csv
  gs_tgz, local_tgz = tgz_members(runs["gs"]["tgz"]), tgz_members(runs["local"]["tgz"])
  assert sorted(gs_tgz) == sorted(local_tgz) == sorted(
      ["inference_model" + s for s in CKPT_SUFFIXES] + ["model_flags.json"])
  assert gs_tgz == local_tgz


# ---------------------------------------------------------------------------------------
# Ensemble tools.


def test_build_ensemble_and_overwrite_on_gcs(runs):
  gs_ens, local_ens = runs["gs"]["ens"], runs["local"]["ens"]
  built = read_checkpoint(gs_ens + "/inference_model", runs["staging"])
  assert not differing(built, read_checkpoint(local_ens + "/inference_model",
                                              runs["staging"]))
  assert built["tower/model1/gates/weights"].dtype == np.float16
  overwritten = read_checkpoint(gs_ens + "/overwritten-0", runs["staging"])
  assert not differing(overwritten, built)
  assert storage.read_bytes(gs_ens + "/overwritten-0.meta") == storage.read_bytes(
      gs_ens + "/inference_model.meta")
  assert sorted(storage.listdir(gs_ens)) == sorted(
      ["inference_model" + s for s in CKPT_SUFFIXES] + ["model_flags.json"]
      + ["overwritten-0" + s for s in CKPT_SUFFIXES])
  gs_flags, local_flags = read_json(gs_ens + "/model_flags.json"), read_json(
      local_ens + "/model_flags.json")
  train = runs["gs"]["train"]
  assert gs_flags.pop("ensemble_sources") == [train + "/model.ckpt-20",
                                              train + "/model.ckpt-30"]
  local_flags.pop("ensemble_sources")
  assert gs_flags == local_flags and gs_flags["ensemble_wts"] == [0.6, 0.4]


def test_ensemble_weights_on_gcs(runs):
  """ensemble_weights.py on gs:// (CLI) vs its library on the local ensemble (in-process)."""
  gs = read_json(runs["gs"]["weights_json"])
  assert gs["checkpoint"] == runs["gs"]["ens"] + "/inference_model"
  assert gs["videos"] == 240 and gs["configured_weights"]["weights"] == [0.6, 0.4]
  stored = read_json(runs["local"]["ens"] + "/model_flags.json")  # as build_ensemble wrote it
  config = model_graph.ModelConfig.from_dict(stored)
  members, labels, info = weights_lib.collect_member_predictions(
      config, runs["local"]["ens"] + "/inference_model",
      readers.eval_files(runs["local"]["validate_pattern"]), 64, 1, 0, np.dtype(np.float32),
      20)
  objective = weights_lib.GapObjective(members, labels, 20)
  assert [m["gap"] for m in gs["members"]] == [objective([1.0, 0.0]), objective([0.0, 1.0])]
  assert gs["configured_weights"]["gap_graph"] == info["configured_gap_graph"]
  best, best_gap, _ = weights_lib.search(objective, 2, seed=0, restarts=1)
  assert gs["best_weights"]["weights"] == best and gs["best_weights"]["gap"] == best_gap


def test_model_size_on_gcs(runs):
  """model_size.py --model_tgz=gs://... (CLI) and --train_dir=gs://... (library) vs local."""
  # model_flags.json (gs:// vs local source paths) and the tgz compression may differ
  same = ("model", "tensors", "tensors_by_dtype", "values", "tensor_bytes",
          "float32_tensor_bytes", "data_bytes", "ratio", "limit_bytes")
  reports = [
      (read_json(runs["gs"]["size_tgz_json"]), model_size.measure(model_tgz=runs["local"]["tgz"]),
       runs["gs"]["tgz"]),
      (model_size.measure(train_dir=runs["gs"]["ens"]),
       model_size.measure(train_dir=runs["local"]["ens"]), runs["gs"]["ens"])]
  for gs_size, local_size, source in reports:
    assert gs_size["source"] == source
    assert {k: gs_size[k] for k in same} == {k: local_size[k] for k in same}, source
    assert sorted(gs_size["files"]) == sorted(local_size["files"]) == sorted(
        ["inference_model" + s for s in CKPT_SUFFIXES] + ["model_flags.json"])
    assert gs_size["tensors"] > 0 and gs_size["fits"]
  assert reports[0][0]["tgz_bytes"] == storage.size(runs["gs"]["tgz"])
  assert reports[1][0]["tensors_by_dtype"]["float16"] == 8  # 4 kernels x 2 models


def test_parallel_readers_keep_staged_shards(runs):
  """eval.py's input pipeline (8 interleaved readers) over the gs:// validate files."""
  files = readers.eval_files(runs["gs"]["validate_pattern"])
  reader = readers.YT8MFrameFeatureReader(num_classes=40)
  for _ in range(3):  # the failure is a race: give it a few chances
    graph = tf.Graph()
    with graph.as_default():
      dataset = reader.dataset(files, 64, num_epochs=1, shuffle=False, num_readers=8)
      batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
      videos = 0
      with tf.compat.v1.Session(graph=graph) as sess:
        try:
          while True:
            videos += len(sess.run(batch["video_id"]))
        except tf.errors.OutOfRangeError:
          pass
    assert videos == 240


# ---------------------------------------------------------------------------------------
# Errors: a missing bucket.


def test_missing_bucket_is_a_clear_error(gcs_bucket, runs, tmp_path):
  missing = "gs://yt8m-missing-" + uuid.uuid4().hex[:12]
  train_files = storage.listdir(runs["gs"]["train"])
  pattern = missing + "/data/train*.tfrecord"
  jobs = run_jobs(str(tmp_path), {
      "train": ("train", ["--train_data_pattern=" + pattern,
                          "--train_dir=" + gcs_bucket + "/train"] + MODEL_FLAGS + TRAIN_FLAGS,
                []),
      "avg_prefix": ("avg_checkpoints", ["--prefix=%s/train/model.ckpt-" % missing,
                                         "--num_last_checkpoints=2",
                                         "--output_path=%s/avg.ckpt" % gcs_bucket], []),
      "avg_output": ("avg_checkpoints", ["--prefix=%s/model.ckpt-" % runs["gs"]["train"],
                                         "--num_last_checkpoints=2",
                                         "--output_path=%s/out/avg.ckpt" % missing], []),
  }, {}, must_succeed=False)
  for name, expected in (("train", pattern), ("avg_prefix", missing + "/train"),
                         ("avg_output", missing)):
    job = jobs[name]
    assert job.returncode == 1, (name, job.output[-2000:])
    last = [line for line in job.output.splitlines() if line.strip()][-1]
    assert "bucket '%s' does not exist" % missing[len("gs://"):] in last, (name, last)
    assert expected in last, (name, last)
    assert "Traceback" not in job.output, (name, job.output[-2000:])
  assert storage.listdir(gcs_bucket) == []  # nothing written anywhere
  assert storage.listdir(runs["gs"]["train"]) == train_files


# ---------------------------------------------------------------------------------------
# Timings.


def test_report_timings(runs, capsys):
  """Wall time of each command line, gs:// vs local (up to 3 processes ran at once on the
  same machine, so both sides shared the CPUs alike)."""
  timings = runs["timings"]
  gs = {k[3:]: v for k, v in timings.items() if k.startswith("gs_")}
  local = {k[6:]: v for k, v in timings.items() if k.startswith("local_")
           and k != "local_train_again"}
  both = [name for name in gs if name in local]
  lines = ["", "wall time per command line (s), gs:// vs local:"]
  for name in both:
    lines.append("  %-9s gs:// %6.1f   local %6.1f   (%+.0f%%)" % (
        name, gs[name], local[name], 100.0 * (gs[name] / local[name] - 1)))
  lines.append("  %-9s gs:// %6.1f   local %6.1f   (%+.0f%%)" % (
      "sum", sum(gs[n] for n in both), sum(local[n] for n in both),
      100.0 * (sum(gs[n] for n in both) / sum(local[n] for n in both) - 1)))
  lines.append("  gs:// only: %s" % ", ".join("%s %.1f" % (n, gs[n]) for n in sorted(gs)
                                              if n not in local))
  lines.append("  upload of %d data files %.1f s; training phase %.1f s, the rest %.1f s; "
               "fixture %.1f s" % (len(runs["uploaded"]), runs["upload_seconds"],
                                   runs["phase_seconds"][0], runs["phase_seconds"][1],
                                   runs["total_seconds"]))
  with capsys.disabled():
    sys.stderr.write("\n".join(lines) + "\n")
  # every local command line has its gs:// counterpart, and each timing is a real duration
  # inside the fixture's wall time
  assert both and sorted(both) == sorted(local), (sorted(gs), sorted(local))
  assert all(0 < seconds < runs["total_seconds"] for seconds in timings.values()), timings
  assert sum(runs["phase_seconds"]) <= runs["total_seconds"]
