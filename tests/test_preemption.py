"""SIGTERM / SIGINT in every tool (youtube-8m/interrupts.py): a clean stop with one line, the
temporaries removed, nothing incomplete under a final name, the documented exit status; the
same command then finishes the work as an uninterrupted run does; a second signal stops at
once. Real tool processes and real signals, local and on the GCS emulator.

A tool is signalled either mid-way (once a log line of its loop appears) or as soon as its
handlers are installed (SigCgt in /proc/PID/status), before its first safe point: both are
deterministic, no fixed sleep.
"""

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, TINY_FLAGS, cli_env, forkserver, run_cli, yt8m

interrupts = yt8m("interrupts")
storage = yt8m("storage")

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]
TERM, INT = signal.SIGTERM, signal.SIGINT


# ---------------------------------------------------------------------------------------
# The mechanism, in this process (fast).


@pytest.fixture
def absl_records(caplog):
  caplog.set_level(logging.INFO)
  return lambda: [record.getMessage() for record in caplog.records]


def signal_self(signum):
  os.kill(os.getpid(), signum)
  deadline = time.time() + 5
  while interrupts.requested() is None:  # the watcher thread sets it
    assert time.time() < deadline
    time.sleep(0.001)


def test_first_signal_stops_at_the_next_safe_point(tmp_path, absl_records):
  temp_file = str(tmp_path / ".out.tmp-1-ab")
  open(temp_file, "w").close()
  handler = signal.getsignal(TERM)
  with pytest.raises(SystemExit) as stopped:
    with interrupts.handling("tool"):
      interrupts.temporary(temp_file)
      interrupts.check("step 1")  # no signal yet: goes on
      interrupts.kept("out-1")
      signal_self(TERM)
      start = time.time()
      interrupts.sleep(30)  # ended by the signal
      assert time.time() - start < 5
      interrupts.check("step 2")
      raise AssertionError("not stopped")
  assert stopped.value.code == 128 + TERM
  assert not os.path.exists(temp_file)
  assert absl_records()[-1] == ("tool: interrupted by SIGTERM during step 2; kept: out-1; "
                                "removed: %s; exit status 143" % temp_file)
  assert signal.getsignal(TERM) == handler  # restored


def test_resumable_tool_exits_0_and_a_completed_one_says_so(absl_records):
  with pytest.raises(SystemExit) as stopped:
    with interrupts.handling("trainer"):
      interrupts.set_resumable()
      signal_self(INT)
      interrupts.check("training at step 7")
  assert stopped.value.code == 0
  assert absl_records()[-1].startswith("trainer: interrupted by SIGINT during training at "
                                       "step 7; kept: nothing; removed: nothing; exit status 0")
  with interrupts.handling("quick"):
    signal_self(TERM)
  assert absl_records()[-1] == ("quick: SIGTERM came as the work completed: nothing was "
                                "interrupted; kept: nothing")


