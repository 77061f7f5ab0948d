"""Benchmark of the float16 ensemble tools on the seed's real 4-model ensemble (random weights).

  .venv/bin/python scripts/bench_ensemble.py --work_dir=/work/bench_tmp [--keep]

1. Creates the four single-model float32 inference checkpoints (K, H) = (24, 1440),
   (32, 1024), (16, 800), (32, 512) with RANDOM weights: each in its own child process,
   one at a time, which builds the model's inference graph (model_graph.build_inference_graph),
   initializes it and saves it (33 tensors, ~2.04 GB in all).
2. build_ensemble (the one-command path) -> the float16 inference model, in a child process.
3. overwrite_float16_ckpt (seed step 3) with the result as its template, in a child process.
4. model_size on the result: bytes vs 2**30 and vs float32 (docs/original.md: 1,069,237,572
   bytes of tensor data expected).
5. inference.py on a few synthetic frame-level test videos (youtube-8m.synthetic_data), batch
   --batch_size, 300 frames sampled per video: videos/sec.

Peak memory is each child's own peak RSS (os.wait4's ru_maxrss). This parent never imports
TensorFlow, so a child's ru_maxrss cannot include a parent image inherited through fork. The
work directory is deleted at the end unless --keep.
"""

import argparse
import filecmp
import json
import os
import re
import shutil
import sys

from bench_util import REPO_ROOT, allocator_setting, host_setting, run_child
from seed_flags import seed_model_flags

SEED_MODELS = ((24, 1440), (32, 1024), (16, 800), (32, 512))
SEED_WEIGHTS = (0.39, 0.26, 0.21, 0.14)
EXPECTED_FLOAT16_BYTES = 1069237572
MIB = 2.0**20


def make_single(cluster, hidden, prefix, iterations):
  """Child: saves a randomly initialized single NetVLADModelLF inference checkpoint."""
  sys.path.insert(0, REPO_ROOT)
  import importlib  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  model_graph = importlib.import_module("youtube-8m.model_graph")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  config = model_graph.ModelConfig(
      frame_features=True, feature_names="rgb,audio", feature_sizes="1024,128",
      netvlad_cluster_size=[cluster], netvlad_hidden_size=[hidden], gating=True,
      iterations=iterations, moe_l2=1e-6, moe_prob_gating=True).validate()
  graph, saver = model_graph.build_inference_graph(config)
  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    saver.save(sess, prefix, write_meta_graph=False, write_state=False)
  print("saved", prefix)


def module(name, *args):
  return [sys.executable, "-m", "youtube-8m." + name] + list(args)


def data_bytes(prefix):
  return os.path.getsize(prefix + ".data-00000-of-00001")


def parameters(cluster, hidden, classes=3862):
  """docs/original.md: parameters of one model (all 32 variables)."""
  audio = int(cluster / 2)
  dv = 1024 * cluster + 128 * audio
  return (2052 * cluster + 260 * audio + dv * hidden + 6 * hidden**2 + 14 * hidden
          + 22 * hidden * classes + classes**2 + 9 * classes)


