"""Faults: the tools stop with one clear line and leave only complete outputs behind."""

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, cli_env, corrupt, run, run_cli, spawn_cli, yt8m

# Every test here starts tool processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

storage = yt8m("storage")
tf1 = tf.compat.v1

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=8"]


def one_error_line(result, returncode=1):
  """The tool's one 'ERROR: ' line, after checking the exit status and that no traceback was
  printed. (TensorFlow's own logger may also print 'ERROR:tensorflow:...' lines.)"""
  assert result.returncode == returncode, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  return errors[0]


def train_args(tiny_data, train_dir, *extra, model_flags=MODEL_FLAGS):
  return ["--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
          "--batch_size=8", "--export_model_steps=10", "--num_epochs=100"] + model_flags + list(
              extra)


def assert_restorable(prefix, step):
  """Every tensor of the checkpoint reads (CRC-checked) and global_step is step."""
  reader = tf.train.load_checkpoint(prefix)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)
  assert reader.get_tensor("global_step") == step


def leftovers(directory):
  """Temporary files of interrupted writes: ours (.NAME.tmp-PID-...) and TensorFlow's."""
  return sorted(name for name in os.listdir(directory)
                if ".tmp" in name or "tempstate" in name)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  """One train.py run of train_args to step 30 (model.ckpt-10, -20, -30) for the tests that
  start from a trained train_dir; each gets a copy (trained_copy)."""
  train_dir = str(tmp_path_factory.mktemp("faults_trained") / "run")
  run_cli("train", *train_args(tiny_data, train_dir, "--max_steps=30"))
  return train_dir


def trained_copy(trained, train_dir, step):
  """train_dir as train.py with train_args and --max_steps=step leaves it (its checkpoints
  up to step and model_flags.json: what the tools read of it); returns train_dir."""
  os.makedirs(train_dir)
  for name in os.listdir(trained):
    kept = re.match(r"model\.ckpt-(\d+)\.", name)
    if name == "model_flags.json" or (kept and int(kept.group(1)) <= step):
      shutil.copy(os.path.join(trained, name), train_dir)
  return train_dir


def dead_pid():
  """The pid of a process that has exited."""
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


def test_divergence_stops_training_without_exporting_nan(tiny_data, trained, tmp_path):
  """A loss that becomes NaN stops training at that step, names the last good checkpoint,
  and no checkpoint holding NaN/inf is written (Adam's step size is the learning rate, so
  1e30 overflows the weights at once)."""
  train_dir = str(tmp_path / "run")
  common = ["--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
            "--batch_size=8", "--export_model_steps=10", "--num_epochs=100"] + MODEL_FLAGS
  trained_copy(trained, train_dir, 10)
  result = run_cli("train", *common, "--max_steps=40", "--base_learning_rate=1e30",
                   "--clip_gradient_norm=0", check=False)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  match = re.search(r"training diverged at step (\d+): the (loss is (nan|inf)|weights hold NaN "
                    r"or inf), not exported; the last good checkpoint is (\S+)/model\.ckpt-10;",
                    errors[0])
  assert match and int(match.group(1)) > 10, errors[0]
  indexes = sorted(name for name in os.listdir(train_dir) if name.endswith(".index"))
  assert indexes == ["model.ckpt-10.index"]
  reader = tf.train.load_checkpoint(os.path.join(train_dir, "model.ckpt-10"))
  for name, dtype in reader.get_variable_to_dtype_map().items():
    if dtype.is_floating:
      assert np.isfinite(reader.get_tensor(name)).all(), name


def test_missing_checkpoint_is_one_line_naming_it(tiny_data, trained, tmp_path):
  """eval's --checkpoint and train's --checkpoint_file (warm start) name a checkpoint that is
  not there: exit 1, one line naming the flag and the missing index."""
  # a trained train_dir (a copy of the module's run, not a train.py run of its own)
  train_dir = trained_copy(trained, str(tmp_path / "run"), 10)
  missing = os.path.join(train_dir, "model.ckpt-999")
  for flag, result in (
      ("checkpoint", run_cli("eval", "--train_dir=" + train_dir,
                             "--checkpoint=model.ckpt-999.index",
                             "--eval_data_pattern=" + tiny_data["validate_pattern"],
                             "--run_once=True", check=False)),
      ("checkpoint_file", run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
                                  "--train_dir=" + str(tmp_path / "warm"),
                                  "--checkpoint_file=" + missing, "--max_steps=1",
                                  *MODEL_FLAGS, check=False))):
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert errors == ["ERROR: --%s: no checkpoint %s (missing %s.index)"
                      % (flag, missing, missing)], result.stderr[-2000:]


