"""python -m youtube-8m.gpu_check, real processes: the CPU-only build is refused in one line;
with a CUDA build's info injected, real shared libraries built here (gcc) under the sonames
TensorFlow's CUDA 12 build loads stand in for the NVIDIA wheels' libraries."""

import json
import os
import subprocess
import sys

import pytest

from conftest import TINY_FLAGS, cli_env, run, run_cli, yt8m

gpu_check = yt8m("gpu_check")

# What tf.sysconfig.get_build_info() of the tensorflow 2.21.0 (CUDA) wheel says, in part.
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
  """Runs gpu_check with build_info standing in for TensorFlow's (None: the installed CPU
  build's) and this LD_LIBRARY_PATH and PYTHONPATH."""
  env = cli_env({"LD_LIBRARY_PATH": ld_library_path or "", "PYTHONPATH": pythonpath or "",
                 "CUDA_VISIBLE_DEVICES": ""})
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_one_missing_library_is_named(tmp_path, libraries):
  """Named in one line, by the build-time check and the full check alike."""
  directory = library_dir(tmp_path, libraries, missing=["libcudnn.so.9"])
  result = check("--libraries_only", ld_library_path=directory)
  assert result.returncode == 3, result.stderr[-3000:]
  [line] = error_lines(result)
  result = check(ld_library_path=directory)
  assert result.returncode == 3 and error_lines(result) == [line]
  assert line.startswith("ERROR: TensorFlow 2.21.0 (CUDA 12.5.1, cuDNN 9 build) cannot load "
                         "libcudnn.so.9 (libcudnn.so.9: cannot open shared object file"), line
  assert line.endswith("; " + gpu_check.LOADER_HINT)


@pytest.mark.slow
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
  assert "; found in %s, which the loader does not search; fix: " % wheel_lib in line
  printed = check("--print_library_dirs", pythonpath=str(site))
  assert printed.returncode == 0, printed.stderr[-3000:]
  assert wheel_lib in printed.stdout.splitlines()
  result = check("--libraries_only", pythonpath=str(site),
                 ld_library_path=":".join([directory] + printed.stdout.split()))
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
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
  assert line.startswith("ERROR: TensorFlow lists no GPU: TensorFlow 2.21.0 (CUDA 12.5.1, cuDNN "
                         "9 build) cannot load the NVIDIA driver's libcuda.so.1 (libcuda.so.1: "
                         "cannot open shared object file"), line
  # With a stand-in for the driver's library: the libraries and the driver load, no GPU.
  driver = tmp_path / "driver"
  driver.mkdir()
  build_library(str(driver), "libcuda.so.1")
  result = check(ld_library_path="%s:%s" % (directory, driver))
  assert result.returncode == 4
  assert error_lines(result) == [
      "ERROR: TensorFlow lists no GPU: TensorFlow's CUDA libraries and the driver's libcuda.so.1 "
      "load, yet TensorFlow lists no GPU (CUDA_VISIBLE_DEVICES=''; TensorFlow's log above says "
      "more, and nvidia-smi)"]


@pytest.mark.slow
def test_bad_usage_exits_1():
  for args in (["--libraries_only", "--print_library_dirs"], ["--no_such_flag"], ["extra"]):
    result = check(*args)
    assert result.returncode == 1, args
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# train, eval and inference on a machine with NVIDIA GPUs that TensorFlow (here: the CPU build)
# cannot use, faked by a device-node directory with nvidia0.

MODEL_FLAGS = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=8"]
# With the CPU as the tools run it (the test process imported the package too).
CPU_ONLY_LINE = "Devices: CPU only (TensorFlow lists no GPU): %s, %s; towers: /cpu:0" % (
    yt8m("runtime_settings").HostCpu().describe(), yt8m("runtime_settings").onednn_state())


def test_nvidia_machine_signs(tmp_path):
  devices = tmp_path / "dev"
  devices.mkdir()
  for name in ("nvidiactl", "nvidia1", "nvidia0", "nvidia-uvm", "null", "nvidia10"):
    (devices / name).write_text("")
  signs = gpu_check.nvidia_machine_signs({gpu_check.DEVICE_DIR_ENV: str(devices)})
  assert signs == [str(devices / name) for name in ("nvidia0", "nvidia1", "nvidia10",
                                                    "nvidiactl")]
  empty = tmp_path / "empty"
  empty.mkdir()
  for visible, expected in (("all", ["NVIDIA_VISIBLE_DEVICES=all"]), ("0,1", [
      "NVIDIA_VISIBLE_DEVICES=0,1"]), ("void", []), ("none", []), ("", [])):
    assert gpu_check.nvidia_machine_signs({gpu_check.DEVICE_DIR_ENV: str(empty),
                                           "NVIDIA_VISIBLE_DEVICES": visible}) == expected
  with pytest.raises(gpu_check.GpuCheckError, match="^YT8M_NVIDIA_DEVICE_DIR=%s is not a "
                     "directory" % (tmp_path / "missing")):
    gpu_check.nvidia_machine_signs({gpu_check.DEVICE_DIR_ENV: str(tmp_path / "missing")})


def one_error_line(result):
  assert result.returncode == 1, result.stderr[-3000:]
  errors = error_lines(result)
  assert len(errors) == 1, result.stderr[-3000:]
  return errors[0]


