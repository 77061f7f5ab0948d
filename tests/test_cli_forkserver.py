"""scripts/cli_forkserver.py: a tool forked from the server behaves as `python -m` started anew."""

import filecmp
import os
import subprocess
import sys
import threading

import pytest

from conftest import REPO_ROOT, ForkedProcess, cli_env, forkserver, script_python

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
  # TF_CONFIG (a distributed job's cluster) is read when train.py builds its graph
  assert server.can_serve(argv, REPO_ROOT, cli_env({"TF_CONFIG": '{"cluster": {}}'}))
  assert not server.can_serve(argv, REPO_ROOT, cli_env({"TF_ENABLE_ONEDNN_OPTS": "0"}))
  assert not server.can_serve(argv, REPO_ROOT, cli_env({"MALLOC_ARENA_MAX": "1"}))
  assert not server.can_serve(argv, REPO_ROOT, cli_env({"LD_LIBRARY_PATH": "/opt/lib"}))
  assert server.can_serve(argv, REPO_ROOT, cli_env({"LD_LIBRARY_PATH": "", "PYTHONPATH": "",
                                                    "CUDA_VISIBLE_DEVICES": ""}))
  assert not server.can_serve(argv, os.path.dirname(REPO_ROOT), cli_env())
  assert not server.can_serve(["python3"] + argv[1:], REPO_ROOT, cli_env())
  assert not server.can_serve([sys.executable, "scripts/main_job.py"], REPO_ROOT, cli_env())


def test_requests_run_concurrently(tmp_path):
  """A tool that waits (model_size reading a named pipe nobody writes yet) does not hold up
  the next request: it starts and ends meanwhile."""
  server = forkserver()
  if server is None:
    pytest.skip("YT8M_TEST_FORKSERVER=0")
  fifo = str(tmp_path / "submission.tgz")
  os.mkfifo(fifo)
  blocked = ForkedProcess(server, [sys.executable, "-m", "youtube-8m.model_size",
                                   "--model_tgz=" + fifo], cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    later = []
    thread = threading.Thread(target=lambda: later.append(server.run(
        [sys.executable, "-m", "youtube-8m.model_size", "--helpshort"], REPO_ROOT, cli_env(),
        timeout=120)))
    thread.start()
    thread.join(timeout=120)
    assert later, "the second request waited for the first"
    assert "--model_tgz" in later[0].stdout
    assert blocked.poll() is None
  finally:
    with open(fifo, "wb"):  # the first one reads an empty "tgz": one error line, exit 1
      pass
  _, stderr = blocked.communicate(timeout=120)
  assert blocked.returncode == 1, stderr[-2000:]


def test_python_shim_forks_tools_and_runs_the_rest(tmp_path):
  """script_python(): `-m youtube-8m.<tool>` forked (its exit status and output as started
  anew), any other command line run by the real Python."""
  if forkserver() is None:
    pytest.skip("YT8M_TEST_FORKSERVER=0")
  python = script_python()
  assert python != sys.executable
  argv = ["-m", "youtube-8m.synthetic_data", "--netvlad_cluster_size=4"]
  shimmed = subprocess.run([python] + argv, cwd=REPO_ROOT, env=cli_env(), capture_output=True,
                           text=True, timeout=300)
  plain = subprocess.run([sys.executable] + argv, cwd=REPO_ROOT, env=cli_env(),
                         capture_output=True, text=True, timeout=300)
  assert shimmed.returncode == plain.returncode == 1
  assert shimmed.stderr.splitlines()[-2:] == plain.stderr.splitlines()[-2:]
  other = subprocess.run([python, "-c", "import sys; print(sys.executable); sys.exit(3)"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
  assert other.returncode == 3 and other.stdout.strip() == sys.executable


def test_a_child_runs_on_the_cpus_asked_for(tmp_path):
  server = forkserver()
  if server is None:
    pytest.skip("YT8M_TEST_FORKSERVER=0")
  cpu = sorted(os.sched_getaffinity(0))[-1]
  fifo = str(tmp_path / "submission.tgz")
  os.mkfifo(fifo)  # model_size waits on it: the child is alive while its CPUs are read
  with open(tmp_path / "log", "w") as log:
    child = server.spawn([sys.executable, "-m", "youtube-8m.model_size", "--model_tgz=" + fifo],
                         REPO_ROOT, cli_env(), log.fileno(), log.fileno(), cpus=[cpu])
  with open(fifo, "wb") as writer:  # open() returns once the child has opened the pipe
    with open("/proc/%d/status" % child.pid) as status:
      allowed = [line.split(":")[1].strip() for line in status
                 if line.startswith("Cpus_allowed_list")]
    writer.write(b"")
  assert allowed == [str(cpu)]
  assert child.wait(120)[0] == 1  # an empty "tgz": one error line
