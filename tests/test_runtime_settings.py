"""The process settings importing the package makes (youtube-8m/runtime_settings.py)."""

import json
import sys

import pytest

from conftest import run, yt8m

runtime_settings = yt8m("runtime_settings")

# Allocates and frees a 64 MiB buffer (above glibc's largest dynamic mmap threshold, so
# plain glibc maps and unmaps it every time) ten times, after importing the package;
# prints the page faults of the last nine rounds and the TensorFlow settings.
PROBE = """
import importlib, json, os, resource
importlib.import_module("youtube-8m")
def faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for round in range(10):
  if round == 1:
    start = faults()
  buffer = bytearray(64 << 20)  # calloc-like: zero pages touched
  buffer[::4096] = b"x" * len(buffer[::4096])
  del buffer
print(json.dumps({"faults": faults() - start,
                  "bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"),
                  "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}))
"""

# /proc/cpuinfo excerpts of the two kinds of host the defaults were measured on.
AVX2_CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC
flags		: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2

processor	: 1
model name	: another CPU
flags		: avx512f
"""
AVX512_CPUINFO = """processor	: 0
cpu family	: 25
model		: 17
model name	: AMD EPYC 9B14
flags		: fma avx avx2 avx512f avx512bw avx512_vnni avx512_bf16
"""


def probe(env):
  result = run([sys.executable, "-c", PROBE], env=env)
  return json.loads(result.stdout)


@pytest.mark.slow
def test_freed_buffers_are_reused_not_faulted_in_again():
  pages = (64 << 20) // 4096
  tuned = probe({"PATH": "/usr/bin:/bin"})
  assert tuned["faults"] < pages, tuned  # nine rounds would be ~9 x 16384 faults
  assert tuned["bfc"] == "true"
  # An explicit setting in the environment wins, whatever the CPU.
  plain = probe({"PATH": "/usr/bin:/bin", "MALLOC_TRIM_THRESHOLD_": "131072",
                 "TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_ENABLE_ONEDNN_OPTS": "0"})
  assert plain["faults"] > 8 * pages, plain
  assert plain["bfc"] == "false"
  assert plain["onednn"] == "0"
  assert tuned["onednn"] == ("1" if runtime_settings.HostCpu().wants_onednn() else None)


def cpu(tmp_path, text, machine="x86_64"):
  path = tmp_path / "cpuinfo"
  path.write_text(text)
  return runtime_settings.HostCpu(str(path), machine=machine)


def test_host_cpu_reads_the_first_cpu(tmp_path):
  avx2 = cpu(tmp_path, AVX2_CPUINFO)
  assert avx2.describe() == (
      "AMD EPYC family 25 model 1 (x86_64: avx2 fma; no AVX-512, no AMX)")
  assert not avx2.has_native_bfloat16
  avx512 = cpu(tmp_path, AVX512_CPUINFO)
  assert avx512.describe() == (
      "AMD EPYC 9B14 family 25 model 17 (x86_64: avx2 fma avx512f avx512_vnni avx512_bf16; "
      "no AMX)")
  assert avx512.has_native_bfloat16
  assert avx512.tensorflow_enables_onednn and not avx2.tensorflow_enables_onednn
  unreadable = runtime_settings.HostCpu(str(tmp_path / "missing"), machine="x86_64")
  assert unreadable.flags == set() and not unreadable.wants_onednn()


def test_onednn_is_turned_on_for_x86_64_with_avx2_only_unless_set(tmp_path):
  defaults_for = runtime_settings.defaults_for
  avx2, avx512 = cpu(tmp_path, AVX2_CPUINFO), cpu(tmp_path, AVX512_CPUINFO)
  assert defaults_for(avx2, {}) == {"TF_CPU_ALLOCATOR_USE_BFC": "true",
                                    "TF_ENABLE_ONEDNN_OPTS": "1"}
  assert defaults_for(avx512, {})["TF_ENABLE_ONEDNN_OPTS"] == "1"
  assert defaults_for(avx2, {"TF_ENABLE_ONEDNN_OPTS": "0"}) == {
      "TF_CPU_ALLOCATOR_USE_BFC": "true"}
  # Elsewhere TensorFlow's own default stands (not measured here).
  arm = cpu(tmp_path, "model name\t: Neoverse-V1\nflags\t\t: fp asimd sve\n", machine="aarch64")
  assert defaults_for(arm, {}) == {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
  no_avx2 = cpu(tmp_path, "model name\t: old\nflags\t\t: sse4_2 avx\n")
  assert "TF_ENABLE_ONEDNN_OPTS" not in defaults_for(no_avx2, {})


@pytest.mark.slow
def test_tensorflow_runs_with_the_setting_and_says_why():
  code = ("import importlib; s = importlib.import_module('youtube-8m.runtime_settings'); "
          "importlib.import_module('youtube-8m'); print(s.onednn_state())")
  state = run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin",
                                                 "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
  if runtime_settings.HostCpu().wants_onednn():
    assert state.strip() == "oneDNN on (TF_ENABLE_ONEDNN_OPTS=1)"
  off = run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin",
                                               "TF_CPP_MIN_LOG_LEVEL": "3",
                                               "TF_ENABLE_ONEDNN_OPTS": "0"}).stdout
  assert off.strip() == "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)"


def test_bfloat16_warning_only_without_it_in_hardware(tmp_path):
  fp16_layers = yt8m("fp16_layers")
  warning = fp16_layers.emulated_bfloat16_warning(cpu(tmp_path, AVX2_CPUINFO))
  assert warning.startswith("--compute_dtype=bfloat16: this CPU, AMD EPYC family 25 model 1 ")
  assert "--compute_dtype=float32 is faster here" in warning
  assert fp16_layers.emulated_bfloat16_warning(cpu(tmp_path, AVX512_CPUINFO)) is None


@pytest.mark.slow
def test_tensorflow_imported_first_keeps_its_default_and_says_so():
  code = ("import importlib, tensorflow; importlib.import_module('youtube-8m'); "
          "print(importlib.import_module('youtube-8m.runtime_settings').onednn_state())")
  result = run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin",
                                                  "TF_CPP_MIN_LOG_LEVEL": "3"})
  cpu = runtime_settings.HostCpu()
  if not cpu.wants_onednn() or cpu.tensorflow_enables_onednn:
    pytest.skip("TensorFlow's own oneDNN default is this package's on this CPU")
  # The variable is set (for child processes), but this process's TensorFlow started without.
  assert result.stdout.strip() == "oneDNN off (TF_ENABLE_ONEDNN_OPTS=1)"
  assert ("youtube-8m: TensorFlow was imported before this package, so its oneDNN kernels stay "
          "off") in result.stderr