SECOND_SIGNAL = """
import importlib, os, signal, sys, time
interrupts = importlib.import_module("youtube-8m.interrupts")
with interrupts.handling("busy"):
  interrupts.kept("a.csv")
  temp = interrupts.temporary(sys.argv[1], prefix=True)
  open(temp + ".index", "w").close()
  if sys.argv[2] == "immediate":
    interrupts.set_resumable()
    with interrupts.immediate():
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(30)
  os.kill(os.getpid(), signal.SIGTERM)
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(30)  # never at a safe point: the second signal stops it anyway
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["second", "immediate"])
def test_second_signal_or_immediate_mode_stops_at_once(tmp_path, mode):
  temp = str(tmp_path / ".x.tmp-1-ab")
  start = time.time()
  result = subprocess.run([sys.executable, "-c", SECOND_SIGNAL, temp, mode], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, env=cli_env())
  assert time.time() - start < 20
  assert not glob.glob(temp + "*")
  lines = stop_lines(result.stderr, "busy")
  if mode == "second":
    assert result.returncode == 143
    assert lines == ["busy: second SIGTERM: stopping at once; kept: a.csv; removed: %s; "
                     "exit status 143" % temp]
  else:
    assert result.returncode == 0  # resumable
    assert lines == ["busy: SIGTERM: stopping at once; kept: a.csv; removed: %s; exit "
                     "status 0" % temp]


def test_an_event_file_without_events_is_removed(tmp_path, monkeypatch):
  monkeypatch.delenv("AIP_TENSORBOARD_LOG_DIR", raising=False)
  summaries = yt8m("summaries")
  with tf.Graph().as_default():  # FileWriter is graph-mode only, as in the tools
    for logdir, steps in ((tmp_path / "stopped", []), (tmp_path / "done", [3])):
      writer = summaries.SummaryWriter(str(logdir), filename_suffix=".eval.1")
      [name] = [str(logdir / n) for n in os.listdir(str(logdir))]  # created at once
      assert interrupts._state.temporaries.get(name) is False  # until events are flushed
      for step in steps:
        writer.add_summary(tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(
            tag="x", simple_value=1.0)]), step)
        writer.flush()
        assert name not in interrupts._state.temporaries
      writer.close()
      assert name not in interrupts._state.temporaries
      assert (summary_steps(name) if steps else os.listdir(str(logdir))) == steps


def test_eval_state_is_keyed_on_the_settings(tmp_path):
  eval_lib = yt8m("eval")
  state = eval_lib.EvalState(str(tmp_path), {"pattern": "a"})
  state.add(10, {"gap": 0.5, "hit_at_one": 1, "perr": 1, "map": 1, "loss": 1, "examples": 4})
  assert eval_lib.EvalState(str(tmp_path), {"pattern": "a"}).steps() == {10}
  other = eval_lib.EvalState(str(tmp_path), {"pattern": "b"})  # another data pattern
  assert other.steps() == set()
  other.add(20, {"gap": 0.1, "hit_at_one": 1, "perr": 1, "map": 1, "loss": 1, "examples": 4})
  assert eval_lib.EvalState(str(tmp_path), {"pattern": "a"}).steps() == {10}
  path = str(tmp_path / "eval_state.json")
  with open(path, "w") as handle:
    handle.write("{")
  with pytest.raises(ValueError, match=re.escape(path)):
    eval_lib.EvalState(str(tmp_path), {"pattern": "a"})


# ---------------------------------------------------------------------------------------
# Tool processes.


def stop_lines(text, tool):
  """The interruption lines of tool in a log."""
  return re.findall(r"^(?:.*?(?:\] |:absl:))?(%s: (?:interrupted by|(?:second )?SIG\w+: "
                    r"stopping at once).*)$" % tool, text, re.M)


def summary_steps(path):
  return [event.step for event in tf.compat.v1.train.summary_iterator(path)
          if event.HasField("summary")]


def leftovers(pid, *directories):
  """Temporary files of process pid in the directories, the temporary directory and the
  storage cache, and any temporary name at all in the directories (ls -a)."""
  found = []
  for directory in directories:
    for root, dirs, files in os.walk(directory):
      found += [os.path.join(root, n) for n in dirs + files if ".tmp-" in n or ".tempstate" in n]
  for directory in (tempfile.gettempdir(), storage.default_cache_dir()):
    found += glob.glob(os.path.join(directory, ".*.tmp-%d-*" % pid))
  return found


_started = []  # Tools not finished yet: killed after the test (the fork server runs one at a time)


@pytest.fixture(autouse=True)
def _no_tool_left_running():
  yield
  while _started:
    tool = _started.pop()
    with contextlib.suppress(ProcessLookupError):
      os.kill(tool.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
      tool.finish(60)


class Tool(object):
  """A tool process (forked by the test fork server when it can), its log in a file."""

  def __init__(self, log_dir, module, args, env=None):
    self.module = module
    self.log = os.path.join(str(log_dir), "%s-%d.log" % (module, time.time_ns()))
    argv = [sys.executable, "-m", "youtube-8m." + module] + list(args)
    env = cli_env(env)
    server = forkserver()
    with open(self.log, "w") as handle:
      if server is not None and server.can_serve(argv, REPO_ROOT, env):
        child = server.spawn(argv, REPO_ROOT, env, handle.fileno(), handle.fileno())
        self.pid, self._wait = child.pid, lambda timeout: child.wait(timeout)[0]
      else:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=handle,
                                   stderr=subprocess.STDOUT)
        self.pid, self._wait = process.pid, process.wait
    self.code = None
    _started.append(self)

  def text(self):
    with open(self.log) as handle:
      return handle.read()

  def wait_until(self, condition, what, timeout=180, interval=0.002):
    deadline = time.time() + timeout
    while not condition():
      try:
        os.kill(self.pid, 0)
      except ProcessLookupError:
        raise AssertionError("%s exited before %s:\n%s" % (self.module, what,
                                                            self.text()[-3000:]))
      assert time.time() < deadline, "no %s:\n%s" % (what, self.text()[-3000:])
      time.sleep(interval)

  def wait_for_line(self, pattern):
    self.wait_until(lambda: re.search(pattern, self.text(), re.M), repr(pattern))

  def signal_mask(self, field):
    """The signal set `field` (SigCgt: caught, ShdPnd: pending) of /proc/PID/status, or 0
    once the process has exited (wait_until says so)."""
    try:
      with open("/proc/%d/status" % self.pid) as handle:
        status = handle.read()
    except OSError:
      return 0
    return int(re.search(r"^%s:\s*([0-9a-f]+)" % field, status, re.M).group(1), 16)

  def signal(self, *signums, when="handlers"):
    """Sends signums once `when` (a log line pattern, or "handlers": SIGTERM is caught) is
    there, each once the one before was delivered (a pending signal absorbs the same one)."""
    if when == "handlers":
      self.wait_until(lambda: self.signal_mask("SigCgt") & (1 << (TERM - 1)),
                      "the signal handlers")
    else:
      self.wait_for_line(when)
    for signum in signums:
      os.kill(self.pid, signum)
      self.wait_until(lambda: not self.signal_mask("ShdPnd") & (1 << (signum - 1)),
                      "the delivery of %s" % signum.name)
    return self

  def finish(self, timeout=300):
    if self in _started:
      _started.remove(self)
    self.code = self._wait(timeout)
    return self.code, self.text()


def check_stopped(tool, signum, during, code=None, second=False):
  """tool exited with the documented status and one line; returns the line."""
  status, text = tool.finish()
  expected = (128 + signum) if code is None else code
  assert status == expected, text[-3000:]
  lines = stop_lines(text, tool.module)
  assert len(lines) == 1, text[-3000:]
  name = signal.Signals(signum).name
  if second:
    assert lines[0].startswith("%s: second %s: stopping at once; kept: " % (tool.module, name))
  else:
    assert lines[0].startswith("%s: interrupted by %s during %s" % (tool.module, name, during))
  assert lines[0].split("; ")[-1].startswith("exit status %d" % expected)
  assert "Traceback" not in text
  return lines[0]


def checkpoint_tensors(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def assert_same_tensors(a, b):
  ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
  assert sorted(ta) == sorted(tb)
  for name in ta:
    np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


# Short videos: the tools' runs are short, 400 test videos in batches of 2 long enough to stop.
DATASET = dict(num_train_files=2, num_validate_files=2, num_test_files=2, videos_per_file=40,
               test_videos_per_file=200, num_classes=40, seed=3, difficulty=0.2,
               min_frames=20, max_frames=40, levels="frame", num_threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  frame = os.path.join(str(tmp_path_factory.mktemp("preempt_data")), "frame")
  yt8m("synthetic_data").generate(os.path.dirname(frame), **DATASET)
  return {"train": "--train_data_pattern=%s/train*.tfrecord" % frame,
          "validate": "--eval_data_pattern=%s/validate*.tfrecord" % frame,
          "test": "--input_data_pattern=%s/test*.tfrecord" % frame}


def eval_flags(data, train_dir):
  return ["--train_dir=" + train_dir, data["validate"], "--noeval_holdout_only",
          "--batch_size=8", "--num_readers=1"]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
  """A train_dir whose training was stopped by SIGINT a few steps after its first export
  (train.py's resuming is test_pipeline's): two checkpoints."""
  root = tmp_path_factory.mktemp("preempt_train")
  train_dir = str(root / "train")
  args = [data["train"], "--train_dir=" + train_dir, "--batch_size=8", "--max_steps=1000",
          "--export_model_steps=10", "--num_epochs=100", "--num_readers=1",
          "--random_seed=1", "--base_learning_rate=0.01"] + MODEL_FLAGS
  stopped = Tool(root, "train", args).signal(INT, when=r"training step 12 \|")
  line = check_stopped(stopped, INT, "training at step", code=0)
  steps = [step for step, _ in yt8m("checkpoint_utils").list_checkpoints(train_dir)]
  return {"dir": train_dir, "root": root, "line": line, "steps": steps,
          "leftovers": leftovers(stopped.pid, train_dir)}


@pytest.fixture(scope="module")
def reference(trained, data):
  """eval of the list of the trained checkpoints, stopped by SIGTERM once the first is
  evaluated, then the same command: the GAPs of every step, the polling test's reference."""
  results = str(trained["root"] / "reference.json")
  args = eval_flags(data, trained["dir"]) + ["--results_json=" + results, "--checkpoint=" +
                                             ",".join("model.ckpt-%d" % s for s in trained["steps"])]
  stopped = Tool(trained["root"], "eval", args).signal(
      TERM, when=r"epoch/eval number %d " % trained["steps"][0])
  line = check_stopped(stopped, TERM, "")
  with open(results) as handle:
    first = json.load(handle)
  run_cli("eval", *args)
  with open(results) as handle:
    gaps = {int(r["global_step"]): r["gap"] for r in json.load(handle)}
  return {"line": line, "first": first, "gaps": gaps,
          "leftovers": leftovers(stopped.pid, trained["dir"])}