def kill_when(process, pattern, timeout=300):
  """SIGKILLs process as soon as a file matching the glob exists; returns the matches."""
  deadline = time.time() + timeout
  while not glob.glob(pattern):
    assert process.poll() is None, "exited (%s) before %s appeared" % (process.returncode,
                                                                       pattern)
    assert time.time() < deadline, "timed out waiting for %s" % pattern
    time.sleep(0.002)
  process.kill()
  process.wait()
  return glob.glob(pattern)


def test_kill_9_mid_checkpoint_write_then_same_command_resumes(tiny_data, tmp_path):
  """Real kill -9 while a large (~220 MB) checkpoint is being written: train.py is killed as
  soon as TF's BundleWriter temporary data file of model.ckpt-20 appears, avg_checkpoints as
  soon as its hidden temporary output appears. The same commands run again resume from (or
  redo) the newest complete checkpoint, and the leftovers of the killed writes are removed."""
  train_dir = str(tmp_path / "run")
  args = train_args(tiny_data, train_dir, "--max_steps=20", model_flags=TINY_FLAGS + [
      "--netvlad_cluster_size=64", "--netvlad_hidden_size=256"])
  with open(str(tmp_path / "train.log"), "w") as log:
    # Forked by the fork server (no TensorFlow import of its own): still a process of its
    # own, which kill_when SIGKILLs by its pid.
    process = spawn_cli("train", *args, stdout=subprocess.DEVNULL, stderr=log)
    try:
      kill_when(process, os.path.join(train_dir, "model.ckpt-20.data-*.tempstate*"))
    finally:
      process.kill()
  assert os.path.exists(os.path.join(train_dir, "model.ckpt-10.index"))
  assert not os.path.exists(os.path.join(train_dir, "model.ckpt-20.index"))
  assert any("tempstate" in name for name in leftovers(train_dir)), os.listdir(train_dir)

  result = run_cli("train", *args)
  assert "Resumed from %s/model.ckpt-10 (step 10)" % train_dir in result.stderr
  assert "left by an interrupted save" in result.stderr
  assert leftovers(train_dir) == []
  assert_restorable(os.path.join(train_dir, "model.ckpt-20"), 20)

  avg_args = ["--prefix=%s/model.ckpt-" % train_dir, "--checkpoints=10,20",
              "--output_path=%s/avg" % train_dir]
  process = spawn_cli("avg_checkpoints", *avg_args, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
  try:
    killed = kill_when(process, os.path.join(train_dir, ".avg-0.tmp-*"))
  finally:
    process.kill()
  assert not os.path.exists(os.path.join(train_dir, "avg-0.index"))
  assert [name for name in leftovers(train_dir) if name.startswith(".avg-0.tmp-")], killed
  result = run_cli("avg_checkpoints", *avg_args)
  assert "left by an interrupted write" in result.stderr
  assert leftovers(train_dir) == []
  assert_restorable(os.path.join(train_dir, "avg-0"), 0)


def test_leftovers_of_killed_writes_are_removed_and_live_ones_kept(tiny_data, trained,
                                                                  tmp_path):
  """Simulated leftovers of a kill -9 (a kill at the right moment of these small writes is not
  deterministic): temporary files named with a dead pid, as build_ensemble,
  overwrite_float16_ckpt (checkpoint_utils.write_checkpoint) and model_flags.json
  (storage.local_output) name theirs, plus a Saver's data file without its index. The next
  run removes them, keeps a temporary file of a live process, and writes complete outputs."""
  train_dir = str(tmp_path / "run")
  trained_copy(trained, train_dir, 20)
  ens_dir = str(tmp_path / "ens")
  os.makedirs(ens_dir)
  dead = dead_pid()
  killed = [".inference_model.tmp-%d-0badf00d.data-00000-of-00001" % dead,
            ".inference_model.tmp-%d-0badf00d.index" % dead,
            ".model_flags.json.tmp-%d-0badf00d" % dead,
            ".ens16-0.tmp-%d-0badf00d.data-00000-of-00001" % dead]
  live = ".inference_model.tmp-%d-0badf00d.index" % os.getpid()
  for name in killed + [live]:
    with open(os.path.join(ens_dir, name), "wb") as handle:
      handle.write(b"partial")
  sources = "%s/model.ckpt-10,%s/model.ckpt-20" % (train_dir, train_dir)
  run_cli("build_ensemble", "--train_dir=" + ens_dir, "--checkpoints=" + sources)
  run_cli("overwrite_float16_ckpt", "--train_dir=" + ens_dir, "--inference_model=inference_model",
          "--out_name=ens16", "--checkpoints=" + sources)
  assert leftovers(ens_dir) == [live]
  assert_restorable(os.path.join(ens_dir, "inference_model"), 0)
  assert_restorable(os.path.join(ens_dir, "ens16-0"), 0)

  # A Saver killed after renaming its data file but before writing the index.
  shutil.copy(os.path.join(train_dir, "model.ckpt-20.data-00000-of-00001"),
              os.path.join(train_dir, "model.ckpt-30.data-00000-of-00001"))
  result = run_cli("train", *train_args(tiny_data, train_dir, "--max_steps=21"))
  assert "Removing %s/model.ckpt-30.data-00000-of-00001" % train_dir in result.stderr
  assert "Resumed from %s/model.ckpt-20 (step 20)" % train_dir in result.stderr
  assert not os.path.exists(os.path.join(train_dir, "model.ckpt-30.data-00000-of-00001"))


def test_broken_newest_checkpoint(tiny_data, trained, tmp_path):
  """A truncated newest checkpoint (index present): training resumes from the newest one that
  reads, saying which it skipped and why, and exports over it. A corrupt one (flipped bytes:
  TF's CRC check) is named in one line by eval, avg_checkpoints, build_ensemble and
  overwrite_float16_ckpt, which write nothing."""
  train_dir = str(tmp_path / "run")
  trained_copy(trained, train_dir, 30)
  data = os.path.join(train_dir, "model.ckpt-30.data-00000-of-00001")
  broken_dir = str(tmp_path / "broken")
  os.makedirs(broken_dir)
  for path in glob.glob(os.path.join(train_dir, "model.ckpt-30.*")) + [
      os.path.join(train_dir, "model_flags.json")]:
    shutil.copy(path, broken_dir)
  broken = os.path.join(broken_dir, "model.ckpt-30")
  corrupt(broken + ".data-00000-of-00001")
  with open(data, "r+b") as handle:
    handle.truncate(os.path.getsize(data) // 2)

  result = run_cli("train", *train_args(tiny_data, train_dir, "--max_steps=30"))
  assert re.search(r"Skipping %s/model\.ckpt-30: cannot read checkpoint \S+/model\.ckpt-30 "
                   r"\(truncated or corrupt\?\): " % re.escape(train_dir), result.stderr)
  assert ("Resumed from %s/model.ckpt-20 (step 20) instead of the unreadable model.ckpt-30"
          % train_dir) in result.stderr
  assert_restorable(os.path.join(train_dir, "model.ckpt-30"), 30)

  before = sorted(os.listdir(broken_dir))
  good = os.path.join(train_dir, "model.ckpt-20")
  ens_dir = str(tmp_path / "ens")
  run_cli("build_ensemble", "--train_dir=" + ens_dir, "--checkpoints=%s,%s" % (good, good))
  ens_before = sorted(os.listdir(ens_dir))
  for result in (
      run_cli("eval", "--train_dir=" + broken_dir, "--checkpoint_file=model.ckpt-30",
              "--eval_data_pattern=" + tiny_data["validate_pattern"], check=False),
      run_cli("avg_checkpoints", "--checkpoints=%s,%s" % (good, broken),
              "--output_path=%s/avg" % broken_dir, check=False),
      run_cli("build_ensemble", "--train_dir=%s/ens" % broken_dir,
              "--checkpoints=%s,%s" % (good, broken), check=False),
      run_cli("overwrite_float16_ckpt", "--train_dir=" + ens_dir,
              "--inference_model=inference_model", "--out_name=ens16",
              "--checkpoints=%s,%s" % (good, broken), check=False)):
    error = one_error_line(result)
    assert error.startswith("ERROR: cannot read checkpoint %s (truncated or corrupt?): " % broken)
    assert "Checksum does not match" in error, error
  # eval opened its event file before reading the checkpoint: that is all there is
  assert [name for name in sorted(os.listdir(broken_dir))
          if not name.startswith("events.out.tfevents.")] == before
  assert sorted(os.listdir(ens_dir)) == ens_before


@contextlib.contextmanager
def small_filesystem(path, size):
  """A real tmpfs of size mounted at path (root only); skips the test where mounting fails."""
  os.makedirs(path)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip("cannot mount a tmpfs here (%s): the disk-full test needs one"
                % mounted.stderr.strip())
  try:
    yield path
  finally:
    subprocess.run(["umount", path], check=True)


def fill(directory, leave_bytes):
  """Fills the file system of directory until leave_bytes are free."""
  stat = os.statvfs(directory)
  with open(os.path.join(directory, "filler"), "ab") as handle:
    handle.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_bytes, 0))


