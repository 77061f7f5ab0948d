"""Tools that explain themselves: --help lists every flag a tool accepts, progress lines with
totals (eval, inference, averaging, the ensemble build and weight search), build_ensemble
--dry_run, and TensorBoard summaries of averages under their own tags."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO_ROOT, TINY_FLAGS, run, run_cli, spawn_cli, yt8m

progress = yt8m("progress")
readers = yt8m("readers")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]
TOOLS = ("train", "eval", "inference", "avg_checkpoints", "build_ensemble", "ensemble_weights",
         "model_size", "overwrite_float16_ckpt", "synthetic_data")
# "eval 30: 240/240 videos (100.0%) | 512.3 videos/s | elapsed 0s | ETA 0s"
PROGRESS_RE = r"%s: ([\d,.]+)/([\d,.]+) %s \((\d+\.\d)%%\) \| [\d.]+ %s/s \| elapsed \S+ \| ETA \S+"


def progress_lines(what, unit, text):
  return [(float(done.replace(",", "")), float(total.replace(",", "")), float(percent))
          for done, total, percent in re.findall(
              PROGRESS_RE % (re.escape(what), re.escape(unit), re.escape(unit)), text)]


def records(pattern_or_files):
  files = (readers.eval_files(pattern_or_files) if isinstance(pattern_or_files, str)
           else pattern_or_files)
  return sum(1 for path in files for _ in tf.compat.v1.io.tf_record_iterator(path))


def test_progress_line_and_record_count(tiny_data):
  lines = []
  line = progress.Progress("x", 300, "videos", log=lines.append)
  for _ in range(3):
    line.update(100)
  line.finish()
  assert len(lines) == 2  # the first update, then the final count (not every update)
  assert progress_lines("x", "videos", "\n".join(lines))[-1] == (300, 300, 100.0)
  assert "ETA" in lines[0] and "/300 videos (33.3%)" in lines[0]
  files = readers.eval_files(tiny_data["validate_pattern"])
  assert progress.count_records(files) == (records(files), True)
  assert progress.format_duration(3725) == "1h02m"


def test_many_local_files_are_counted_from_a_sample(tiny_data, monkeypatch):
  """Beyond _LOCAL_EXACT_FILES local files, a spread sample's headers are read and the total
  scaled by all the files' sizes: close to the true count, and said to be an estimate."""
  files = readers.eval_files(tiny_data["validate_pattern"])  # 60 files of 4 videos
  exact = records(files)
  monkeypatch.setattr(progress, "_LOCAL_EXACT_FILES", 10)
  total, is_exact = progress.count_records(files)
  assert not is_exact and abs(total - exact) <= 0.2 * exact, (total, exact)
  monkeypatch.setattr(progress, "_LOCAL_EXACT_FILES", len(files))
  assert progress.count_records(files) == (exact, True)


class FakeClock(object):

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_training_progress_picks_the_bound_that_ends_the_run():
  """The step of --max_steps or the epoch of --num_epochs, whichever ends the run first, with
  this run's examples/sec and the ETA at that rate; '~' when the records were estimated."""
  clock, lines = FakeClock(), []
  # Resumed at step 100 of 1,000; 10 steps of 64 examples in 20 s; 5 epochs of 64,000 would
  # take far longer than the 900 steps left.
  line = progress.TrainingProgress(100, 1000, 64000, 5, log=lines.append, clock=clock)
  clock.now += 20
  line.update(110, 640)
  assert lines == ["training: step 110/1,000 (11.0%) | 32.0 examples/s | elapsed 20s | "
                   "ETA 29m40s"]  # 890 steps at 0.5 steps/s
  # Epochs end first: 2 epochs of 640 examples, 1,280 - 640 left at 32 examples/s.
  line = progress.TrainingProgress(100, 1000, 640, 2, log=lines.append, clock=clock)
  clock.now += 20
  line.update(110, 640)
  assert lines[-1] == ("training: epoch 1.00/2 (50.0%) | 32.0 examples/s | elapsed 20s | "
                       "ETA 20s")
  for step in range(111, 120):  # within 10 s of the last line: not logged
    clock.now += 1
    line.update(step, 64)
  assert len(lines) == 2
  clock.now += 1
  line.update(120, 64)
  line.finish()  # the last update was logged already
  assert lines[-1] == ("training: epoch 2.00/2 (100.0%) | 42.7 examples/s | elapsed 30s | "
                       "ETA 0s") and len(lines) == 3
  # Without --max_steps, estimated records (gs://): the epoch, marked '~'.
  line = progress.TrainingProgress(0, None, 1000, 10, approximate=True, log=lines.append,
                                   clock=clock)
  clock.now += 100
  line.update(50, 5000)
  assert lines[-1] == ("training: epoch ~5.00/10 (~50.0%) | 50.0 examples/s | elapsed 1m40s | "
                       "ETA ~1m40s")
  # Records unknown and no --max_steps: the step alone, no ETA.
  line = progress.TrainingProgress(0, None, None, 10, log=lines.append, clock=clock)
  clock.now += 4
  line.update(3, 24)
  line.finish()
  assert lines[-1] == "training: step 3 | 6.0 examples/s | elapsed 4s"


