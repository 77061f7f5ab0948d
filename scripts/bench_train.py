"""Benchmark: training examples/sec and peak memory of a NetVLAD model of the
original's size.

    python scripts/bench_train.py [--cluster=32 --hidden=512 --batch_size=160 --iterations=300]
                                  [--data=local|gcs|both] [--eval_batch_size=1024]
                                  [--compute_dtype=float32|bfloat16|float16]

Generates a small synthetic frame-level dataset (3862 classes), trains the model with the
original's flags for --steps steps via `python -m youtube-8m.train`, and reports the median
examples/sec of the logged steps (the first steps, which include graph warm-up, are
skipped) and the training process's own peak memory (os.wait4's ru_maxrss). The same
train.py then runs on ONE in-memory batch (its first batch cached and repeated: the model
step alone, no input pipeline), and the ratios end to end / step alone are printed, of the
examples/sec and of the CPU seconds per step (the latter hardly moved by other jobs). Last,
eval.py evaluates the checkpoint on the training files (12 x 100 videos by default: one full
batch of the original's --eval_batch_size=1024) and its peak memory is printed
(--eval_batch_size=0 skips it).

--model_threads=N runs both trainings with TensorFlow's intra-op and inter-op pools at N
threads (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS): with N below the core count the
input pipeline has a core of its own, as on a GPU machine, and end to end / step alone then
shows whether the pipeline is on the step's critical path or only competes with it for CPU.

--data=gcs uploads the dataset to a local Cloud Storage emulator (gcp-storage-emulator on
127.0.0.1, started here) and trains from its gs:// paths, the shards being staged ahead by
readers.py / staging.ShardStager; --data=both runs local then gs://, to show whether reading
from a bucket starves training. On this machine the emulator shares the 2 cores with
training, so the gs:// number is a lower bound. Not a test: it prints numbers.
"""

import argparse
import glob
import importlib
import os
import shutil
import sys
import tempfile
import time

from bench_util import (REPO_ROOT, allocator_setting, host_setting, run_child,
                        run_child_usage)
from original_flags import original_model_flags

VIDEOS_PER_FILE = 100