def test_disk_full(tiny_data, trained, tmp_path):
  """A real 3.6 MiB tmpfs (3700k): train.py fills it with its event file and model.ckpt-10, then
  cannot write model.ckpt-20; avg_checkpoints cannot write its average (into a directory it
  creates), eval its inference checkpoint, nor --results_json. Each exits 1 with one line
  naming the user's path; model.ckpt-10 stays restorable; no partial or temporary file."""
  train_dir = trained_copy(trained, str(tmp_path / "run"), 10)
  with small_filesystem(str(tmp_path / "disk"), "3700k") as disk:
    full_dir = os.path.join(disk, "run")
    error = one_error_line(run_cli("train", *train_args(tiny_data, full_dir, "--max_steps=40"),
                                   check=False))
    assert re.match(r"ERROR: cannot write checkpoint %s/model\.ckpt-20: .*No space left on "
                    r"device$" % re.escape(full_dir), error), error
    assert_restorable(os.path.join(full_dir, "model.ckpt-10"), 10)
    assert [name for name in os.listdir(full_dir) if "ckpt-20" in name or ".tmp" in name] == []

    fill(disk, 100 << 10)
    out_dir = os.path.join(disk, "new", "dir")
    error = one_error_line(run_cli(
        "avg_checkpoints", "--prefix=%s/model.ckpt-" % train_dir, "--checkpoints=10",
        "--output_path=%s/avg" % out_dir, check=False))
    assert re.match(r"ERROR: cannot write checkpoint %s/avg-0: .*No space left on device$"
                    % re.escape(out_dir), error), error
    assert os.listdir(out_dir) == []
    error = one_error_line(run_cli(
        "eval", "--train_dir=" + full_dir, "--checkpoint_file=model.ckpt-10",
        "--eval_data_pattern=" + tiny_data["validate_pattern"], check=False))
    assert re.match(r"ERROR: cannot write (checkpoint %s/inference_model_10: .*|the event file "
                    r"%s/events\.out\.tfevents\.\S+; )No space left on device$"
                    % (re.escape(full_dir), re.escape(full_dir)), error), error
    assert [name for name in os.listdir(full_dir) if "inference" in name or ".tmp" in name] == []
    fill(disk, 0)
    results = os.path.join(disk, "results", "eval.json")
    error = one_error_line(run_cli(
        "eval", "--train_dir=" + train_dir, "--checkpoint_file=model.ckpt-10",
        "--eval_data_pattern=" + tiny_data["validate_pattern"], "--results_json=" + results,
        check=False))
    assert error == "ERROR: cannot write %s: No space left on device" % results
    assert os.listdir(os.path.dirname(results)) == []
    assert_restorable(os.path.join(full_dir, "model.ckpt-10"), 10)