def inference_rate(log_text):
  """(videos, overall videos/sec, steady videos/sec after the first batch) from the log."""
  rows = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(
      r"num examples processed: (\d+) elapsed seconds: ([\d.]+)", log_text)]
  if not rows:
    return 0, 0.0, 0.0
  videos, seconds = rows[-1]
  steady = 0.0
  if len(rows) > 1 and rows[-1][1] > rows[0][1]:
    steady = (rows[-1][0] - rows[0][0]) / (rows[-1][1] - rows[0][1])
  return videos, videos / max(seconds, 1e-9), steady


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work_dir", default="/work/bench_tmp/ensemble")
  parser.add_argument("--keep", action="store_true", help="keep the work directory")
  parser.add_argument("--videos", type=int, default=96, help="synthetic test videos")
  parser.add_argument("--batch_size", type=int, default=32, help="inference batch")
  parser.add_argument("--iterations", type=int, default=300, help="frames sampled per video")
  parser.add_argument("--_make_single", nargs=3, metavar=("K", "H", "PREFIX"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._make_single:  # pylint: disable=protected-access
    cluster, hidden, prefix = args._make_single  # pylint: disable=protected-access
    make_single(int(cluster), int(hidden), prefix, args.iterations)
    return

  work = os.path.abspath(args.work_dir)
  if os.path.exists(work):
    shutil.rmtree(work)
  singles_dir = os.path.join(work, "single_models")
  ensemble_dir = os.path.join(work, "ensemble_YHLS")
  logs = os.path.join(work, "logs")
  for directory in (singles_dir, logs):
    os.makedirs(directory)
  results = {"models": [], "work_dir": work}
  try:
    # 0. runtime baseline: import TensorFlow and run one tiny session
    _, rss, _ = run_child([sys.executable, "-c", (
        "import tensorflow as tf; g = tf.Graph()\n"
        "with g.as_default(): x = tf.constant(1.0) + 1\n"
        "with tf.compat.v1.Session(graph=g) as s: s.run(x)")], os.path.join(logs, "base.log"))
    results["baseline_rss_mib"] = rss

    # 1. the single models, one at a time
    sources = []
    for cluster, hidden in SEED_MODELS:
      prefix = os.path.join(singles_dir, "c%dh%d-inference_model_0" % (cluster, hidden))
      seconds, rss, _ = run_child(
          [sys.executable, os.path.abspath(__file__), "--_make_single", str(cluster),
           str(hidden), prefix, "--iterations=%d" % args.iterations],
          os.path.join(logs, "single_c%dh%d.log" % (cluster, hidden)))
      sources.append(prefix)
      results["models"].append({"K": cluster, "H": hidden, "parameters": parameters(
          cluster, hidden), "fp32_data_bytes": data_bytes(prefix), "create_rss_mib": rss,
                                "create_seconds": seconds})
      print("single c%dh%d: %d parameters, %.1f MiB data, created in %.0f s (peak %.0f MiB)"
            % (cluster, hidden, parameters(cluster, hidden), data_bytes(prefix) / MIB,
               seconds, rss), flush=True)
    total_params = sum(m["parameters"] for m in results["models"])
    results["parameters"] = total_params

    # 2. the one-command path
    build_args = ["--train_dir=" + ensemble_dir, "--checkpoints=" + ",".join(sources),
                  *seed_model_flags(iterations=args.iterations)]
    for (cluster, hidden), weight in zip(SEED_MODELS, SEED_WEIGHTS):
      build_args += ["--netvlad_cluster_size=%d" % cluster,
                     "--netvlad_hidden_size=%d" % hidden, "--ensemble_wts=%g" % weight]
    seconds, rss, _ = run_child(module("build_ensemble", *build_args),
                                   os.path.join(logs, "build.log"))
    results["build"] = {"rss_mib": rss, "seconds": seconds,
                        "bytes_per_parameter": rss * MIB / total_params}
    print("build_ensemble: %.0f s, peak RSS %.0f MiB (%.2f bytes per parameter)"
          % (seconds, rss, rss * MIB / total_params), flush=True)

    # 3. seed step 3 (template: the build output, same 129 names/dtypes, clean meta)
    seconds, rss, _ = run_child(module(
        "overwrite_float16_ckpt", "--train_dir=" + ensemble_dir,
        "--inference_model=inference_model", "--out_name=inference_model_ensemble_YHLS",
        "--checkpoints=" + ",".join(s + ".index" for s in sources)),
                                   os.path.join(logs, "overwrite.log"))
    results["overwrite"] = {"rss_mib": rss, "seconds": seconds,
                            "bytes_per_parameter": rss * MIB / total_params}
    print("overwrite_float16_ckpt: %.0f s, peak RSS %.0f MiB (%.2f bytes per parameter; the "
          "original needed > 8)" % (seconds, rss, rss * MIB / total_params), flush=True)
    same = filecmp.cmp(
        os.path.join(ensemble_dir, "inference_model.data-00000-of-00001"),
        os.path.join(ensemble_dir, "inference_model_ensemble_YHLS-0.data-00000-of-00001"),
        shallow=False)
    results["overwrite_equals_build"] = same
    os.remove(os.path.join(ensemble_dir, "inference_model_ensemble_YHLS-0.data-00000-of-00001"))

    # 4. sizes
    size_json = os.path.join(work, "size.json")
    _, _, text = run_child(module("model_size", "--train_dir=" + ensemble_dir,
                                     "--results_json=" + size_json),
                              os.path.join(logs, "size.log"))
    with open(size_json) as handle:
      size = json.load(handle)
    results["size"] = size
    print("\n".join(line for line in text.splitlines() if not line.startswith(("I", "W"))),
          flush=True)
    print("tensor data %d bytes (expected %d: %s)" % (
        size["tensor_bytes"], EXPECTED_FLOAT16_BYTES,
        "OK" if size["tensor_bytes"] == EXPECTED_FLOAT16_BYTES else "MISMATCH"), flush=True)

    # 5. inference speed on synthetic frame-level videos
    data_dir = os.path.join(work, "data")
    per_file = max(1, args.videos // 2)
    run_child(module("synthetic_data", "--output_dir=" + data_dir, "--num_train_files=0",
                     "--num_validate_files=0", "--num_test_files=2",
                     "--videos_per_file=%d" % per_file, "--levels=frame", "--min_frames=120",
                     "--max_frames=300"), os.path.join(logs, "data.log"))
    seconds, rss, text = run_child(module(
        "inference", "--train_dir=" + ensemble_dir,
        "--input_data_pattern=" + os.path.join(data_dir, "frame", "test*.tfrecord"),
        "--output_file=" + os.path.join(work, "predictions.csv"),
        "--batch_size=%d" % args.batch_size), os.path.join(logs, "inference.log"))
    videos, overall, steady = inference_rate(text)
    results["inference"] = {"videos": videos, "videos_per_sec": overall,
                            "steady_videos_per_sec": steady, "rss_mib": rss,
                            "process_seconds": seconds, "batch_size": args.batch_size,
                            "iterations": args.iterations}
    print("inference: %d videos, %.1f videos/sec overall (incl. restore and first batch), "
          "%.1f videos/sec after the first batch; process %.0f s, peak RSS %.0f MiB" % (
              videos, overall, steady, seconds, rss), flush=True)
    print(allocator_setting())
    print(host_setting())
    with open(os.path.join(logs, "results.json"), "w") as handle:
      json.dump(results, handle, indent=1)
    print(json.dumps(results, indent=1))
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
