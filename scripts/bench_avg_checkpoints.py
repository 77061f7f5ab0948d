"""Benchmark the peak memory of youtube-8m/avg_checkpoints.py on realistic checkpoints.

Creates N single-shard V2 checkpoints shaped like the (K,H)=(32,512) Gated NetVLAD model
(77,927,018 float32 parameters in 32 variables; with Adam slots by default, i.e. ~3x the
parameters like real training checkpoints), then runs the averaging CLI as a subprocess for
each requested N and reports the input data size, the child's peak RSS (from os.wait4's
rusage, i.e. for that child alone; the tool also logs its own VmHWM), wall time and peak /
largest-checkpoint. The peak RSS of a child that imports TensorFlow and runs one tiny
session is reported as the runtime baseline. This parent process never imports TensorFlow
(checkpoints are written by child processes), so the children's ru_maxrss cannot include a
large parent image inherited through fork.

  .venv/bin/python scripts/bench_avg_checkpoints.py --work_dir=DIR --runs=10,3
"""

import argparse
import os
import re
import shutil
import sys
import time

import numpy as np

from bench_util import run_child
MIB = 2.0**20

# (name, shape, trainable) of the (K=32 clusters, H=512 hidden) NetVLAD + context gating +
# MoE (5 mixtures, 3862 classes) model: 77,927,018 parameters.
NETVLAD_32_512 = [
    ("tower/gates/weights", (1024, 23172), True),
    ("tower/experts/weights", (1024, 19310), True),
    ("tower/experts/biases", (19310,), True),
    ("tower/gating_prob_weights", (3862, 3862), True),
    ("tower/gating_prob_weights_bn/beta", (3862,), True),
    ("tower/gating_prob_weights_bn/gamma", (3862,), True),
    ("tower/gating_prob_weights_bn/moving_mean", (3862,), False),
    ("tower/gating_prob_weights_bn/moving_variance", (3862,), False),
    ("tower/hidden1_weights/hidden1_weights", (34816, 512), True),
    ("tower/hidden1_bn/beta", (512,), True),
    ("tower/hidden1_bn/gamma", (512,), True),
    ("tower/hidden1_bn/moving_mean", (512,), False),
    ("tower/hidden1_bn/moving_variance", (512,), False),
    ("tower/hidden2_weights", (512, 1024), True),
    ("tower/hidden2_biases", (1024,), True),
    ("tower/gating_weights", (1024, 1024), True),
    ("tower/gating_bn/beta", (1024,), True),
    ("tower/gating_bn/gamma", (1024,), True),
    ("tower/gating_bn/moving_mean", (1024,), False),
    ("tower/gating_bn/moving_variance", (1024,), False),
    ("tower/video_VLAD/cluster_weights", (1024, 32), True),
    ("tower/video_VLAD/cluster_weights2", (1, 1024, 32), True),
    ("tower/video_VLAD/cluster_bn/beta", (32,), True),
    ("tower/video_VLAD/cluster_bn/gamma", (32,), True),
    ("tower/video_VLAD/cluster_bn/moving_mean", (32,), False),
    ("tower/video_VLAD/cluster_bn/moving_variance", (32,), False),
    ("tower/audio_VLAD/cluster_weights", (128, 16), True),
    ("tower/audio_VLAD/cluster_weights2", (1, 128, 16), True),
    ("tower/audio_VLAD/cluster_bn/beta", (16,), True),
    ("tower/audio_VLAD/cluster_bn/gamma", (16,), True),
    ("tower/audio_VLAD/cluster_bn/moving_mean", (16,), False),
    ("tower/audio_VLAD/cluster_bn/moving_variance", (16,), False),
]
DEFAULT_PARAMS = 77927018
assert sum(int(np.prod(s)) for _, s, _ in NETVLAD_32_512) == DEFAULT_PARAMS


def model_variables(num_params):
  """NETVLAD_32_512, with the big matrices' first dimension scaled to ~num_params."""
  if num_params == DEFAULT_PARAMS:
    return list(NETVLAD_32_512)
  big = [v for v in NETVLAD_32_512 if np.prod(v[1]) > 100000]
  small = sum(int(np.prod(s)) for n, s, t in NETVLAD_32_512 if (n, s, t) not in big)
  factor = max(num_params - small, 0) / float(sum(int(np.prod(s)) for _, s, _ in big))
  out = []
  for name, shape, trainable in NETVLAD_32_512:
    if (name, shape, trainable) in big:
      shape = (max(1, int(round(shape[0] * factor))),) + tuple(shape[1:])
    out.append((name, shape, trainable))
  return out


def checkpoint_variables(num_params, adam_slots):
  """[(name, shape, dtype)] of a training checkpoint."""
  out = []
  for name, shape, trainable in model_variables(num_params):
    out.append((name, shape, np.float32))
    if adam_slots and trainable:
      out.append((name + "/Adam", shape, np.float32))
      out.append((name + "/Adam_1", shape, np.float32))
  if adam_slots:
    out += [("beta1_power", (), np.float32), ("beta2_power", (), np.float32)]
  out.append(("global_step", (), np.int32))
  return out


BASELINE_CODE = """
import tensorflow as tf, numpy as np
g = tf.Graph()
with g.as_default():
  p = tf.compat.v1.placeholder(tf.float32, [1])
  c = p * 2
with tf.compat.v1.Session(graph=g) as s:
  s.run(c, {p: np.ones(1, np.float32)})
"""


