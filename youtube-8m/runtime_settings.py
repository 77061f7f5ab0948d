"""The process settings importing the package makes, and the CPU facts they follow from.

Applied by the package's __init__ before TensorFlow is imported (nothing here imports it at
module level): TensorFlow reads these variables when it starts. An explicit setting in the
environment always wins. Measurements behind each choice: docs/hardware.md, "CPU hosts".

* TF_CPU_ALLOCATOR_USE_BFC=true: TensorFlow's default CPU allocator returns every large buffer
  to the OS and page-faults it back at the next step; its BFC pool keeps them.
* TF_ENABLE_ONEDNN_OPTS=1 on x86-64 CPUs with AVX2: TensorFlow's wheels turn their oneDNN
  kernels on by themselves only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX; on an
  AVX2-only CPU the matmuls would run in Eigen kernels built for AVX without FMA, while oneDNN
  picks its kernels for the CPU it finds at run time.
* glibc malloc keeps freed memory (M_MMAP_MAX=0, a 2 GiB M_TRIM_THRESHOLD): serialized videos
  (~350 KB strings) live outside the BFC pool; glibc would map each one and unmap it when
  freed, faulting every record's pages in anew. glibc reads its MALLOC_* variables only at
  start-up, so mallopt applies the same now; any MALLOC_* variable in the environment wins.
"""

import ctypes
import os
import platform
import sys

# /proc/cpuinfo flag names, by what they tell about this project's kernels.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# Where TensorFlow's x86 wheels turn oneDNN on by themselves.
TENSORFLOW_ONEDNN_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16",
                           "amx_int8")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
BFC_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def _read_cpuinfo(path):
  """{field: value} of the first CPU in path ({} where it is unreadable)."""
  fields = {}
  try:
    with open(path) as cpuinfo:
      for line in cpuinfo:
        key, _, value = line.partition(":")
        key = key.strip()
        if not key and fields:  # the blank line after the first CPU
          break
        fields.setdefault(key, value.strip())
  except OSError:
    pass
  return fields


class HostCpu(object):
  """The CPU's model name and the vector extensions the project's kernels care about."""

  def __init__(self, cpuinfo_path="/proc/cpuinfo", machine=None):
    fields = _read_cpuinfo(cpuinfo_path)
    self.flags = set(fields.get("flags", "").split())
    self.machine = machine or platform.machine()
    self.model_name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:  # names alone can hide the generation
      self.model_name += " family %s model %s" % (fields["cpu family"], fields["model"])

  @property
  def is_x86_64(self):
    return self.machine.lower() in ("x86_64", "amd64")

  @property
  def has_native_bfloat16(self):
    """bfloat16 dot products in hardware (AVX512_BF16 or AMX); elsewhere they are emulated."""
    return any(flag in self.flags for flag in NATIVE_BFLOAT16_FLAGS)

  @property
  def tensorflow_enables_onednn(self):
    """TensorFlow's own default: oneDNN on where the CPU has VNNI, BF16 or AMX."""
    return self.is_x86_64 and any(flag in self.flags for flag in TENSORFLOW_ONEDNN_FLAGS)

  def wants_onednn(self):
    """Where this package turns oneDNN on: x86-64 with AVX2."""
    return self.is_x86_64 and "avx2" in self.flags

  def describe(self):
    """E.g. 'AMD EPYC family 25 model 1 (x86_64: avx2 fma; no AVX-512, no AMX)'."""
    present = [flag for flag in VECTOR_FLAGS if flag in self.flags]
    missing = [kind for kind, prefix in (("AVX-512", "avx512"), ("AMX", "amx"))
               if not any(flag.startswith(prefix) for flag in self.flags)]
    details = " ".join(present) or "no AVX2"
    if missing:
      details += "; " + ", ".join("no " + kind for kind in missing)
    return "%s (%s: %s)" % (self.model_name, self.machine, details)


def _keep_freed_memory(environ):
  if not sys.platform.startswith("linux") or any(
      name in environ for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")):
    return
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # not glibc
    return
  mallopt(_M_MMAP_MAX, 0)
  mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)  # the largest int mallopt takes


def defaults_for(cpu, environ):
  """The TensorFlow variables this package sets for cpu, less those environ already sets."""
  wanted = {BFC_ENV: "true"}
  if cpu.wants_onednn():
    wanted[ONEDNN_ENV] = "1"
  return {name: value for name, value in wanted.items() if name not in environ}


def apply(cpu=None):
  """Sets this process's defaults (module docstring) unless the environment sets them."""
  cpu = cpu or HostCpu()
  chosen = defaults_for(cpu, os.environ)
  os.environ.update(chosen)
  if (ONEDNN_ENV in chosen and "tensorflow" in sys.modules
      and not cpu.tensorflow_enables_onednn):
    # TensorFlow read the variable when it was imported: this process keeps its default.
    sys.stderr.write(
        "youtube-8m: TensorFlow was imported before this package, so its oneDNN kernels stay "
        "off on this CPU (AVX2 without AVX-512 VNNI/BF16/AMX): import youtube-8m first, or set "
        "%s=1 before starting Python\n" % ONEDNN_ENV)
  _keep_freed_memory(os.environ)


def onednn_state():
  """'oneDNN on|off (TF_ENABLE_ONEDNN_OPTS=... or TensorFlow's default)' as this process's
  TensorFlow runs (imports TensorFlow)."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  state = "on" if _pywrap_util_port.IsMklEnabled() else "off"
  # Whoever set the variable (this package, for this process or its parent, or the user).
  why = ("%s=%s" % (ONEDNN_ENV, os.environ[ONEDNN_ENV]) if ONEDNN_ENV in os.environ
         else "TensorFlow's default for this CPU")
  return "oneDNN %s (%s)" % (state, why)
