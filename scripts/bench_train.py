"""Benchmark: training examples/sec of a seed-size NetVLAD model on this machine.

    python scripts/bench_train.py [--cluster=32 --hidden=512 --batch_size=160 --iterations=300]

Generates a small synthetic frame-level dataset (3862 classes), trains the model with the
seed's flags for --steps steps via `python -m youtube-8m.train`, and reports the median
examples/sec of the logged steps (the first steps, which include graph warm-up, are
skipped) and the peak memory of the training process. Not a test: it prints numbers.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--cluster", type=int, default=32)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=160)
  parser.add_argument("--iterations", type=int, default=300)
  parser.add_argument("--steps", type=int, default=25)
  parser.add_argument("--skip_steps", type=int, default=5)
  parser.add_argument("--work_dir", default=None)
  args = parser.parse_args(argv)
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_train_")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  try:
    data = os.path.join(work_dir, "data")
    subprocess.run([sys.executable, "-m", "youtube-8m.synthetic_data", "--output_dir=" + data,
                    "--levels=frame", "--num_train_files=8", "--videos_per_file=100",
                    "--num_validate_files=0", "--num_test_files=0"], cwd=REPO_ROOT,
                   check=True, env=env, capture_output=True)
    command = [
        sys.executable, "-m", "youtube-8m.train",
        "--train_data_pattern=%s/frame/train*.tfrecord" % data,
        "--train_dir=" + os.path.join(work_dir, "train"), "--frame_features",
        "--feature_names=rgb,audio", "--feature_sizes=1024,128",
        "--batch_size=%d" % args.batch_size, "--base_learning_rate=0.0001",
        "--netvlad_cluster_size=%d" % args.cluster, "--netvlad_hidden_size=%d" % args.hidden,
        "--moe_l2=1e-6", "--iterations=%d" % args.iterations, "--learning_rate_decay=0.8",
        "--netvlad_relu=False", "--gating=True", "--moe_prob_gating=True",
        "--max_steps=%d" % args.steps, "--export_model_steps=100000", "--num_epochs=1000",
        "--save_model_secs=0"]
    start = time.time()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode != 0:
      sys.exit(result.stderr[-3000:])
    speeds = []
    for line in result.stderr.splitlines():
      if "training step " in line and "Examples/sec: " in line:
        step = int(line.split("training step ")[1].split()[0])
        if step > args.skip_steps:
          speeds.append(float(line.split("Examples/sec: ")[1].split()[0]))
    speeds.sort()
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("NetVLADModelLF K=%d H=%d, batch %d, %d frames sampled, %d cores" % (
        args.cluster, args.hidden, args.batch_size, args.iterations, os.cpu_count()))
    print("  steps timed: %d (after %d warm-up steps)" % (len(speeds), args.skip_steps))
    # youtube-8m/__init__.py defaults it to true (the BFC pool); set false to compare
    print("  TF_CPU_ALLOCATOR_USE_BFC=%s" % os.environ.get("TF_CPU_ALLOCATOR_USE_BFC",
                                                         "true (package default)"))
    print("  examples/sec: median %.1f (min %.1f, max %.1f)" % (
        speeds[len(speeds) // 2], speeds[0], speeds[-1]))
    print("  seconds/step: median %.2f" % (args.batch_size / speeds[len(speeds) // 2]))
    print("  training process wall time %.0f s, peak RSS of children %.0f MiB" % (wall,
                                                                                 peak_mib))
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1:])
