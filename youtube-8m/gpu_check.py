"""Can TensorFlow use this machine's NVIDIA GPUs? Run this first on a new GPU machine or image:

    python -m youtube-8m.gpu_check                    # libraries, then the GPUs TensorFlow lists
    python -m youtube-8m.gpu_check --libraries_only   # no GPU needed (the image build runs it)
    python -m youtube-8m.gpu_check --print_library_dirs

It loads (dlopen) each CUDA library the installed TensorFlow's build needs, by the name
TensorFlow asks the loader for, so that a missing one is named instead of TensorFlow silently
listing no GPU. Exit status: 0 passed; 1 bad usage; 2 TensorFlow is not a CUDA build; 3 a CUDA
library cannot be loaded; 4 TensorFlow lists no GPU. Every failure is one "ERROR: " line.

model_devices() of train, eval and inference exits 1 with one line saying why when the machine
has NVIDIA GPUs but TensorFlow lists none, unless --allow_cpu_on_gpu_machine.
"""

import collections
import ctypes
import glob
import os
import re
import site
import sys

from absl import app
from absl import flags
from absl import logging

from . import runtime_settings

FLAGS = flags.FLAGS

DEVICE_DIR_ENV = "YT8M_NVIDIA_DEVICE_DIR"
DEFAULT_DEVICE_DIR = "/dev"

EXIT_PASSED = 0
EXIT_NOT_CUDA_BUILD = 2
EXIT_LIBRARY_MISSING = 3
EXIT_NO_GPU = 4

# TensorFlow's CUDA build dlopens lib<name>.so.<version> (xla/tsl dso_loader), cudnn's version
# from the build info. Dependencies first, so that the first library that fails is the missing
# one, not a library that needs it.
CUDA_LIBRARY_VERSIONS = {
    "12": (("nvJitLink", "12"), ("cudart", "12"), ("cublasLt", "12"), ("cublas", "12"),
           ("cufft", "11"), ("cusparse", "12"), ("cusolver", "11"), ("nccl", "2")),
}
DRIVER_LIBRARY = "libcuda.so.1"  # the NVIDIA driver's; a GPU container gets it at run time

FIX_HINT = ("fix: install TensorFlow's CUDA build (pip install '.[gpu]', i.e. "
            "tensorflow[and-cuda]; or use the image of cloud/container/Dockerfile), then run "
            "python -m youtube-8m.gpu_check")
LOADER_HINT = ("fix: install TensorFlow's NVIDIA libraries (pip install '.[gpu]', i.e. "
               "tensorflow[and-cuda]) and give the loader their directories (python -m "
               "youtube-8m.gpu_check --print_library_dirs) in /etc/ld.so.conf.d/ + ldconfig, as "
               "cloud/container/install.sh --cuda does, or in LD_LIBRARY_PATH")


class GpuCheckError(OSError):
  """TensorFlow cannot use the machine's GPUs; the message says why, in one line."""

  def __init__(self, message, exit_status=1):
    super().__init__(message)
    self.exit_status = exit_status


def define_device_flag():
  flags.DEFINE_bool(
      "allow_cpu_on_gpu_machine", False,
      "Run on the CPU even though this machine has NVIDIA GPUs (device nodes in "
      "$%s, default %s, or NVIDIA_VISIBLE_DEVICES) that TensorFlow cannot use; by default the "
      "tool then exits 1 saying why (see python -m youtube-8m.gpu_check)."
      % (DEVICE_DIR_ENV, DEFAULT_DEVICE_DIR))


def tensorflow_build():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel (tests inject build info)
  return tf.__version__, dict(tf.sysconfig.get_build_info())


def describe_build(version, build_info):
  if not build_info.get("is_cuda_build"):
    return "TensorFlow %s is a CPU-only build (is_cuda_build: %s)" % (
        version, build_info.get("is_cuda_build", False))
  return "TensorFlow %s (CUDA %s, cuDNN %s build)" % (
      version, build_info.get("cuda_version", "?"), build_info.get("cudnn_version", "?"))


def required_libraries(version, build_info):
  """The sonames the CUDA build of build_info loads, dependencies first."""
  if build_info.get("is_rocm_build"):
    raise GpuCheckError("TensorFlow %s is a ROCm (AMD) build, not a CUDA build; %s"
                        % (version, FIX_HINT), EXIT_NOT_CUDA_BUILD)
  if not build_info.get("is_cuda_build"):
    raise GpuCheckError("%s: it cannot use NVIDIA GPUs; %s"
                        % (describe_build(version, build_info), FIX_HINT), EXIT_NOT_CUDA_BUILD)
  cuda_major = str(build_info.get("cuda_version", "")).split(".")[0]
  cudnn_major = str(build_info.get("cudnn_version", "")).split(".")[0]
  if cuda_major not in CUDA_LIBRARY_VERSIONS or not cudnn_major.isdigit():
    raise GpuCheckError(
        "%s: gpu_check knows the CUDA libraries of CUDA %s only; TensorFlow 2.21's wheels are "
        "CUDA 12 builds" % (describe_build(version, build_info),
                            ", ".join(sorted(CUDA_LIBRARY_VERSIONS))), EXIT_NOT_CUDA_BUILD)
  versions = list(CUDA_LIBRARY_VERSIONS[cuda_major])
  versions.insert(-1, ("cudnn", cudnn_major))
  return ["lib%s.so.%s" % (name, major) for name, major in versions]