def write_checkpoint(prefix, variables, step, seed):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  names, tensors = [], []
  for name, shape, dtype in variables:
    if name == "global_step":
      value = np.array(step, dtype=np.int32)
    else:
      value = rng.standard_normal(size=shape, dtype=np.float32).astype(dtype, copy=False)
    names.append(name)
    tensors.append(tf.constant(value))
    del value
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=tensors)


def main():
  if len(sys.argv) == 7 and sys.argv[1] == "--_write_one":  # child: write one checkpoint
    prefix, step, seed, num_params, slots = sys.argv[2:]
    write_checkpoint(prefix, checkpoint_variables(int(num_params), slots == "1"), int(step),
                     int(seed))
    return
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work_dir", default="/tmp/bench_avg_checkpoints",
                      help="Directory for the checkpoints (created; deleted unless --keep).")
  parser.add_argument("--num_checkpoints", type=int, default=10,
                      help="Checkpoints to create (at least the largest of --runs).")
  parser.add_argument("--runs", default=None,
                      help="Comma list of N: average the N newest checkpoints for each "
                           "(default: --num_checkpoints).")
  parser.add_argument("--num_params", type=int, default=DEFAULT_PARAMS,
                      help="Model parameters (default: the (32,512) NetVLAD model).")
  parser.add_argument("--no_adam_slots", action="store_true",
                      help="Model variables only (default: with Adam slots, ~3x params).")
  parser.add_argument("--exclude_optimizer_slots", action="store_true",
                      help="Pass --exclude_optimizer_slots to the tool.")
  parser.add_argument("--keep", action="store_true", help="Keep the work_dir.")
  parser.add_argument("--reuse", action="store_true",
                      help="Reuse checkpoints already in work_dir (same settings!).")
  args = parser.parse_args()

  runs = [int(n) for n in (args.runs or str(args.num_checkpoints)).split(",")]
  num_checkpoints = max([args.num_checkpoints] + runs)
  variables = checkpoint_variables(args.num_params, not args.no_adam_slots)
  data_bytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in variables)
  print("model: %d variables, %d parameters; checkpoint: %d tensors, ~%.1f MiB data; "
        "free disk: %.1f GiB" % (
            len(model_variables(args.num_params)),
            sum(int(np.prod(s)) for _, s, _ in model_variables(args.num_params)),
            len(variables), data_bytes / MIB,
            shutil.disk_usage(os.path.dirname(os.path.abspath(args.work_dir)) or "/").free
            / 2.0**30))
  needed = data_bytes * (num_checkpoints + 1.1)
  free = shutil.disk_usage(os.path.dirname(os.path.abspath(args.work_dir))).free
  if needed > free * 0.9:
    sys.exit("not enough disk: need ~%.1f GiB, free %.1f GiB" % (needed / 2**30, free / 2**30))

  os.makedirs(args.work_dir, exist_ok=True)
  prefix = os.path.join(args.work_dir, "model.ckpt-")
  steps = [1000 * (i + 1) for i in range(num_checkpoints)]
  try:
    start = time.time()
    for i, step in enumerate(steps):
      if args.reuse and os.path.exists(prefix + "%d.index" % step):
        continue
      run_child([sys.executable, os.path.abspath(__file__), "--_write_one",
                 prefix + str(step), str(step), str(i), str(args.num_params),
                 "0" if args.no_adam_slots else "1"])
      print("  wrote %s%d (%.1f MiB) [%.0f s]" % (
          prefix, step, os.path.getsize(prefix + "%d.data-00000-of-00001" % step) / MIB,
          time.time() - start), flush=True)
    largest = max(os.path.getsize(prefix + "%d.data-00000-of-00001" % s) for s in steps)

    base_wall, base_rss, _ = run_child([sys.executable, "-c", BASELINE_CODE])
    print("baseline (import tensorflow + one tiny session): peak RSS %.1f MiB, %.1f s"
          % (base_rss, base_wall))

    rows = []
    for n in runs:
      output = os.path.join(args.work_dir, "avg_last%d.ckpt" % n)
      cmd = [sys.executable, "-m", "youtube-8m.avg_checkpoints",
             "--num_last_checkpoints=%d" % n, "--prefix=" + prefix, "--output_path=" + output]
      if args.exclude_optimizer_slots:
        cmd.append("--exclude_optimizer_slots")
      wall, rss, log = run_child(cmd, os.path.join(args.work_dir, "avg_last%d.log" % n))
      logged = re.search(r"peak memory: .*", log)
      out_bytes = os.path.getsize(output + "-0.data-00000-of-00001")
      rows.append((n, wall, rss, out_bytes))
      print("N=%d: wall %.1f s, child peak RSS %.1f MiB (%.2fx largest checkpoint; "
            "%.2fx above the TF baseline), output data %.1f MiB; tool log: %s" % (
                n, wall, rss, rss / (largest / MIB), (rss - base_rss) / (largest / MIB),
                out_bytes / MIB, logged.group(0) if logged else "?"), flush=True)
      for suffix in (".index", ".data-00000-of-00001", ".meta"):
        os.remove(output + "-0" + suffix)

    print()
    print("largest input checkpoint data: %.1f MiB; TF baseline RSS %.1f MiB"
          % (largest / MIB, base_rss))
    print("%4s %10s %14s %12s %18s" % ("N", "wall [s]", "peak RSS [MiB]", "peak/ckpt",
                                        "(peak-base)/ckpt"))
    for n, wall, rss, _ in rows:
      print("%4d %10.1f %14.1f %12.2f %18.2f" % (
          n, wall, rss, rss / (largest / MIB), (rss - base_rss) / (largest / MIB)))
  finally:
    if not args.keep:
      shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
  main()