@pytest.mark.slow
def test_train_sigint_exports_the_step_and_exits_0(trained):
  stop = int(re.search(r"during training at step (\d+); kept: %s/model\.ckpt-(\d+);" % (
      re.escape(trained["dir"])), trained["line"]).group(1))
  assert trained["line"].endswith("exit status 0 (the same command goes on from there)")
  assert trained["steps"] == [10, stop] and stop >= 12
  assert trained["leftovers"] == []


@pytest.mark.slow
def test_eval_of_a_list_sigterm_keeps_what_it_evaluated(trained, reference):
  first, train_dir = trained["steps"][0], trained["dir"]
  assert [int(r["global_step"]) for r in reference["first"]] == [first]
  assert re.search(r"kept: %s/inference_model_%d, \S+/reference\.json(, |;)" % (
      re.escape(train_dir), first), reference["line"]), reference["line"]
  assert reference["leftovers"] == []
  assert sorted(reference["gaps"]) == trained["steps"]
  assert reference["gaps"][first] == reference["first"][0]["gap"]
  for path in glob.glob(os.path.join(train_dir, "events.out.tfevents.*")):
    assert summary_steps(path), path  # no event file without events


def copy_checkpoints(train_dir, steps, target):
  """The model_flags.json and model.ckpt-<step> files of train_dir, copied to target (a
  local directory or gs://)."""
  names = ["model_flags.json"] + [name for name in os.listdir(train_dir)
                                   for step in steps if name.startswith("model.ckpt-%d." % step)]
  for name in sorted(names, key=lambda n: n.endswith(".index")):  # the index last
    storage.copy(os.path.join(train_dir, name), target + "/" + name)


