"""Tests for youtube-8m/avg_checkpoints.py (real tf.compat.v1 checkpoints, real CLI runs).

The CLI runs that need TensorFlow (the three selection modes and the variable-mismatch
errors) are started concurrently in the background when the module's fixture is built and
collected by the tests at the end of the file; flag/selection errors do not import
TensorFlow in the tool and are run directly.
"""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from conftest import spawn_cli  # pylint: disable=g-import-not-at-top

avg = importlib.import_module("youtube-8m.avg_checkpoints")
checkpoint_utils = importlib.import_module("youtube-8m.checkpoint_utils")

STEPS = (10, 5010, 10010, 15010)

# name -> (shape, numpy dtype); global_step (int32) is added by make_checkpoint.
VARIABLES = {
    "tower/hidden1_weights/hidden1_weights": ((6, 4), np.float32),
    "tower/hidden1_weights/hidden1_weights/Adam": ((6, 4), np.float32),
    "tower/hidden1_weights/hidden1_weights/Adam_1": ((6, 4), np.float32),
    "tower/gates/weights": ((4, 3), np.float16),
    "tower/gates/weights/Adam": ((4, 3), np.float16),
    "tower/hidden1_bn/moving_mean": ((4,), np.float32),
    "tower/experts/weights": ((3, 2), np.float64),
    "tower/counter": ((5,), np.int32),
    "tower/big_counter": ((2,), np.int64),
    "beta1_power": ((), np.float32),
    "beta2_power": ((), np.float32),
}
SLOTS = {"tower/hidden1_weights/hidden1_weights/Adam",
         "tower/hidden1_weights/hidden1_weights/Adam_1", "tower/gates/weights/Adam",
         "beta1_power", "beta2_power"}


def random_values(seed, variables=None):
  rng = np.random.default_rng(seed)
  values = {}
  for name, (shape, dtype) in (variables or VARIABLES).items():
    if np.issubdtype(dtype, np.integer):
      values[name] = rng.integers(-1000, 1000, size=shape).astype(dtype)
    else:
      values[name] = (rng.standard_normal(size=shape) * 3).astype(dtype)
  return values


def make_checkpoint(directory, step, seed, variables=None, basename="model.ckpt"):
  """Saves a real training-style checkpoint '<directory>/<basename>-<step>'; returns values."""
  values = random_values(seed, variables)
  graph = tf.Graph()
  with graph.as_default():
    for name in sorted(values):
      tf.compat.v1.Variable(values[name], name=name)
    tf.compat.v1.Variable(np.int32(step), name="global_step")
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      prefix = saver.save(sess, os.path.join(directory, basename), global_step=step)
  assert prefix == os.path.join(directory, "%s-%d" % (basename, step))
  return values


def read_checkpoint(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def expected_mean(value_list):
  expected = {}
  for name in value_list[0]:
    dtype = value_list[0][name].dtype
    mean = np.mean(np.stack([v[name].astype(np.float64) for v in value_list]), axis=0)
    if np.issubdtype(dtype, np.integer):
      mean = np.rint(mean)
    expected[name] = mean.astype(dtype)
  return expected


def output_files(prefix):
  directory, base = os.path.split(prefix)
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory) if n.startswith(base) or ".tmp-" in n)