@pytest.mark.slow
def test_tools_refuse_the_cpu_of_a_gpu_machine(tiny_data, tmp_path):
  """With nvidia0 in the device directory, train, eval and inference exit 1 with one line that
  says why (the CPU-only build) and writes nothing; --allow_cpu_on_gpu_machine runs them on the
  CPU (with a warning); a device directory without NVIDIA nodes runs them as before, on the CPU
  with the device line."""
  gpu_dev, cpu_dev = tmp_path / "gpu_dev", tmp_path / "cpu_dev"
  for directory in (gpu_dev, cpu_dev):
    directory.mkdir()
    (directory / "null").write_text("")
  (gpu_dev / "nvidia0").write_text("")
  (gpu_dev / "nvidiactl").write_text("")
  on_gpu_machine = {gpu_check.DEVICE_DIR_ENV: str(gpu_dev), "NVIDIA_VISIBLE_DEVICES": ""}
  on_cpu_machine = {gpu_check.DEVICE_DIR_ENV: str(cpu_dev), "NVIDIA_VISIBLE_DEVICES": ""}
  expected_error = (
      "ERROR: this machine has NVIDIA GPUs (%s, %s) but TensorFlow lists none: TensorFlow "
      "2.21.0 is a CPU-only build (is_cuda_build: False): it cannot use NVIDIA GPUs; %s; or "
      "pass --allow_cpu_on_gpu_machine to run on the CPU anyway" % (
          gpu_dev / "nvidia0", gpu_dev / "nvidiactl", gpu_check.FIX_HINT))
  warning = "--allow_cpu_on_gpu_machine: running on the CPU; this machine has NVIDIA GPUs"
  train_dir = str(tmp_path / "train")
  output_csv = str(tmp_path / "predictions.csv")
  tools = {
      "train": ["--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
                "--batch_size=8", "--num_epochs=100", "--export_model_steps=1000"] + MODEL_FLAGS,
      "eval": ["--train_dir=" + train_dir, "--eval_data_pattern=" + tiny_data["validate_pattern"],
               "--batch_size=64", "--run_once=True"],
      "inference": ["--train_dir=" + train_dir, "--inference_model_file=inference_model_4",
                    "--input_data_pattern=" + tiny_data["test_pattern"],
                    "--output_file=" + output_csv, "--batch_size=8"]}

  def written():
    return sorted(os.listdir(train_dir)) if os.path.isdir(train_dir) else None, os.path.exists(
        output_csv)

  for tool, args in tools.items():
    args = args + (["--max_steps=2"] if tool == "train" else [])
    before = written()
    result = run_cli(tool, *args, check=False, env=on_gpu_machine)
    assert one_error_line(result) == expected_error, tool
    assert written() == before, tool
    result = run_cli(tool, *args, "--allow_cpu_on_gpu_machine", env=on_gpu_machine)
    assert warning in result.stderr and CPU_ONLY_LINE in result.stderr, tool
    if tool == "train":
      assert os.path.isfile(os.path.join(train_dir, "model.ckpt-2.index"))
    args = args if tool != "train" else args[:-1] + ["--max_steps=4"]  # resumes to step 4
    result = run_cli(tool, *args, env=on_cpu_machine)
    assert CPU_ONLY_LINE in result.stderr and warning not in result.stderr, tool
  assert os.path.isfile(os.path.join(train_dir, "inference_model_4.index"))
  assert open(output_csv).readline() == "VideoId,LabelConfidencePairs\n"

  result = run_cli("train", *tools["train"], "--max_steps=6", check=False,
                   env={gpu_check.DEVICE_DIR_ENV: str(tmp_path / "no_such_dir")})
  assert one_error_line(result) == (
      "ERROR: YT8M_NVIDIA_DEVICE_DIR=%s is not a directory (where the NVIDIA device nodes are "
      "looked for; default /dev)" % (tmp_path / "no_such_dir"))


@pytest.mark.slow
def test_gpu_check_script(tmp_path):
  """scripts/gpu_check.sh's step 1 is gpu_check: on a machine with NVIDIA GPUs (nvidia0 in the
  device directory) its failure stops the script with its status; without them the script goes
  on to train and evaluate on CPU towers."""
  gpu_dev, cpu_dev = tmp_path / "gpu_dev", tmp_path / "cpu_dev"
  gpu_dev.mkdir()
  cpu_dev.mkdir()
  (gpu_dev / "nvidia0").write_text("")
  script = [os.path.join("scripts", "gpu_check.sh"), "--steps=2"]
  env = {"PYTHON": sys.executable, "NVIDIA_VISIBLE_DEVICES": ""}
  result = run(["bash"] + script, check=False, timeout=300,
               env=cli_env(dict(env, **{gpu_check.DEVICE_DIR_ENV: str(gpu_dev)})))
  assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
  assert len(error_lines(result)) == 1
  assert result.stdout.splitlines()[-1] == (
      "GPU check FAILED at step 1 (exit 2): this machine has NVIDIA GPUs (%s) that TensorFlow "
      "cannot use; see the ERROR line above." % (gpu_dev / "nvidia0"))
  result = run(["bash"] + script, timeout=600,
               env=cli_env(dict(env, **{gpu_check.DEVICE_DIR_ENV: str(cpu_dev)})))
  lines = result.stdout.splitlines()
  assert "   (no NVIDIA GPU on this machine: expected)" in lines
  assert lines[-1] == "GPU check passed (on CPU: no GPU found).", result.stdout[-3000:]
  assert any(line.startswith("4. float16 ensemble evaluation: ") for line in lines)
