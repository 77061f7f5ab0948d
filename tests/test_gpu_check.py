"""python -m youtube-8m.gpu_check, real processes: the CPU-only build is refused in one line;
with a CUDA build's info injected, real shared libraries built here (gcc) under the sonames
TensorFlow's CUDA 12 build loads stand in for the NVIDIA wheels' libraries."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, cli_env, run, yt8m

gpu_check = yt8m("gpu_check")

CUDA12_BUILD = {"is_cuda_build": True, "is_rocm_build": False, "cuda_version": "12.5.1",
                "cudnn_version": "9"}
CUDA12_LIBRARIES = ["libnvJitLink.so.12", "libcudart.so.12", "libcublasLt.so.12",
                    "libcublas.so.12", "libcufft.so.11", "libcusparse.so.12",
                    "libcusolver.so.11", "libcudnn.so.9", "libnccl.so.2"]
# gpu_check's command line with a stand-in for TensorFlow's version and build info.
WITH_BUILD_INFO = """
import importlib, json, sys
from absl import app
gpu_check = importlib.import_module("youtube-8m.gpu_check")
gpu_check.define_flags()
build_info = json.loads(sys.argv.pop(1))
sys.argv[0] = "gpu_check"
app.run(lambda argv: gpu_check.main(argv, "2.21.0", build_info))
"""


def error_lines(result):
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]


def build_library(directory, soname):
  """A real shared library with that soname (what the dynamic loader checks)."""
  source = os.path.join(directory, "stand_in.c")
  with open(source, "w") as handle:
    handle.write("int yt8m_stand_in(void) { return 1; }\n")
  subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname," + soname, "-o",
                  os.path.join(directory, soname), source], check=True)
  os.remove(source)


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
  """{soname: path} of stand-ins of every library TensorFlow's CUDA 12 build loads."""
  directory = str(tmp_path_factory.mktemp("cuda12_libs"))
  for soname in CUDA12_LIBRARIES:
    build_library(directory, soname)
  return {soname: os.path.join(directory, soname) for soname in CUDA12_LIBRARIES}


def library_dir(tmp_path, libraries, missing=(), name="lib"):
  """A directory with the stand-ins less `missing`."""
  directory = tmp_path / name
  directory.mkdir(parents=True)
  for soname, path in libraries.items():
    if soname not in missing:
      os.symlink(path, str(directory / soname))
  return str(directory)


def check(*args, build_info=CUDA12_BUILD, ld_library_path=None, pythonpath=None):
  env = cli_env({"LD_LIBRARY_PATH": ld_library_path or "",
                 "PYTHONPATH": pythonpath or ""})
  if build_info is None:
    return run([sys.executable, "-m", "youtube-8m.gpu_check"] + list(args), check=False,
               env=env, timeout=300)
  return run([sys.executable, "-c", WITH_BUILD_INFO, json.dumps(build_info)]
             + list(args), check=False, env=env, timeout=300)


def test_sonames_follow_the_build_info():
  assert gpu_check.required_libraries("2.21.0", CUDA12_BUILD) == CUDA12_LIBRARIES
  assert "libcudnn.so.8" in gpu_check.required_libraries(
      "2.21.0", dict(CUDA12_BUILD, cudnn_version="8.9.7"))
  for build_info, status, text in (
      ({"is_cuda_build": False}, 2, "is a CPU-only build"),
      ({"is_cuda_build": False, "is_rocm_build": True}, 2, "is a ROCm (AMD) build"),
      (dict(CUDA12_BUILD, cuda_version="11.8"), 2, "knows the CUDA libraries of CUDA 12 only")):
    with pytest.raises(gpu_check.GpuCheckError) as raised:
      gpu_check.required_libraries("2.21.0", build_info)
    assert raised.value.exit_status == status and text in str(raised.value)