class Workspace:
  pass


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
  """Checkpoints in a directory with digits in its name, junk files, and background CLI runs."""
  w = Workspace()
  root = tmp_path_factory.mktemp("avg")
  w.root = str(root)
  w.train_dir = os.path.join(w.root, "c32h512_160")
  os.makedirs(w.train_dir)
  w.values = {}
  for i, step in enumerate(STEPS):
    w.values[step] = make_checkpoint(w.train_dir, step, seed=100 + i)
  w.prefix = os.path.join(w.train_dir, "model.ckpt-")
  # Files that must be ignored by the range / last-N modes.
  for junk in ("model.ckpt-5010x.index", "model.ckpt-abc.index", "model.ckpt-7000.meta",
               "model.ckpt-.index", "xmodel.ckpt-7000.index"):
    open(os.path.join(w.train_dir, junk), "w").close()
  # An earlier average in the same dir (a complete, valid checkpoint).
  for suffix in (".index", ".data-00000-of-00001", ".meta"):
    with open(os.path.join(w.train_dir, "model.ckpt-10" + suffix), "rb") as src, open(
        os.path.join(w.train_dir, "avg_c10h400_10_5010.ckpt-0" + suffix), "wb") as dst:
      dst.write(src.read())
  with open(os.path.join(w.train_dir, "checkpoint"), "rb") as f:
    w.state_file_bytes = f.read()

  # Incompatible checkpoints: 2 has a different shape, 3 lacks a variable.
  w.bad_dir = os.path.join(w.root, "bad")
  os.makedirs(w.bad_dir)
  make_checkpoint(w.bad_dir, 1, seed=1)
  reshaped = dict(VARIABLES)
  reshaped["tower/gates/weights"] = ((4, 5), np.float16)
  make_checkpoint(w.bad_dir, 2, seed=2, variables=reshaped)
  lacking = dict(VARIABLES)
  del lacking["tower/hidden1_bn/moving_mean"]
  make_checkpoint(w.bad_dir, 3, seed=3, variables=lacking)
  w.bad_prefix = os.path.join(w.bad_dir, "model.ckpt-")

  # Background CLI runs needing TensorFlow (each takes a few seconds to import it).
  w.out_select = os.path.join(w.train_dir, "avg_c32h512_5010_etc.ckpt")
  w.out_range = os.path.join(w.root, "out_range", "avg_range.ckpt")
  w.out_last = os.path.join(w.root, "out_last", "avg_last3.ckpt")
  w.out_shape = os.path.join(w.root, "out_shape", "avg.ckpt")
  w.out_missing_var = os.path.join(w.root, "out_missing_var", "avg.ckpt")
  runs = {
      "select": ["--prefix=" + w.prefix, "--output_path=" + w.out_select,
                 "--checkpoints=5010,10010.index,15010"],
      "range": ["--checkpoints_start_end=5010,10010", "--prefix=" + w.prefix,
                "--output_path=" + w.out_range],
      "last": ["--num_last_checkpoints=3", "--prefix=" + w.prefix,
               "--output_path=" + w.out_last, "--exclude_optimizer_slots"],
      "shape": ["--prefix=" + w.bad_prefix, "--checkpoints=1,2",
                "--output_path=" + w.out_shape],
      "missing_var": ["--prefix=" + w.bad_prefix, "--checkpoints=1,3",
                      "--output_path=" + w.out_missing_var],
  }
  w.error_outputs = {}
  for key, (args, _) in CLI_ERRORS.items():
    w.error_outputs[key] = os.path.join(w.root, "out_" + key, "avg.ckpt")
    runs[key] = ["--prefix=" + w.prefix, "--output_path=" + w.error_outputs[key]] + args
  w.procs = {
      key: spawn_cli("avg_checkpoints", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
      for key, args in runs.items()}
  w.results = {}

  def result(key):
    if key not in w.results:
      out, err = w.procs[key].communicate(timeout=180)
      w.results[key] = (w.procs[key].returncode, out, err)
    return w.results[key]

  w.result = result
  yield w
  for proc in w.procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.communicate()


# ---------------------------------------------------------------------------------------
# Library-level tests.


@pytest.mark.slow
def test_average_of_three_equals_numpy_mean(ws, tmp_path):
  steps = (10, 5010, 15010)
  out = str(tmp_path / "avg.ckpt-0")
  summary = avg.average_checkpoints([ws.prefix + str(s) for s in steps], out)
  result = read_checkpoint(out)
  expected = expected_mean([ws.values[s] for s in steps])
  assert set(result) == set(expected) | {"global_step"}
  for name, value in expected.items():
    assert result[name].dtype == value.dtype, name
    assert result[name].shape == value.shape, name
    np.testing.assert_array_equal(result[name], value, err_msg=name)
  assert result["global_step"].dtype == np.int32
  assert result["global_step"] == 0
  assert sorted(summary["averaged"]) == sorted(VARIABLES)
  assert summary["skipped"] == []
  assert sorted(os.listdir(tmp_path)) == [
      "avg.ckpt-0.data-00000-of-00001", "avg.ckpt-0.index", "avg.ckpt-0.meta"]
  assert summary["peak_memory_mib"] > 0
  assert summary["largest_input_data_bytes"] == os.path.getsize(
      ws.prefix + "10.data-00000-of-00001")


@pytest.mark.slow
def test_dtypes_preserved_for_mixed_checkpoint(ws, tmp_path):
  out = str(tmp_path / "avg.ckpt-0")
  avg.average_checkpoints([ws.prefix + "10", ws.prefix + "5010"], out)
  in_dtypes = tf.train.load_checkpoint(ws.prefix + "10").get_variable_to_dtype_map()
  out_dtypes = tf.train.load_checkpoint(out).get_variable_to_dtype_map()
  assert out_dtypes == in_dtypes
  assert out_dtypes["tower/gates/weights"] == tf.float16
  assert out_dtypes["tower/hidden1_weights/hidden1_weights"] == tf.float32
  assert out_dtypes["tower/experts/weights"] == tf.float64
  assert out_dtypes["tower/counter"] == tf.int32
  assert out_dtypes["tower/big_counter"] == tf.int64
  assert out_dtypes["global_step"] == tf.int32
  # Integer variables: mean rounded to nearest (ties to even).
  result = read_checkpoint(out)
  mean = (ws.values[10]["tower/counter"].astype(np.float64) +
          ws.values[5010]["tower/counter"]) / 2
  np.testing.assert_array_equal(result["tower/counter"], np.rint(mean).astype(np.int32))


def test_bfloat16_variable_keeps_dtype(tmp_path):
  variables = {"w": ((3, 2), np.float32)}
  values = []
  for step in (1, 2):
    graph = tf.Graph()
    with graph.as_default():
      v = np.random.default_rng(step).standard_normal((4,)).astype(tf.bfloat16.as_numpy_dtype)
      values.append(v)
      tf.compat.v1.Variable(v, name="bf")
      make_vars = random_values(step, variables)
      tf.compat.v1.Variable(make_vars["w"], name="w")
      tf.compat.v1.Variable(np.int32(step), name="global_step")
      with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"), global_step=step)
  out = str(tmp_path / "out" / "avg.ckpt-0")
  avg.average_checkpoints([str(tmp_path / "model.ckpt-1"), str(tmp_path / "model.ckpt-2")], out)
  result = read_checkpoint(out)
  assert result["bf"].dtype == values[0].dtype
  expected = ((values[0].astype(np.float64) + values[1].astype(np.float64)) / 2).astype(
      values[0].dtype)
  np.testing.assert_array_equal(result["bf"], expected)


@pytest.mark.slow
def test_state_file_untouched_and_meta_restores(ws, tmp_path):
  out = os.path.join(ws.train_dir, "avg_inprocess.ckpt-0")
  avg.average_checkpoints([ws.prefix + "10", ws.prefix + "15010"], out)
  with open(os.path.join(ws.train_dir, "checkpoint"), "rb") as f:
    assert f.read() == ws.state_file_bytes
  # The .meta is a valid MetaGraphDef whose saver restores the averaged values.
  expected = read_checkpoint(out)
  graph = tf.Graph()
  with graph.as_default():
    saver = tf.compat.v1.train.import_meta_graph(out + ".meta")
    names = {v.op.name for v in tf.compat.v1.global_variables()}
    assert names == set(expected)
    with tf.compat.v1.Session() as sess:
      saver.restore(sess, out)
      for variable in tf.compat.v1.global_variables():
        value = sess.run(variable)
        assert value.dtype == expected[variable.op.name].dtype
        np.testing.assert_array_equal(value, expected[variable.op.name])
    assert tf.compat.v1.train.get_global_step(graph).op.name == "global_step"
  os.remove(out + ".index")  # Keep the directory as the other tests expect it.
  os.remove(out + ".data-00000-of-00001")
  os.remove(out + ".meta")


@pytest.mark.slow
def test_exclude_optimizer_slots(ws, tmp_path):
  out = str(tmp_path / "avg.ckpt-0")
  summary = avg.average_checkpoints([ws.prefix + "10", ws.prefix + "5010"], out,
                                    exclude_optimizer_slots=True)
  assert set(summary["skipped"]) == SLOTS
  result = read_checkpoint(out)
  assert set(result) == (set(VARIABLES) - SLOTS) | {"global_step"}


def test_is_optimizer_slot():
  for name in ("a/b/Adam", "a/b/Adam_1", "beta1_power", "beta2_power", "beta1_power_1",
               "tower/w/Momentum", "w/RMSProp", "w/RMSProp_1", "w/Adagrad", "w/Ftrl_1"):
    assert avg.is_optimizer_slot(name), name
  for name in ("tower/gates/weights", "global_step", "tower/hidden1_bn/moving_mean",
               "Adam_scope/weights", "tower/AdamX", "beta1"):
    assert not avg.is_optimizer_slot(name), name


def test_result_arrays_are_aligned_for_zero_copy_feeds():
  for shape, dtype in (((1000, 7), np.float32), ((3,), np.float16), ((), np.int32),
                       ((0, 4), np.float64)):
    array = checkpoint_utils.aligned_empty(shape, dtype)
    assert array.shape == shape and array.dtype == dtype
    if array.size:  # (an empty array has no data to copy)
      assert array.ctypes.data % 64 == 0


@pytest.mark.slow
def test_selection_modes_with_digits_in_dir_and_prefix(ws):
  p = ws.prefix
  assert avg.find_checkpoints(p) == [(s, p + str(s)) for s in STEPS]
  assert avg.select_checkpoints(p, checkpoints="15010,10.index, 5010") == (
      "checkpoints", [p + "15010", p + "10", p + "5010"])
  assert avg.select_checkpoints(p, checkpoints_start_end="5010,10010") == (
      "checkpoints_start_end", [p + "5010", p + "10010"])
  assert avg.select_checkpoints(p, checkpoints_start_end="0,10") == (
      "checkpoints_start_end", [p + "10"])
  assert avg.select_checkpoints(p, num_last_checkpoints=3) == (
      "num_last_checkpoints", [p + "5010", p + "10010", p + "15010"])
  assert avg.select_checkpoints(p, num_last_checkpoints=4)[1] == [p + str(s) for s in STEPS]
  # Bare entries with an empty prefix and full paths.
  assert avg.select_checkpoints("", checkpoints=p + "10010.index")[1] == [p + "10010"]
  # The earlier average is found only with its own prefix.
  avg_prefix = os.path.join(ws.train_dir, "avg_c10h400_10_5010.ckpt-")
  assert avg.find_checkpoints(avg_prefix) == [(0, avg_prefix + "0")]


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, message", [
    (dict(checkpoints="10,777"), "model.ckpt-777"),
    (dict(checkpoints=" , "), "--checkpoints"),
    (dict(checkpoints="10,10.index"), "listed twice"),
    (dict(checkpoints_start_end="11,5009"), "no checkpoint"),
    (dict(checkpoints_start_end="10010,5010"), "START (10010) is greater"),
    (dict(checkpoints_start_end="5010-10010"), "malformed"),
    (dict(checkpoints_start_end="5010"), "malformed"),
    (dict(num_last_checkpoints=5), "only 4 checkpoint(s)"),
    (dict(num_last_checkpoints=0), "at least 1"),
    (dict(checkpoints="10", num_last_checkpoints=2), "--checkpoints and --num_last"),
    (dict(), "no checkpoints selected"),
])
def test_selection_errors(ws, kwargs, message):
  with pytest.raises(checkpoint_utils.CheckpointToolError) as info:
    avg.select_checkpoints(ws.prefix, **kwargs)
  assert message in str(info.value)