def parse_args(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--cluster", type=int, default=32)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=160)
  parser.add_argument("--iterations", type=int, default=300)
  parser.add_argument("--steps", type=int, default=25)
  parser.add_argument("--skip_steps", type=int, default=5)
  parser.add_argument("--num_train_files", type=int, default=12)
  parser.add_argument("--data", choices=("local", "gcs", "both"), default="local",
                      help="train from local files, from gs:// on a local emulator, or both")
  parser.add_argument("--eval_batch_size", type=int, default=1024)
  parser.add_argument("--compute_dtype", default="float32",
                      help="train.py's and eval.py's --compute_dtype")
  parser.add_argument("--model_threads", type=int, default=0,
                      help="TensorFlow's intra-op and inter-op threads (0: one per core)")
  parser.add_argument("--work_dir", default=None)
  return parser.parse_args(argv)


def thread_env(args):
  if not args.model_threads:
    return {}
  return {"TF_NUM_INTRAOP_THREADS": str(args.model_threads),
          "TF_NUM_INTEROP_THREADS": str(args.model_threads)}


# train.py whose reader yields its first batch again and again: the model step alone.
STEP_ALONE = """
import importlib
from absl import app
readers = importlib.import_module("youtube-8m.readers")
full = readers.BaseReader.dataset
readers.BaseReader.dataset = lambda *args, **kw: full(*args, **kw).take(1).cache().repeat()
train = importlib.import_module("youtube-8m.train")
train.define_flags()
app.run(train.main)
"""


def train_command(args, pattern, train_dir, steps, step_alone):
  tool = ["-c", STEP_ALONE] if step_alone else ["-m", "youtube-8m.train"]
  return [
      sys.executable, *tool, "--train_data_pattern=" + pattern,
      "--train_dir=" + train_dir, *original_model_flags(args.cluster, args.hidden, args.iterations),
      "--batch_size=%d" % args.batch_size, "--base_learning_rate=0.0001",
      "--learning_rate_decay=0.8", "--max_steps=%d" % steps,
      "--export_model_steps=100000", "--num_epochs=1000", "--save_model_secs=0",
      "--compute_dtype=" + args.compute_dtype]


def train(args, pattern, train_dir, log_path, step_alone=False):
  """Speeds of the timed steps, wall time, peak RSS and CPU seconds per timed step (user +
  sys; a second run of only the warm-up steps gives the start-up's CPU to subtract): unlike
  wall time, hardly changed by other jobs on the machine."""
  command = train_command(args, pattern, train_dir, args.steps, step_alone)
  wall, usage, text = run_child_usage(command, log_path, env=thread_env(args))
  _, warmup, _ = run_child_usage(
      train_command(args, pattern, train_dir + "_warmup", args.skip_steps, step_alone),
      env=thread_env(args))
  shutil.rmtree(train_dir + "_warmup", ignore_errors=True)
  cpu_per_step = ((usage.ru_utime + usage.ru_stime - warmup.ru_utime - warmup.ru_stime)
                  / (args.steps - args.skip_steps))
  speeds = []
  for line in text.splitlines():
    if "training step " in line and "Examples/sec: " in line:
      step = int(line.split("training step ")[1].split()[0])
      if step > args.skip_steps:
        speeds.append(float(line.split("Examples/sec: ")[1].split()[0]))
  if not speeds:
    sys.exit("no timed steps in %s (--steps %d <= --skip_steps %d?)" % (
        log_path, args.steps, args.skip_steps))
  speeds.sort()
  return {"speeds": speeds, "median": speeds[len(speeds) // 2], "wall": wall,
          "peak_mib": usage.ru_maxrss / 1024.0, "cpu_per_step": cpu_per_step}


def report(name, args, result):
  print("[%s]" % name)
  print("  steps timed: %d (after %d warm-up steps)" % (len(result["speeds"]), args.skip_steps))
  print("  examples/sec: median %.1f (min %.1f, max %.1f)" % (
      result["median"], result["speeds"][0], result["speeds"][-1]))
  print("  seconds/step: median %.2f" % (args.batch_size / result["median"]))
  print("  CPU seconds per step: %.2f" % result["cpu_per_step"])
  print("  training process wall time %.0f s, its peak RSS %.0f MiB" % (
      result["wall"], result["peak_mib"]), flush=True)


def evaluate(args, pattern, train_dir, log_path):
  """eval.py of train_dir's newest checkpoint on the training files: (wall s, peak MiB)."""
  command = [sys.executable, "-m", "youtube-8m.eval", "--train_dir=" + train_dir,
             "--eval_data_pattern=" + pattern, "--noeval_holdout_only", "--run_once",
             "--batch_size=%d" % args.eval_batch_size, "--compute_dtype=" + args.compute_dtype]
  wall, peak_mib, _ = run_child(command, log_path)
  return wall, peak_mib


def upload_to_emulator(data_dir):
  """Starts an emulator and points this process (and so its children) at it; uploads
  data_dir/frame/train*; returns (emulator, gs:// pattern, megabytes uploaded)."""
  for path in (REPO_ROOT, os.path.join(REPO_ROOT, "tests")):
    if path not in sys.path:
      sys.path.insert(0, path)
  from gcs_emulator import EMULATOR_PROJECT, Emulator  # pylint: disable=g-import-not-at-top
  emulator = Emulator().start()
  os.environ.update(STORAGE_EMULATOR_HOST=emulator.host, GOOGLE_CLOUD_PROJECT=EMULATOR_PROJECT)
  storage = importlib.import_module("youtube-8m.storage")
  bucket = emulator.create_bucket()
  files = sorted(glob.glob(os.path.join(data_dir, "frame", "train*.tfrecord")))
  start = time.time()
  for path in files:
    storage.copy(path, "gs://%s/frame/%s" % (bucket, os.path.basename(path)))
  megabytes = sum(os.path.getsize(p) for p in files) / 1e6
  print("uploaded %d files (%.0f MB) to the emulator %s in %.1f s" % (
      len(files), megabytes, emulator.host, time.time() - start), flush=True)
  return emulator, "gs://%s/frame/train*.tfrecord" % bucket, megabytes


def main(argv):
  args = parse_args(argv)
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_train_")
  os.makedirs(work_dir, exist_ok=True)
  emulator = None
  try:
    data = os.path.join(work_dir, "data")
    run_child([sys.executable, "-m", "youtube-8m.synthetic_data", "--output_dir=" + data,
               "--levels=frame", "--num_train_files=%d" % args.num_train_files,
               "--videos_per_file=%d" % VIDEOS_PER_FILE, "--num_validate_files=0",
               "--num_test_files=0"], os.path.join(work_dir, "synthetic_data.log"))
    sources = ["local", "gcs"] if args.data == "both" else [args.data]
    results = {}
    print("NetVLADModelLF K=%d H=%d, batch %d, %d frames sampled, %d cores" % (
        args.cluster, args.hidden, args.batch_size, args.iterations, os.cpu_count()))
    print("  " + allocator_setting())
    print("  " + host_setting(thread_env(args)))
    if args.model_threads:
      print("  TensorFlow's intra-op and inter-op pools: %d threads each" % args.model_threads)
    for source in sources:
      pattern = os.path.join(data, "frame", "train*.tfrecord")
      if source == "gcs":
        emulator, pattern, megabytes = upload_to_emulator(data)
      train_dir = os.path.join(work_dir, "train_" + source)
      result = results[source] = train(args, pattern, train_dir,
                                       os.path.join(work_dir, "train_%s.log" % source))
      report("%s: %s" % (source, pattern), args, result)
      if source == "gcs":
        per_video = megabytes * 1e6 / (VIDEOS_PER_FILE * args.num_train_files)
        print("  data read at the median speed: %.1f MB/s" % (
            result["median"] * per_video / 1e6))
    pattern = os.path.join(data, "frame", "train*.tfrecord")
    alone = train(args, pattern, os.path.join(work_dir, "train_step_alone"),
                  os.path.join(work_dir, "train_step_alone.log"), step_alone=True)
    report("model step alone: one in-memory batch", args, alone)
    for source, result in results.items():
      print("end to end (%s) / step alone: examples/sec %.3f, CPU seconds per step %.3f" % (
          source, result["median"] / alone["median"],
          result["cpu_per_step"] / alone["cpu_per_step"]))
    if args.eval_batch_size:
      wall, peak_mib = evaluate(args, pattern, train_dir, os.path.join(work_dir, "eval.log"))
      print("[eval.py --batch_size=%d] %d videos: wall time %.0f s, peak RSS %.0f MiB" % (
          args.eval_batch_size, VIDEOS_PER_FILE * args.num_train_files, wall, peak_mib))
  finally:
    if emulator is not None:
      emulator.stop()
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1:])