# "training: step 12/12 (100.0%) | 98.1 examples/s | elapsed 3s | ETA 0s"
TRAINING_RE = (r"training: (step|epoch) ([\d,.]+)/([\d,]+) \((\d+\.\d)%\) \| "
               r"([\d.]+) examples/s \| elapsed \S+ \| ETA (\S+)$")


@pytest.mark.slow
def test_training_logs_its_progress(tiny_data, tmp_path):
  """train.py's progress: the step out of --max_steps, or the epoch out of --num_epochs when
  that ends the run (the 4 train files of 40 videos and the 2 validate files of 4 that are not
  held out: 168 videos, 6 batches of at most 32)."""
  common = ["--train_data_pattern=" + tiny_data["train_pattern"], "--batch_size=32",
            "--export_model_steps=1000", "--num_readers=2"] + MODEL_FLAGS
  result = run_cli("train", "--train_dir=%s" % (tmp_path / "steps"), "--max_steps=12",
                   "--num_epochs=100", *common)
  assert "training: 168 videos in 6 file(s) (counted" in result.stderr
  lines = re.findall(TRAINING_RE, result.stderr, re.M)
  assert lines[0][:4] == ("step", "1", "12", "8.3"), result.stderr[-3000:]
  assert lines[-1][:4] == ("step", "12", "12", "100.0") and lines[-1][5] == "0s"
  assert float(lines[-1][4]) > 0
  result = run_cli("train", "--train_dir=%s" % (tmp_path / "epochs"), "--max_steps=1000",
                   "--num_epochs=1", *common)
  lines = re.findall(TRAINING_RE, result.stderr, re.M)
  assert lines[0][:4] == ("epoch", "0.19", "1", "19.0"), result.stderr[-3000:]  # 32/168
  assert lines[-1][:4] == ("epoch", "1.00", "1", "100.0") and lines[-1][5] == "0s"
  assert "Done training -- epoch limit reached. (step 6)" in result.stderr


@pytest.mark.slow
def test_python_m_package_prints_the_original_workflow():
  result = run([sys.executable, "-m", "youtube-8m"], timeout=60)
  for command in ("youtube-8m.train", "youtube-8m.eval", "youtube-8m.avg_checkpoints",
                  "youtube-8m.build_ensemble", "youtube-8m.ensemble_weights",
                  "youtube-8m.inference", "--input_model_tgz", "scripts/main_job.sh",
                  "youtube-8m.gpu_check"):
    assert command in result.stdout


@pytest.mark.slow
def test_help_lists_every_flag_a_tool_accepts():
  """absl's --help shows only the main module's key flags: each tool adopts the flags of the
  project modules it uses (model flags included), so every project flag it parses is listed."""
  runs = {}
  # Forked by the fork server: no TensorFlow import each, all at once.
  started = {tool: spawn_cli(tool, "--helpxml", stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for tool in TOOLS}
  for tool, process in started.items():
    runs[tool] = process.communicate(timeout=300)[0]
  package_dir = os.path.join(REPO_ROOT, "youtube-8m")
  for tool, xml in runs.items():
    flags = re.findall(r"<flag>\s*(<key>yes</key>\s*)?<file>([^<]+)</file>\s*<name>([^<]+)</name>",
                       xml)
    assert flags, tool
    project = {name: bool(key) for key, path, name in flags
               if os.path.realpath(path).startswith(package_dir) or path.endswith(".py") and
               os.path.basename(os.path.dirname(path)) == "youtube-8m"}
    hidden = sorted(name for name, key in project.items() if not key)
    assert not hidden, "%s --help does not list %s" % (tool, hidden)
    if tool in ("train", "eval", "build_ensemble", "ensemble_weights"):
      for name in ("netvlad_cluster_size", "netvlad_hidden_size", "ensemble_wts",
                   "frame_features", "moe_prob_gating", "netvlad_relu", "float16_flag"):
        assert name in project, (tool, name)
  help_text = run_cli("train", "--help", check=False).stdout
  assert "--netvlad_cluster_size" in help_text and "--ensemble_wts" in help_text


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  train_dir = str(tmp_path_factory.mktemp("progress_trained"))
  run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
          "--train_dir=" + train_dir, "--batch_size=32", "--base_learning_rate=0.01",
          "--num_epochs=100", "--export_model_steps=10", "--max_steps=30", *MODEL_FLAGS)
  return train_dir