def test_missing_prefix_directory():
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="does not exist"):
    avg.select_checkpoints("/nonexistent_dir_xyz/model.ckpt-", num_last_checkpoints=1)


@pytest.mark.slow
def test_overwrite_replaces_existing_average(ws, tmp_path):
  out = str(tmp_path / "avg.ckpt-0")
  avg.average_checkpoints([ws.prefix + "10", ws.prefix + "5010"], out)
  avg.average_checkpoints([ws.prefix + "10010", ws.prefix + "15010"], out)
  expected = expected_mean([ws.values[10010], ws.values[15010]])
  result = read_checkpoint(out)
  for name, value in expected.items():
    np.testing.assert_array_equal(result[name], value, err_msg=name)
  assert sorted(os.listdir(tmp_path)) == [
      "avg.ckpt-0.data-00000-of-00001", "avg.ckpt-0.index", "avg.ckpt-0.meta"]


@pytest.mark.slow
def test_failed_write_leaves_no_files_and_keeps_old_output(ws, tmp_path, monkeypatch):
  out = str(tmp_path / "avg.ckpt-0")

  def broken_meta(*unused_args, **unused_kwargs):
    raise RuntimeError("disk full")

  monkeypatch.setattr(avg, "_write_meta", broken_meta)
  with pytest.raises(RuntimeError):
    avg.average_checkpoints([ws.prefix + "10", ws.prefix + "5010"], out)
  assert os.listdir(tmp_path) == []  # no temp files, nothing under the final name
  monkeypatch.undo()
  avg.average_checkpoints([ws.prefix + "10", ws.prefix + "5010"], out)
  before = read_checkpoint(out)
  monkeypatch.setattr(avg, "_write_meta", broken_meta)
  with pytest.raises(RuntimeError):
    avg.average_checkpoints([ws.prefix + "10010", ws.prefix + "15010"], out)
  after = read_checkpoint(out)
  for name in before:
    np.testing.assert_array_equal(after[name], before[name])
  assert sorted(os.listdir(tmp_path)) == [
      "avg.ckpt-0.data-00000-of-00001", "avg.ckpt-0.index", "avg.ckpt-0.meta"]