def state_gaps(train_dir):
  [run] = json.loads(storage.read_text(train_dir + "/eval_state.json"))["runs"]
  return {entry["step"]: entry["gap"] for entry in run["evaluated"]}


@pytest.mark.slow
def test_eval_polling_on_gcs_goes_on_after_sigint(trained, reference, data, gcs_bucket):
  """Polling eval of a gs:// train_dir, stopped by SIGINT once the first checkpoint is
  evaluated (exit 0); then the same command, stopped once every step is in the state: the
  GAPs of an uninterrupted eval, no checkpoint evaluated twice."""
  train_dir, steps = gcs_bucket + "/poll", trained["steps"]
  copy_checkpoints(trained["dir"], steps, train_dir)
  args = eval_flags(data, train_dir) + ["--eval_interval_secs=1"]
  first = Tool(trained["root"], "eval", args).signal(INT, when=r"epoch/eval number %d "
                                                     % steps[0])
  line = check_stopped(first, INT, "", code=0)
  assert re.search(r"kept: .*%s/eval_state\.json \(\d checkpoint\(s\), step %d" % (
      re.escape(train_dir), steps[0]), line), line
  assert steps[0] in state_gaps(train_dir)
  second = Tool(trained["root"], "eval", args)
  second.wait_until(lambda: set(state_gaps(train_dir)) == set(steps), "every step evaluated",
                    interval=0.2)
  check_stopped(second.signal(TERM), TERM, "polling %s for new checkpoints" % train_dir, code=0)
  evaluated = re.findall(r"epoch/eval number (\d+) ", first.text() + second.text())
  assert sorted(map(int, evaluated)) == steps, evaluated
  assert state_gaps(train_dir) == reference["gaps"]
  events = storage.glob(train_dir + "/events.out.tfevents.*")
  assert sorted(step for path in events for step in summary_steps(storage.stage_file(path))) \
      == steps  # each evaluation's summary once, no event file without one
  assert not [p for p in storage.list_files(gcs_bucket) if ".tmp" in p]
  assert leftovers(first.pid) == leftovers(second.pid) == []


