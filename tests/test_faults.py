"""Faults: the tools stop with one clear line and leave only complete outputs behind."""

import os
import re

import numpy as np
import tensorflow as tf

from conftest import TINY_FLAGS, run_cli

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=8"]


def test_divergence_stops_training_without_exporting_nan(tiny_data, tmp_path):
  """A loss that becomes NaN stops training at that step, names the last good checkpoint,
  and no checkpoint holding NaN/inf is written (Adam's step size is the learning rate, so
  1e30 overflows the weights at once)."""
  train_dir = str(tmp_path / "run")
  common = ["--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
            "--batch_size=8", "--export_model_steps=10", "--num_epochs=100"] + MODEL_FLAGS
  run_cli("train", *common, "--max_steps=10")
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


def test_missing_checkpoint_is_one_line_naming_it(tiny_data, tmp_path):
  """eval's --checkpoint and train's --checkpoint_file (warm start) name a checkpoint that is
  not there: exit 1, one line naming the flag and the missing index."""
  train_dir = str(tmp_path / "run")
  run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
          "--train_dir=" + train_dir, "--batch_size=8", "--max_steps=1", *MODEL_FLAGS)
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