@pytest.mark.slow
def test_incompatible_checkpoints_raise_before_writing(ws, tmp_path):
  out = str(tmp_path / "sub" / "avg.ckpt-0")
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="tower/gates/weights"):
    avg.average_checkpoints([ws.bad_prefix + "1", ws.bad_prefix + "2"], out)
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="tower/hidden1_bn/moving_mean"):
    avg.average_checkpoints([ws.bad_prefix + "1", ws.bad_prefix + "3"], out)
  with pytest.raises(checkpoint_utils.CheckpointToolError, match="one of the input checkpoints"):
    avg.average_checkpoints([ws.bad_prefix + "1"], ws.bad_prefix + "1")
  assert not os.path.exists(tmp_path / "sub")


# ---------------------------------------------------------------------------------------
# CLI runs (all started concurrently by the fixture). Flag/selection errors are detected
# before the tool imports TensorFlow.

CLI_ERRORS = {
    "err_missing_ckpt": (["--checkpoints=10,777"], "model.ckpt-777"),
    "err_empty_range": (["--checkpoints_start_end=11,5009"], "--checkpoints_start_end"),
    "err_malformed_range": (["--checkpoints_start_end=abc"], "malformed"),
    "err_two_modes": (["--checkpoints=10", "--checkpoints_start_end=10,5010"],
                      "--checkpoints and --checkpoints_start_end"),
    "err_too_few": (["--num_last_checkpoints=9"], "only 4 checkpoint(s)"),
    "err_no_mode": ([], "no checkpoints selected"),
    "err_unknown_flag": (["--checkpoints=10", "--no_such_flag=1"], "no_such_flag"),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(CLI_ERRORS))