@pytest.fixture(scope="module")
def ensemble(trained):
  """A 2-model float16 ensemble of the trained model's first and last checkpoints."""
  ens = str(trained["root"] / "ensemble")
  sources = ",".join("%s/model.ckpt-%d" % (trained["dir"], s) for s in trained["steps"])
  args = ["--train_dir=" + ens, "--checkpoints=" + sources]
  run_cli("build_ensemble", *args)
  return {"dir": ens, "args": args}


@pytest.mark.slow
def test_build_ensemble_stops_at_once_on_a_second_sigterm_then_builds_it(ensemble, tmp_path):
  ens = str(tmp_path / "ens")
  args = ["--train_dir=" + ens] + ensemble["args"][1:]
  # "Building" comes before the ensemble graph is built: no safe point for a while
  tool = Tool(tmp_path, "build_ensemble", args).signal(TERM, TERM, when=r"Building ")
  check_stopped(tool, TERM, "", second=True)
  assert not os.path.exists(ens) or os.listdir(ens) == []
  assert leftovers(tool.pid, str(tmp_path)) == []
  run_cli("build_ensemble", *args)
  assert_same_tensors(ens + "/inference_model", ensemble["dir"] + "/inference_model")
  with open(ens + "/model_flags.json") as a, open(ensemble["dir"] + "/model_flags.json") as b:
    assert json.load(a) == json.load(b)


@pytest.mark.slow
def test_overwrite_float16_ckpt_sigterm_then_the_same_tensors(ensemble, trained, tmp_path):
  ens = str(tmp_path / "ens")
  shutil.copytree(ensemble["dir"], ens)
  args = ["--train_dir=" + ens, "--inference_model=inference_model", "--out_name=filled",
          "--checkpoints=" + ensemble["args"][1].split("=", 1)[1]]
  tool = Tool(tmp_path, "overwrite_float16_ckpt", args).signal(TERM)
  check_stopped(tool, TERM, "")  # reading the sources or converting them
  assert sorted(os.listdir(ens)) == sorted(os.listdir(ensemble["dir"]))
  assert leftovers(tool.pid, ens) == []
  run_cli("overwrite_float16_ckpt", *args)
  assert_same_tensors(ens + "/filled-0", ens + "/inference_model")


@pytest.mark.slow
def test_avg_checkpoints_sigterm_then_the_same_average(trained, tmp_path):
  output = str(tmp_path / "avg" / "avg.ckpt")
  args = ["--prefix=%s/model.ckpt-" % trained["dir"], "--checkpoints_start_end=0,1000",
          "--output_path=" + output]
  tool = Tool(tmp_path, "avg_checkpoints", args).signal(TERM, when=r"averaging \d+ variables")
  check_stopped(tool, TERM, "")
  assert not glob.glob(output + "*") and leftovers(tool.pid, str(tmp_path)) == []
  run_cli("avg_checkpoints", *args)
  inputs = [checkpoint_tensors("%s/model.ckpt-%d" % (trained["dir"], s))
            for s in trained["steps"]]
  averaged = checkpoint_tensors(output + "-0")
  for name, value in averaged.items():
    if name != "global_step":
      mean = np.mean([t[name].astype(np.float64) for t in inputs], axis=0)
      np.testing.assert_allclose(value, mean, rtol=1e-6, err_msg=name)


@pytest.mark.slow
def test_ensemble_weights_sigterm(ensemble, data, tmp_path):
  results = str(tmp_path / "weights.json")
  tool = Tool(tmp_path, "ensemble_weights", [
      "--train_dir=" + ensemble["dir"], "--checkpoint_file=inference_model", data["validate"],
      "--noeval_holdout_only", "--batch_size=8", "--results_json=" + results]).signal(TERM)
  check_stopped(tool, TERM, "member predictions: 0/")
  assert not os.path.exists(results) and leftovers(tool.pid, str(tmp_path)) == []


@pytest.fixture(scope="module")
def submission(trained, reference, data):
  """The uninterrupted inference of the single model the reference eval exported as
  inference_model_<first step> (a small graph: the tool starts fast): CSV and tgz."""
  root = str(trained["root"])
  args = ["--train_dir=" + trained["dir"], data["test"], "--batch_size=2",
          "--inference_model_file=inference_model_%d" % trained["steps"][0]]
  run_cli("inference", *args, "--output_file=%s/reference.csv" % root,
          "--output_model_tgz=%s/reference.tgz" % root)
  with open(root + "/reference.csv", "rb") as handle:
    return {"csv": handle.read(), "tgz": root + "/reference.tgz", "args": args}