def test_failed_meta_write_keeps_the_previous_checkpoint_newest(tmp_path):
  """A Saver writes the data and the index, then the `checkpoint` state file, then the .meta:
  when the .meta fails (a full disk; here a directory in its place, so that its rename fails
  at the same point every time), train.py's export of that step is undone: no file of
  model.ckpt-20, no temporary, and the state file as it was, naming model.ckpt-10."""
  training_loop = yt8m("training_loop")
  train_dir = str(tmp_path / "run")
  prefix = os.path.join(train_dir, "model.ckpt")
  graph = tf.Graph()
  with graph.as_default():
    tf1.train.create_global_step()
    tf1.get_variable("weights", [64, 64])
    saver = tf1.train.Saver()
    with tf1.Session(graph=graph) as sess:
      sess.run(tf1.global_variables_initializer())
      saver.save(sess, prefix, global_step=10)
      state = os.path.join(train_dir, "checkpoint")
      before = open(state).read()
      os.makedirs(prefix + "-20.meta")
      exporter = training_loop.Exporter(sess, saver, tf.constant(True), train_dir, None, None,
                                        10)
      with pytest.raises(IOError, match=r"^cannot write checkpoint %s-20: .*Is a directory"
                         % re.escape(prefix)):
        exporter.export(20)
  assert exporter.saved == 10
  assert [name for name in os.listdir(train_dir) if "ckpt-20" in name] == ["model.ckpt-20.meta"]
  assert os.path.isdir(prefix + "-20.meta")
  assert leftovers(train_dir) == []
  assert open(state).read() == before
  assert tf.train.latest_checkpoint(train_dir) == prefix + "-10"