def summaries(train_dir):
  """{tag: [(step, value)]} of every eval event file in train_dir."""
  found = {}
  for path in glob.glob(os.path.join(train_dir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, []).append((event.step, value.simple_value))
  return found


@pytest.mark.slow
def test_averages_progress_and_tensorboard_tags(trained, tiny_data, tmp_path):
  """Two averages and a training checkpoint evaluated into one train_dir: each average's
  summaries are under its own tag (both have global_step 0), the checkpoint's under the
  original Epoch/ tags at its step; eval and averaging print progress with totals."""
  held_out = records(tiny_data["validate_pattern"])
  eval_flags = ["--eval_data_pattern=" + tiny_data["validate_pattern"], "--train_dir=" + trained,
                "--batch_size=64", "--run_once=True"]
  for first, last in ((10, 20), (20, 30)):
    result = run_cli("avg_checkpoints", "--checkpoints_start_end=%d,%d" % (first, last),
                     "--prefix=%s/model.ckpt-" % trained,
                     "--output_path=%s/avg_%d_%d.ckpt" % (trained, first, last))
    variables = int(re.search(r"averaging (\d+) variables over", result.stderr).group(1))
    assert variables > 32  # the model's 32 variables + Adam slots
    done, total, percent = progress_lines("averaging %d variables" % variables, "MiB",
                                          result.stderr)[-1]
    assert done == total > 0 and percent == 100.0
    result = run_cli("eval", *eval_flags, "--checkpoint=avg_%d_%d.ckpt-0.index" % (first, last))
    assert "eval: %d videos in" % held_out in result.stderr  # the total, counted first
    lines = progress_lines("eval avg_%d_%d.ckpt" % (first, last), "videos", result.stderr)
    assert lines and lines[-1] == (held_out, held_out, 100.0), result.stderr[-2000:]
  result = run_cli("eval", *eval_flags, "--checkpoint=model.ckpt-30.index")
  assert progress_lines("eval 30", "videos", result.stderr)[-1] == (held_out, held_out, 100.0)

  found = summaries(trained)
  for name in ("avg_10_20.ckpt", "avg_20_30.ckpt"):
    assert [step for step, _ in found[name + "/Eval_GAP"]] == [0]
    assert name + "/Eval_Avg_Hit@1" in found
  assert found["avg_10_20.ckpt/Eval_GAP"] != found["avg_20_30.ckpt/Eval_GAP"]
  assert [step for step, _ in found["Epoch/Eval_GAP"]] == [30]

  # Inference from the average's inference model (written by its evaluation).
  test_videos = records(glob.glob(tiny_data["test_pattern"]))
  result = run_cli("inference", "--train_dir=" + trained,
                   "--inference_model_file=inference_model_avg_10_20.ckpt-0",
                   "--input_data_pattern=" + tiny_data["test_pattern"],
                   "--output_file=" + str(tmp_path / "out.csv"), "--batch_size=8")
  lines = progress_lines("inference", "videos", result.stderr)
  assert lines[0][1] == test_videos and lines[-1] == (test_videos, test_videos, 100.0)


@pytest.mark.slow
def test_ensemble_dry_run_build_and_weight_search_progress(trained, tiny_data, tmp_path):
  for first, last in ((10, 20), (20, 30)):
    name = "avg_e_%d_%d.ckpt" % (first, last)
    run_cli("avg_checkpoints", "--checkpoints_start_end=%d,%d" % (first, last),
            "--prefix=%s/model.ckpt-" % trained, "--output_path=%s/%s" % (trained, name))
  members = ",".join("%s/avg_e_%d_%d.ckpt-0" % (trained, a, b) for a, b in ((10, 20), (20, 30)))
  ensemble = str(tmp_path / "ensemble")
  build = ["--train_dir=" + ensemble, "--checkpoints=" + members, "--float16_flag=True"]
  result = run_cli("build_ensemble", *build, "--dry_run")
  match = re.search(r"planned submission: ([\d,]+) B = tensor data ([\d,]+) B .* vs the limit "
                    r"2\^30 = 1,073,741,824 B: FITS", result.stdout)
  assert match, result.stdout + result.stderr[-2000:]
  assert "dry run: nothing written" in result.stdout
  assert not os.path.exists(ensemble)
  result = run_cli("build_ensemble", *build)
  assert progress_lines("converting the ensemble tensors", "MiB", result.stderr)[-1][2] == 100.0
  data_bytes = sum(os.path.getsize(p) for p in glob.glob(ensemble + "/inference_model.data-*"))
  assert abs(data_bytes - int(match.group(2).replace(",", ""))) < 4096

  held_out = records(tiny_data["validate_pattern"])
  result = run_cli("ensemble_weights", "--train_dir=" + ensemble,
                   "--eval_data_pattern=" + tiny_data["validate_pattern"], "--batch_size=64")
  assert progress_lines("member predictions", "videos", result.stderr)[-1] == (
      held_out, held_out, 100.0)
  searched = progress_lines("weight search", "starting points", result.stderr)
  assert [line[0] for line in searched] == list(range(1, len(searched) + 1))
  assert searched[-1][0] == searched[-1][1] and len(searched) >= 2


@pytest.mark.slow
def test_summary_tags_of_checkpoints_averages_and_ensembles():
  """(In a subprocess: importing eval.py defines its flags, which train.py's would clash with
  in this process.)"""
  code = """
import importlib, json
eval_lib = importlib.import_module("youtube-8m.eval")
print(json.dumps([eval_lib.summary_tag_and_step(*args) for args in (
    ("gs://b/d/model.ckpt-300", 300), ("d/avg_c1h2_1_2.ckpt-0", 0),
    ("d/inference_model_ensemble_YHLS-0", 0, [0.39, 0.26, 0.21, 0.14]),
    ("d/inference_model_ensemble_YHLS-0", 0, [0.25, 0.25, 0.25, 0.25]))]))
"""
  result = run([sys.executable, "-c", code], timeout=120)
  assert json.loads(result.stdout.strip().splitlines()[-1]) == [
      ["Epoch", 300], ["avg_c1h2_1_2.ckpt", 0],
      ["inference_model_ensemble_YHLS_w039_026_021_014", 0],
      ["inference_model_ensemble_YHLS_w025_025_025_025", 0]]


TIMED_UPLOAD_TRAIN = """
import importlib, sys
from absl import app
train = importlib.import_module("youtube-8m.train")
staging = importlib.import_module("youtube-8m.staging")
training_loop = importlib.import_module("youtube-8m.training_loop")
training_loop.EVENT_UPLOAD_SECS = 0  # every step (the real period is 60 s)
push = staging.SyncedDir.push
def logged_push(self, names):
  sys.stderr.write("PUSH %r\\n" % (names,))
  return push(self, names)
staging.SyncedDir.push = logged_push
sys.argv = ["train"] + sys.argv[1:]
train.define_flags()
app.run(train.main)
"""


@pytest.mark.slow
def test_gcs_train_dir_gets_event_files_on_a_timer(gcs_bucket, tiny_data):
  """Between checkpoint exports, train.py uploads the event files of a gs:// train_dir every
  EVENT_UPLOAD_SECS (TensorBoard follows training live)."""
  train_dir = gcs_bucket + "/timed"
  result = run([sys.executable, "-c", TIMED_UPLOAD_TRAIN, "--train_data_pattern=" +
                tiny_data["train_pattern"], "--train_dir=" + train_dir, "--batch_size=16",
                "--num_epochs=100", "--max_steps=4", "--export_model_steps=1000", *MODEL_FLAGS])
  pushes = re.findall(r"^PUSH \['events\.out\.tfevents\.\*'\]$", result.stderr, re.M)
  assert len(pushes) >= 3, result.stderr[-3000:]  # steps 1-3 before the final export at 4
  storage = yt8m("storage")
  assert storage.glob(train_dir + "/events.out.tfevents.*")
