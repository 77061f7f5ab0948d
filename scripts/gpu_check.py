"""The GPU readiness check of scripts/gpu_check.sh (see there): TensorFlow's CUDA libraries and
GPUs (python -m youtube-8m.gpu_check), tiny multi-tower training, a float16 ensemble,
examples/sec. Exits with gpu_check's status if step 1 fails on a machine with NVIDIA GPUs, 1 if
a later step fails."""

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from bench_util import REPO_ROOT, run_child, yt8m

NUM_CLASSES = 100
MODEL = ["--frame_features", "--feature_names=rgb,audio", "--feature_sizes=1024,128",
         "--num_classes=%d" % NUM_CLASSES, "--iterations=60", "--moe_l2=1e-6",
         "--netvlad_relu=False", "--gating=True", "--moe_prob_gating=True"]


def run(module, *flags):
  command = yt8m(module, *flags)
  print("+ " + " ".join(command), flush=True)
  seconds, _, log = run_child(command)
  return log, seconds


def median_speed(log):
  speeds = [float(s) for s in re.findall(r"training step \d+ \| Loss: \S+ Examples/sec: ([\d.]+)",
                                         log)]
  speeds = speeds[len(speeds) // 3:]  # the first steps include graph set-up and warm-up
  return sorted(speeds)[len(speeds) // 2] if speeds else 0.0


def library_check():
  """Step 1, python -m youtube-8m.gpu_check, its output shown: (exit status to stop with, or
  None; the number of GPUs TensorFlow lists). A failure stops the script on a machine with
  NVIDIA GPUs (nothing else is worth running there); elsewhere it means no GPU."""
  command = yt8m("gpu_check")
  print("1. + " + " ".join(command), flush=True)
  result = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  print(result.stdout, end="", flush=True)
  if result.returncode == 0:
    listed = re.search(r"TensorFlow lists (\d+) GPU", result.stdout)
    return None, int(listed.group(1)) if listed else 0
  sys.path.insert(0, REPO_ROOT)
  signs = importlib.import_module("youtube-8m.gpu_check").nvidia_machine_signs()
  if signs:
    print("GPU check FAILED at step 1 (exit %d): this machine has NVIDIA GPUs (%s) that "
          "TensorFlow cannot use; see the ERROR line above." % (result.returncode,
                                                               ", ".join(signs)), flush=True)
    return result.returncode, 0
  print("   (no NVIDIA GPU on this machine: expected)", flush=True)
  return None, 0


def main(argv):
  parser = argparse.ArgumentParser(description="GPU readiness check (scripts/gpu_check.sh).")
  parser.add_argument("--num_gpu", type=int, default=None,
                      help="towers to train on (default: every GPU)")
  parser.add_argument("--steps", type=int, default=60, help="training steps per model")
  parser.add_argument("--work_dir", default="", help="default: a temporary directory")
  args = parser.parse_args(argv)
  if (args.num_gpu is not None and args.num_gpu < 1) or args.steps < 1:
    parser.error("--num_gpu and --steps must be >= 1")
  status, gpus = library_check()
  if status is not None:
    sys.exit(status)
  args.num_gpu = args.num_gpu or max(gpus, 1)
  towers = ["--num_gpu=%d" % args.num_gpu]
  if not gpus:
    print("   NO GPU visible to TensorFlow: running on CPU towers (--cpu_towers), which checks "
          "the script, not a GPU.")
    towers.append("--cpu_towers")
  elif args.num_gpu > gpus:
    print("   --num_gpu=%d but %d GPU(s): train.py uses %d tower(s)" % (args.num_gpu, gpus, gpus))

  work = args.work_dir or tempfile.mkdtemp(prefix="yt8m-gpu-check-")
  try:
    data = os.path.join(work, "data")
    run("synthetic_data", "--output_dir=" + data, "--levels=frame", "--num_train_files=4",
        "--num_validate_files=60", "--validate_videos_per_file=2", "--num_test_files=0",
        "--videos_per_file=64", "--num_classes=%d" % NUM_CLASSES, "--min_frames=60",
        "--max_frames=120", "--seed=1")
    pattern = "%s/frame/train*.tfrecord" % data
    common = ["--train_data_pattern=" + pattern, "--batch_size=32", "--num_epochs=1000",
              "--max_steps=%d" % args.steps, "--export_model_steps=1000000",
              "--base_learning_rate=0.001"] + MODEL
    log, seconds = run("train", "--train_dir=" + os.path.join(work, "single"),
                       "--netvlad_cluster_size=32", "--netvlad_hidden_size=256",
                       *(common + towers))
    print("2. single model (K=32, H=256) on %s: %.1f examples/sec (median after warm-up; "
          "batch 32 x towers), %d steps in %.1f s" % (" ".join(towers), median_speed(log),
                                                     args.steps, seconds))
    ensemble = os.path.join(work, "fp16_ensemble")
    log, seconds = run("train", "--train_dir=" + ensemble, "--ensemble_num=2",
                       "--float16_flag=True", "--netvlad_cluster_size=32",
                       "--netvlad_hidden_size=256", "--ensemble_wts=0.5",
                       "--netvlad_cluster_size=16", "--netvlad_hidden_size=128",
                       "--ensemble_wts=0.5", *(common + towers))
    print("3. float16 2-model ensemble on %s: %.1f examples/sec, %d steps in %.1f s" % (
        " ".join(towers), median_speed(log), args.steps, seconds))
    results = os.path.join(work, "eval.json")
    log, seconds = run("eval", "--train_dir=" + ensemble, "--run_once=True",
                       "--eval_data_pattern=%s/frame/validate*.tfrecord" % data,
                       "--batch_size=64", "--results_json=" + results)
    with open(results) as handle:
      result = json.load(handle)
    print("4. float16 ensemble evaluation: %d videos in %.1f s (%.1f videos/sec with graph "
          "set-up), GAP %.3f after %d steps" % (result["examples"], seconds,
                                                result["examples"] / seconds, result["gap"],
                                                args.steps))
    print("GPU check passed%s." % ("" if gpus else " (on CPU: no GPU found)"))
  finally:
    if not args.work_dir:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1:])