def test_cli_errors_write_nothing(ws, key):
  returncode, _, err = ws.result(key)
  assert returncode != 0
  assert CLI_ERRORS[key][1] in err, err
  assert not os.path.exists(os.path.dirname(ws.error_outputs[key]))


# ---------------------------------------------------------------------------------------
# Background CLI runs (started by the fixture).


@pytest.mark.slow
def test_cli_variable_mismatch_errors(ws):
  for key, out, message in (
      ("shape", ws.out_shape, "'tower/gates/weights' has shape [4, 5] in checkpoint"),
      ("missing_var", ws.out_missing_var, "lacks variable(s) 'tower/hidden1_bn/moving_mean'")):
    returncode, _, err = ws.result(key)
    assert returncode == 1, err
    assert message in err, err
    assert not os.path.exists(os.path.dirname(out)), key


@pytest.mark.slow
def test_cli_select_mode(ws):
  returncode, _, err = ws.result("select")
  assert returncode == 0, err
  assert "mode: --checkpoints" in err and "5010, 10010, 15010" in err
  assert "peak memory:" in err and "largest input checkpoint data:" in err
  out = ws.out_select + "-0"
  for suffix in (".index", ".data-00000-of-00001", ".meta"):
    assert os.path.exists(out + suffix)
  result = read_checkpoint(out)
  expected = expected_mean([ws.values[s] for s in (5010, 10010, 15010)])
  for name, value in expected.items():
    np.testing.assert_array_equal(result[name], value, err_msg=name)
  assert result["global_step"] == 0
  with open(os.path.join(ws.train_dir, "checkpoint"), "rb") as f:
    assert f.read() == ws.state_file_bytes
  assert not [n for n in os.listdir(ws.train_dir) if ".tmp-" in n]


@pytest.mark.slow
def test_cli_range_mode(ws):
  returncode, _, err = ws.result("range")
  assert returncode == 0, err
  assert "mode: --checkpoints_start_end" in err and "steps (in order): 5010, 10010" in err
  result = read_checkpoint(ws.out_range + "-0")
  expected = expected_mean([ws.values[s] for s in (5010, 10010)])
  for name, value in expected.items():
    np.testing.assert_array_equal(result[name], value, err_msg=name)


@pytest.mark.slow
def test_cli_last_mode_excluding_slots(ws):
  returncode, _, err = ws.result("last")
  assert returncode == 0, err
  assert "steps (in order): 5010, 10010, 15010" in err
  result = read_checkpoint(ws.out_last + "-0")
  assert set(result) == (set(VARIABLES) - SLOTS) | {"global_step"}
  expected = expected_mean([ws.values[s] for s in (5010, 10010, 15010)])
  for name in set(VARIABLES) - SLOTS:
    np.testing.assert_array_equal(result[name], expected[name], err_msg=name)
  assert sorted(os.listdir(os.path.dirname(ws.out_last))) == [
      "avg_last3.ckpt-0.data-00000-of-00001", "avg_last3.ckpt-0.index",
      "avg_last3.ckpt-0.meta"]
