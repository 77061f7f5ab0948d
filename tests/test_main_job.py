"""scripts/main_job.py end to end on a tiny configuration: its tools forked from one process
(the default) give the same results as tools started anew (--fresh_processes)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, cli_env

TINY = ["--models=4x16,4x8", "--max_steps=20", "--export_model_steps=10", "--average_last=2",
        "--num_train_files=2", "--videos_per_file=16", "--validate_videos_per_file=2",
        "--test_videos=6", "--iterations=8", "--num_classes=60", "--batch_size=16"]


def main_job(work_dir, *extra):
  result = subprocess.run([sys.executable, "scripts/main_job.py", "--work_dir=%s" % work_dir]
                          + TINY + list(extra), cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout, json.load(open(os.path.join(work_dir, "summary.json")))


@pytest.mark.slow
def test_forked_tools_give_the_results_of_tools_started_anew(tmp_path):
  forked_out, forked = main_job(tmp_path / "forked")
  # Step 8 (the budgeted build) has tests of its own: run once, in the forked job.
  fresh_out, fresh = main_job(tmp_path / "fresh", "--fresh_processes", "--nobudget_build")
  assert "forked from one that imported TensorFlow once" in forked_out
  assert "forked from" not in fresh_out
  assert (tmp_path / "forked" / "logs" / "forkserver.log").exists()
  assert not (tmp_path / "fresh" / "logs" / "forkserver.log").exists()
  # The main job passes --random_seed: both runs train, average and mix the same numbers.
  assert forked["gap"] == fresh["gap"]
  assert not fresh.get("budget_build")
  # Step 8: the budgeted build fits the hand-picked ensemble's bytes.
  assert forked["budget_build"]["measured_bytes"] <= forked["size"]["total_bytes"]
  # Its candidates: each model's average and last checkpoint, in each of the three storages.
  options = forked["budget_build"]["options"]
  assert len({o["candidate"] for o in options}) == 2 * len(forked["models"])
  assert {o["storage"] for o in options} == {"float32", "float16", "uint8"}
  for forked_model, fresh_model in zip(forked["models"], fresh["models"]):
    assert forked_model["averaged"]["gap"] == fresh_model["averaged"]["gap"]
    assert {k: r["gap"] for k, r in forked_model["singles"].items()} == {
        k: r["gap"] for k, r in fresh_model["singles"].items()}
  for summary in (forked, fresh):
    assert [m["name"] for m in summary["models"]] == ["c4h16_16", "c4h8_16"]
    assert set(summary["ensembles"]) == {"ensemble_fp32_equal", "ensemble_fp16_equal",
                                         "ensemble_fp16_tuned"}
    assert summary["size"]["fits"]
    assert 0.0 <= summary["gap"] <= 1.0
  for work_dir in ("forked", "fresh"):
    rows = open(tmp_path / work_dir / "submission" / "submission.csv").read().splitlines()
    assert rows[0] == "VideoId,LabelConfidencePairs" and len(rows) == 7
