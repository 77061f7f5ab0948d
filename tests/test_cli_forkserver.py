"""scripts/cli_forkserver.py: a tool forked from the server behaves as `python -m` started anew."""

import filecmp
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, cli_env, forkserver

# Every test here starts tool processes: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def both_ways(tmp_path, module, *args):
  """(forked, started anew) CompletedProcess of `python -m youtube-8m.<module>` with the
  arguments, each given its own output directory for {out} in args."""
  server = forkserver()
  if server is None:
    pytest.skip("YT8M_TEST_FORKSERVER=0")
  results = []
  for way in ("forked", "plain"):
    argv = [sys.executable, "-m", "youtube-8m." + module] + [
        arg.format(out=tmp_path / way) for arg in args]
    assert server.can_serve(argv, REPO_ROOT, cli_env())
    if way == "forked":
      results.append(server.run(argv, REPO_ROOT, cli_env(), timeout=300))
    else:
      results.append(subprocess.run(argv, cwd=REPO_ROOT, env=cli_env(), capture_output=True,
                                    text=True, timeout=300))
  return results


def test_the_same_files_exit_status_and_help(tmp_path):
  forked, plain = both_ways(tmp_path, "synthetic_data", "--output_dir={out}", "--levels=frame",
                            "--num_train_files=1", "--num_validate_files=1",
                            "--num_test_files=0", "--videos_per_file=3",
                            "--validate_videos_per_file=2", "--num_classes=20")
  assert forked.returncode == plain.returncode == 0, forked.stderr[-2000:]
  comparison = filecmp.dircmp(tmp_path / "forked" / "frame", tmp_path / "plain" / "frame")
  assert comparison.left_list == comparison.right_list and len(comparison.left_list) == 2
  assert not filecmp.cmpfiles(comparison.left, comparison.right, comparison.common_files,
                              shallow=False)[1]
  # A flag of another tool's module is unknown here, forked or not.
  forked, plain = both_ways(tmp_path, "synthetic_data", "--netvlad_cluster_size=4")
  assert forked.returncode == plain.returncode == 1
  assert forked.stderr.splitlines()[-2:] == plain.stderr.splitlines()[-2:]
  assert "Unknown command line flag 'netvlad_cluster_size'" in forked.stderr
  forked, plain = both_ways(tmp_path, "train", "--helpfull")
  assert forked.returncode == plain.returncode
  assert forked.stdout == plain.stdout and "--netvlad_cluster_size" in forked.stdout


def test_startup_settings_and_other_pythons_are_not_forked():
  server = forkserver()
  if server is None:
    pytest.skip("YT8M_TEST_FORKSERVER=0")
  argv = [sys.executable, "-m", "youtube-8m.train", "--helpfull"]
  assert server.can_serve(argv, REPO_ROOT, cli_env({"STORAGE_EMULATOR_HOST": "x"}))
  assert not server.can_serve(argv, REPO_ROOT, cli_env({"TF_ENABLE_ONEDNN_OPTS": "0"}))
  assert not server.can_serve(argv, REPO_ROOT, cli_env({"MALLOC_ARENA_MAX": "1"}))
  assert not server.can_serve(argv, REPO_ROOT, cli_env({"LD_LIBRARY_PATH": "/opt/lib"}))
  assert server.can_serve(argv, REPO_ROOT, cli_env({"LD_LIBRARY_PATH": "", "PYTHONPATH": "",
                                                    "CUDA_VISIBLE_DEVICES": ""}))
  assert not server.can_serve(argv, os.path.dirname(REPO_ROOT), cli_env())
  assert not server.can_serve(["python3"] + argv[1:], REPO_ROOT, cli_env())
  assert not server.can_serve([sys.executable, "scripts/main_job.py"], REPO_ROOT, cli_env())


def test_requests_run_side_by_side_each_on_its_cpus(tmp_path):
  server = forkserver()
  if server is None:
    pytest.skip("YT8M_TEST_FORKSERVER=0")
  cpus = sorted(os.sched_getaffinity(0))
  children = []
  for name, cpu in (("a", cpus[0]), ("b", cpus[-1])):
    argv = [sys.executable, "-m", "youtube-8m.synthetic_data", "--output_dir=%s" % (
        tmp_path / name), "--levels=frame", "--num_train_files=4", "--num_validate_files=0",
            "--num_test_files=0", "--videos_per_file=60", "--num_classes=20"]
    with open(tmp_path / (name + ".log"), "w") as log:
      children.append(server.spawn(argv, REPO_ROOT, cli_env(), log.fileno(), log.fileno(),
                                   cpus=[cpu]))
  # The first child still runs once the second has started (the server did not wait for it),
  # and runs on the CPU it was given.
  with open("/proc/%d/status" % children[0].pid) as status:
    allowed = [line.split(":")[1].strip() for line in status if line.startswith(
        "Cpus_allowed_list")]
  assert allowed == [str(cpus[0])]
  assert [child.wait(300)[0] for child in children] == [0, 0]
  comparison = filecmp.dircmp(tmp_path / "a" / "frame", tmp_path / "b" / "frame")
  assert len(comparison.left_list) == 4 and not filecmp.cmpfiles(
      comparison.left, comparison.right, comparison.common_files, shallow=False)[1]