def test_the_cpu_only_build_fails_in_one_line():
  """This machine's TensorFlow (the CPU build): exit 2, one line, for the build-time check, the
  full check and --print_library_dirs alike."""
  for args in (["--libraries_only"], [], ["--print_library_dirs"]):
    result = check(*args, build_info=None)
    assert result.returncode == 2, (args, result.stderr[-3000:])
    assert error_lines(result) == [
        "ERROR: TensorFlow 2.21.0 is a CPU-only build (is_cuda_build: False): it cannot use "
        "NVIDIA GPUs; fix: install TensorFlow's CUDA build (pip install '.[gpu]', i.e. "
        "tensorflow[and-cuda]; or use the image of cloud/container/Dockerfile), then run "
        "python -m youtube-8m.gpu_check"], args
    assert result.stdout == ""


def test_one_missing_library_is_named(tmp_path, libraries):
  directory = library_dir(tmp_path, libraries, missing=["libcudnn.so.9"])
  result = check("--libraries_only", ld_library_path=directory)
  assert result.returncode == 3, result.stderr[-3000:]
  [line] = error_lines(result)
  assert line.startswith("ERROR: TensorFlow 2.21.0 (CUDA 12.5.1, cuDNN 9 build) cannot load "
                         "libcudnn.so.9 (libcudnn.so.9: cannot open shared object file"), line
  assert line.endswith("; " + gpu_check.LOADER_HINT)


def test_a_library_the_loader_does_not_search_is_found_and_named(tmp_path, libraries):
  """libnvJitLink.so.12 installed in a wheel's nvidia/nvjitlink/lib that is not on the loader
  path: named with its directory; --print_library_dirs prints that directory, and with it on
  LD_LIBRARY_PATH (what the image's ld.so.conf entry does) the check passes."""
  directory = library_dir(tmp_path, libraries, missing=["libnvJitLink.so.12"])
  site = tmp_path / "site-packages"
  wheel_lib = library_dir(site / "nvidia" / "nvjitlink", {
      "libnvJitLink.so.12": libraries["libnvJitLink.so.12"]})
  result = check("--libraries_only", ld_library_path=directory, pythonpath=str(site))
  assert result.returncode == 3
  [line] = error_lines(result)
  assert "cannot load libnvJitLink.so.12 (libnvJitLink.so.12: cannot open" in line
  assert "libnvJitLink.so.12 is in %s: the loader does not search %s" % (
      wheel_lib, wheel_lib) in line
  printed = check("--print_library_dirs", pythonpath=str(site))
  assert printed.returncode == 0, printed.stderr[-3000:]
  assert wheel_lib in printed.stdout.splitlines()
  result = check("--libraries_only", pythonpath=str(site),
                 ld_library_path=":".join([directory] + printed.stdout.split()))
  assert result.returncode == 0, result.stderr[-3000:]


def test_all_libraries_present_pass(tmp_path, libraries):
  directory = library_dir(tmp_path, libraries)
  result = check("--libraries_only", ld_library_path=directory)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0] == ("gpu_check: TensorFlow 2.21.0 (CUDA 12.5.1, cuDNN 9 build): all 9 CUDA "
                      "libraries load")
  # Each from the file of the stand-in (the loader resolved the symlink).
  assert [line.split() for line in lines[1:-1]] == [
      [soname, os.path.realpath(libraries[soname])] for soname in CUDA12_LIBRARIES]
  assert lines[-1] == "gpu_check passed (libraries only)"
  # The full check goes on to the GPUs: none here (no driver either).
  result = check(ld_library_path=directory)
  assert result.returncode == 4
  [line] = error_lines(result)
  assert line.startswith("ERROR: TensorFlow lists no GPU: TensorFlow's CUDA libraries load, but "
                         "the NVIDIA driver's libcuda.so.1 does not ("), line


def test_bad_usage_exits_1():
  for args in (["--libraries_only", "--print_library_dirs"], ["--no_such_flag"], ["extra"]):
    result = check(*args)
    assert result.returncode == 1, args
    assert "Traceback" not in result.stderr