def nvidia_library_dirs():
  """The lib/ directories of the installed NVIDIA wheels (site-packages/nvidia/*/lib)."""
  roots = list(sys.path)
  roots += site.getsitepackages() if hasattr(site, "getsitepackages") else []
  found = []
  for root in roots:
    for path in sorted(glob.glob(os.path.join(root or ".", "nvidia", "*", "lib"))):
      path = os.path.realpath(path)
      if os.path.isdir(path) and path not in found:
        found.append(path)
  return found


def loaded_path(soname):
  """The file the process mapped for soname (after loading it), or None."""
  try:
    with open("/proc/self/maps") as maps:
      paths = [line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6]
  except OSError:  # not Linux
    return None
  return next((path for path in paths if os.path.basename(path).startswith(soname)), None)


def check_libraries(version, build_info):
  """{soname: path} of every CUDA library TensorFlow's build needs, all loaded; else raises
  GpuCheckError naming the ones that cannot be loaded."""
  loaded, failed = {}, {}  # failed: {soname: dlerror}
  for soname in required_libraries(version, build_info):
    try:
      # RTLD_GLOBAL as TensorFlow's loader: a later library finds the symbols of an earlier one.
      ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
      loaded[soname] = loaded_path(soname) or "(loaded)"
    except OSError as error:
      failed[soname] = str(error)
  if not failed:
    return loaded
  error = next(iter(failed.values()))  # names the file, e.g. "libcudnn.so.9: cannot open ..."
  # The NVIDIA wheels' directories that hold a library that did not load.
  found_in = [directory for directory in nvidia_library_dirs()
              if any(glob.glob(os.path.join(directory, soname + "*")) for soname in failed)]
  where = ("; found in %s, which the loader does not search" % ", ".join(found_in)
           if found_in else "")
  raise GpuCheckError("%s cannot load %s (%s)%s; %s" % (
      describe_build(version, build_info), ", ".join(failed), " ".join(error.split()), where,
      LOADER_HINT), EXIT_LIBRARY_MISSING)


def nvidia_machine_signs(environ=None):
  """What says this machine has NVIDIA GPUs ([] if nothing): its device nodes (nvidia0, ...,
  nvidiactl in $YT8M_NVIDIA_DEVICE_DIR) and NVIDIA_VISIBLE_DEVICES of a GPU container."""
  environ = os.environ if environ is None else environ
  device_dir = environ.get(DEVICE_DIR_ENV) or DEFAULT_DEVICE_DIR
  if not os.path.isdir(device_dir):
    raise GpuCheckError("%s=%s is not a directory (where the NVIDIA device nodes are looked "
                        "for; default %s)" % (DEVICE_DIR_ENV, device_dir, DEFAULT_DEVICE_DIR))
  nodes = sorted((name for name in os.listdir(device_dir)
                  if re.fullmatch(r"nvidia(\d+|ctl)", name)),
                 key=lambda name: (name == "nvidiactl", len(name), name))
  signs = [os.path.join(device_dir, name) for name in nodes]
  visible = environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
  if visible and visible.lower() not in ("void", "none"):
    signs.append("NVIDIA_VISIBLE_DEVICES=" + visible)
  return signs


def why_no_gpu(version=None, build_info=None):
  """Why TensorFlow lists no GPU: not a CUDA build, no driver, or a CUDA library that cannot
  be loaded."""
  if build_info is None:
    version, build_info = tensorflow_build()
  try:
    required_libraries(version, build_info)
    try:
      ctypes.CDLL(DRIVER_LIBRARY)
    except OSError as error:
      return ("%s cannot load the NVIDIA driver's %s (%s): the container was started without "
              "GPU access, or the driver is not installed (check nvidia-smi)" % (
                  describe_build(version, build_info), DRIVER_LIBRARY,
                  " ".join(str(error).split())))
    check_libraries(version, build_info)
  except GpuCheckError as error:
    return str(error)
  return ("TensorFlow's CUDA libraries and the driver's %s load, yet TensorFlow lists no GPU "
          "(CUDA_VISIBLE_DEVICES=%r; TensorFlow's log above says more, and nvidia-smi)"
          % (DRIVER_LIBRARY, os.environ.get("CUDA_VISIBLE_DEVICES", "")))