@pytest.mark.slow
def test_inference_stopped_mid_way_leaves_nothing(submission, tmp_path):
  out = str(tmp_path / "out")
  os.makedirs(out)
  args = submission["args"] + ["--output_file=%s/sub.csv" % out,
                               "--output_model_tgz=%s/sub.tgz" % out]
  for signums in ((TERM,), (TERM, TERM)):  # SIGINT: train's, eval's and model_size's tests
    tool = Tool(tmp_path, "inference", args).signal(
        *signums, when=r"num examples processed: [1-9]")
    line = check_stopped(tool, signums[0], "inference: ", second=len(signums) > 1)
    assert "kept: nothing; removed: %s/.sub.csv.tmp-%d-" % (out, tool.pid) in line, line
    assert os.listdir(out) == [] and leftovers(tool.pid, out) == []  # ls -a: nothing


@pytest.mark.slow
def test_inference_to_gcs_sigterm_then_the_same_csv_and_tgz(submission, gcs_bucket, tmp_path):
  args = submission["args"] + ["--output_file=%s/sub.csv" % gcs_bucket,
                               "--output_model_tgz=%s/sub.tgz" % gcs_bucket]
  tool = Tool(tmp_path, "inference", args).signal(TERM, when=r"num examples processed: [1-9]")
  line = check_stopped(tool, TERM, "inference: ")
  assert "removed: %s/.yt8m-output.tmp-%d-" % (tempfile.gettempdir(), tool.pid) in line, line
  assert storage.list_files(gcs_bucket) == {} and leftovers(tool.pid) == []
  run_cli("inference", *args)  # the same command
  assert storage.read_bytes(gcs_bucket + "/sub.csv") == submission["csv"]
  with tarfile.open(storage.stage_file(gcs_bucket + "/sub.tgz")) as a, tarfile.open(
      submission["tgz"]) as b:
    assert [(m.name, m.size) for m in a] == [(m.name, m.size) for m in b]


@pytest.mark.slow
def test_model_size_sigint(submission, tmp_path):
  tgz = str(tmp_path / "big.tgz")  # 16 MiB to read before the model files
  junk = tmp_path / "junk.bin"
  junk.write_bytes(np.random.default_rng(0).bytes(16 << 20))
  with tarfile.open(submission["tgz"]) as source, tarfile.open(tgz, "w:gz",
                                                              compresslevel=1) as archive:
    archive.add(str(junk), arcname="junk.bin")
    for member in source:
      archive.addfile(member, source.extractfile(member))
  tool = Tool(tmp_path, "model_size", ["--model_tgz=" + tgz]).signal(INT)
  check_stopped(tool, INT, "reading %s" % tgz)
  assert leftovers(tool.pid) == []


@pytest.mark.slow
def test_synthetic_data_sigterm_then_the_same_files(tmp_path):
  args = ["--num_train_files=3", "--num_validate_files=0", "--num_test_files=0",
          "--videos_per_file=30", "--num_classes=40", "--min_frames=100", "--max_frames=200",
          "--levels=frame", "--num_threads=1", "--seed=4"]
  out = str(tmp_path / "out")
  tool = Tool(tmp_path, "synthetic_data", ["--output_dir=" + out] + args)
  tool.wait_until(lambda: glob.glob(out + "/frame/.*.tmp-*"), "a temporary file")
  os.kill(tool.pid, TERM)
  line = check_stopped(tool, TERM, "writing %s/frame/train" % out)
  assert "kept: " in line and leftovers(tool.pid, out) == []
  reference = str(tmp_path / "reference")
  yt8m("synthetic_data").generate(
      reference, num_train_files=3, num_validate_files=0, num_test_files=0,
      videos_per_file=30, num_classes=40, min_frames=100, max_frames=200, levels="frame",
      num_threads=1, seed=4)

  def same_files():
    for name in os.listdir(out + "/frame"):  # what the stop left is complete
      with open(out + "/frame/" + name, "rb") as a, open(reference + "/frame/" + name,
                                                         "rb") as b:
        assert a.read() == b.read(), name
    return sorted(os.listdir(out + "/frame"))

  assert len(same_files()) < 3
  run_cli("synthetic_data", "--output_dir=" + out, *args)
  assert same_files() == sorted(os.listdir(reference + "/frame"))