def run_without_root_permissions(module, *args):
  """Runs a tool that obeys file permissions: as root, without CAP_DAC_OVERRIDE (setpriv)."""
  argv = [sys.executable, "-m", "youtube-8m." + module] + list(args)
  if os.geteuid() == 0:
    if not shutil.which("setpriv"):
      pytest.skip("root ignores file permissions and setpriv is missing")
    argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] + argv
  return run(argv, check=False, env=cli_env())


def test_permission_denied(tiny_data, trained, tmp_path):
  """A read-only train_dir (as root: a process without CAP_DAC_OVERRIDE, so the mode bits
  apply): train.py cannot write model_flags.json, eval its event file, avg_checkpoints the
  directory of its output; one line naming the path, nothing changed."""
  train_dir = trained_copy(trained, str(tmp_path / "run"), 10)
  os.chmod(train_dir, 0o555)
  before = sorted(os.listdir(train_dir))
  try:
    error = one_error_line(run_without_root_permissions(
        "train", *train_args(tiny_data, train_dir, "--max_steps=20")))
    assert error == "ERROR: cannot write %s/model_flags.json: Permission denied" % train_dir
    error = one_error_line(run_without_root_permissions(
        "eval", "--train_dir=" + train_dir, "--checkpoint_file=model.ckpt-10",
        "--eval_data_pattern=" + tiny_data["validate_pattern"]))
    assert re.match(r"ERROR: cannot write the event file %s/events\.out\.tfevents\.\S+; "
                    r"Permission denied$" % re.escape(train_dir), error), error
    error = one_error_line(run_without_root_permissions(
        "avg_checkpoints", "--prefix=%s/model.ckpt-" % train_dir, "--checkpoints=10",
        "--output_path=%s/averages/avg" % train_dir))
    assert error == ("ERROR: cannot create directory %s/averages: Permission denied"
                     % train_dir)
    assert sorted(os.listdir(train_dir)) == before
  finally:
    os.chmod(train_dir, 0o755)
  assert_restorable(os.path.join(train_dir, "model.ckpt-10"), 10)


def test_broken_newest_checkpoint_on_gcs(tiny_data, trained, tmp_path, gcs_bucket):
  """The same on a gs:// train_dir (the emulator): the truncated newest checkpoint is skipped,
  the previous one downloaded and restored, and the re-exported one uploaded over it."""
  local_dir = trained_copy(trained, str(tmp_path / "run"), 30)
  data = os.path.join(local_dir, "model.ckpt-30.data-00000-of-00001")
  with open(data, "r+b") as handle:
    handle.truncate(100)
  train_dir = gcs_bucket + "/run"
  for name in os.listdir(local_dir):
    storage.copy(os.path.join(local_dir, name), train_dir + "/" + name)
  result = run_cli("train", *train_args(tiny_data, train_dir, "--max_steps=30"))
  assert "Skipping %s/model.ckpt-30: cannot read checkpoint" % train_dir in result.stderr
  assert ("Resumed from %s/model.ckpt-20 (step 20) instead of the unreadable model.ckpt-30"
          % train_dir) in result.stderr
  assert storage.size(train_dir + "/model.ckpt-30.data-00000-of-00001") > 100
  for name in ("index", "data-00000-of-00001"):
    storage.copy("%s/model.ckpt-30.%s" % (train_dir, name),
                 str(tmp_path / ("copy.%s" % name)))
  assert_restorable(str(tmp_path / "copy"), 30)