def gpu_name(gpu):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    return tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name
  except (ValueError, RuntimeError):  # details are only known for some device kinds
    return gpu.name


def device_line(gpus, towers):
  """One line naming the devices a tool uses: the GPUs (count x name) or CPU only, and the
  devices the model runs on (its towers)."""
  if gpus:
    names = collections.Counter(gpu_name(gpu) for gpu in gpus)
    what = "%d GPU%s (%s)" % (len(gpus), "s" if len(gpus) > 1 else "", ", ".join(
        "%d x %s" % (count, name) if count > 1 else name for name, count in names.items()))
  else:
    what = "CPU only (TensorFlow lists no GPU): %s, %s" % (
        runtime_settings.HostCpu().describe(), runtime_settings.onednn_state())
  return "Devices: %s; towers: %s" % (what, ", ".join(towers))


def model_devices(allow_cpu_on_gpu_machine, max_gpus=1, cpu_towers=0):
  """The devices the model runs on, one a tower: min(max_gpus, GPUs) GPUs, else /cpu:0;
  cpu_towers > 0: that many CPU devices. On a machine with NVIDIA GPUs where TensorFlow lists
  none: GpuCheckError saying why, or with allow_cpu_on_gpu_machine a warning."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices("GPU")
  signs = [] if gpus else nvidia_machine_signs()
  if signs:
    message = "this machine has NVIDIA GPUs (%s) but TensorFlow lists none: %s" % (
        ", ".join(signs), why_no_gpu())
    if not allow_cpu_on_gpu_machine:
      raise GpuCheckError(message + "; or pass --allow_cpu_on_gpu_machine to run on the CPU "
                          "anyway")
    logging.warning("--allow_cpu_on_gpu_machine: running on the CPU; %s", message)
  if cpu_towers:
    towers = ["/cpu:%d" % i for i in range(cpu_towers)]
  else:
    towers = ["/gpu:%d" % i for i in range(min(max_gpus, len(gpus)))] or ["/cpu:0"]
  logging.info("%s", device_line(gpus, towers))
  return towers


def define_flags():
  flags.DEFINE_bool("libraries_only", False,
                    "Only check that TensorFlow's CUDA libraries load (needs no GPU: the "
                    "image build runs it); else also list the GPUs TensorFlow sees.")
  flags.DEFINE_bool("print_library_dirs", False,
                    "Print the lib/ directories of the installed NVIDIA wheels, one a line, "
                    "for /etc/ld.so.conf.d/ or LD_LIBRARY_PATH (exit 2 if TensorFlow is not a "
                    "CUDA build), and nothing else.")


def run(version=None, build_info=None):
  """The check of the command line; returns the exit status."""
  if FLAGS.libraries_only and FLAGS.print_library_dirs:
    raise app.UsageError("--libraries_only and --print_library_dirs exclude each other")
  if build_info is None:
    version, build_info = tensorflow_build()
  if FLAGS.print_library_dirs:
    required_libraries(version, build_info)  # a CPU-only build has none to give the loader
    for directory in nvidia_library_dirs():
      print(directory)
    return EXIT_PASSED
  loaded = check_libraries(version, build_info)
  print("gpu_check: %s: all %d CUDA libraries load" % (describe_build(version, build_info),
                                                       len(loaded)))
  for soname, path in loaded.items():
    print("  %-20s %s" % (soname, path))
  if FLAGS.libraries_only:
    print("gpu_check passed (libraries only)")
    return EXIT_PASSED
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    raise GpuCheckError("TensorFlow lists no GPU: %s" % why_no_gpu(version, build_info),
                        EXIT_NO_GPU)
  print("gpu_check: TensorFlow lists %d GPU%s:" % (len(gpus), "s" if len(gpus) > 1 else ""))
  for gpu in gpus:
    details = tf.config.experimental.get_device_details(gpu)
    capability = details.get("compute_capability")
    print("  %s  %s, compute capability %s" % (
        gpu.name, details.get("device_name", "?"),
        ".".join(map(str, capability)) if capability else "?"))
  print("gpu_check passed")
  return EXIT_PASSED


def main(argv, version=None, build_info=None):
  """version/build_info: stand-ins for the installed TensorFlow's (tests)."""
  if len(argv) > 1:
    raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
  try:
    return run(version, build_info)
  except GpuCheckError as error:
    sys.stdout.flush()
    sys.stderr.write("ERROR: %s\n" % error)
    return error.exit_status


if __name__ == "__main__":
  define_flags()
  app.run(main)
