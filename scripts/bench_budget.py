"""The original's four model sizes, two of each (8 members), in 8 bits: does it fit 1 GiB?

  .venv/bin/python scripts/bench_budget.py [--work_dir=DIR] [--keep] [--storage=uint8]

Builds ONE ensemble graph of (K, H) = (24, 1440), (32, 1024), (16, 800), (32, 512) twice each
with --kernel_storage=uint8 for every member (six 8-bit kernels per model: hidden1, hidden2,
the context gating, the MoE gates and experts, the probability gating), with UNTRAINED weights
(the graph initialized and saved, its inference meta graph and model_flags.json written, in a
child process), then counts it with model_size (bytes of the submission's files against
2^30) and compares the tensor bytes with the formula of docs/original.md, "Sizes".
--storage=float16 builds the same 8 members in float16 for comparison.

--inference_rounds=R (R > 0) then builds the same members in the other storage too (uint8 and
float16), writes --inference_videos synthetic frame-level test videos and runs inference.py on
them --inference_rounds times per storage, alternating (after wait_quiet.py when --wait_quiet
names it), at --inference_batch (the original's 512): videos/sec and each run's peak RSS. The
work directory is deleted at the end unless --keep.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from bench_ensemble import inference_rate
from bench_util import REPO_ROOT, host_setting, run_child, yt8m

ORIGINAL_MODELS = ((24, 1440), (32, 1024), (16, 800), (32, 512))
CLASSES = 3862
MIB = 2.0**20


def members(copies):
  return [size for size in ORIGINAL_MODELS for _ in range(copies)]


def expected_tensor_bytes(models, storage, classes=CLASSES):
  """docs/original.md, "Sizes", per storage: float32 4 B per parameter; float16 2 B for the
  four kernels (Dv H + 22 H V + V^2); uint8 1 B for six (those + hidden2 and the gating,
  6 H^2) plus their float32 codebooks [2, out]."""
  total = 4  # global_step (int32)
  v = classes
  for k, h in models:
    ka = int(k / 2)
    dv = 1024 * k + 128 * ka
    parameters = (2052 * k + 260 * ka + dv * h + 6 * h * h + 14 * h + 22 * h * v + v * v
                  + 9 * v)
    four = dv * h + 22 * h * v + v * v
    if storage == "float32":
      total += 4 * parameters
    elif storage == "float16":
      total += 2 * four + 4 * (parameters - four)
    else:
      six = four + 6 * h * h
      codebooks = 2 * (h + 2 * h + 2 * h + 6 * v + 5 * v + v)  # out widths of the six
      total += six + 4 * (parameters - six) + 4 * codebooks
  return total


def make_ensemble(train_dir, storage, copies):
  """Child: the untrained 8-member graph saved as train_dir/inference_model."""
  sys.path.insert(0, REPO_ROOT)
  import importlib  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  model_graph = importlib.import_module("youtube-8m.model_graph")
  utils = importlib.import_module("youtube-8m.utils")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  models = members(copies)
  config = model_graph.ModelConfig(
      model="NetVLADModelLF", frame_features=True, feature_names="rgb,audio",
      feature_sizes="1024,128", ensemble_num=len(models),
      netvlad_cluster_size=[k for k, _ in models], netvlad_hidden_size=[h for _, h in models],
      ensemble_wts=[1.0 / len(models)] * len(models), gating=True, iterations=300,
      moe_l2=1e-6, moe_prob_gating=True, kernel_storage=[storage] * len(models)).validate()
  graph, saver = model_graph.build_inference_graph(config)
  os.makedirs(train_dir, exist_ok=True)
  prefix = os.path.join(train_dir, "inference_model")
  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    saver.save(sess, prefix, write_meta_graph=False, write_state=False)
  model_graph.export_inference_meta(prefix + ".meta", config)
  utils.write_model_flags(train_dir, config.to_json_dict())
  print("saved", prefix, config.describe())


def compare_inference(work, ensembles, args):
  """Runs inference.py on the same synthetic test videos with each ensemble in turn, rounds
  times; returns {storage: [{videos_per_sec, steady_videos_per_sec, rss_mib}, ...]}."""
  data_dir = os.path.join(work, "data")
  run_child(yt8m("synthetic_data", "--output_dir=" + data_dir, "--num_train_files=0",
                 "--num_validate_files=0", "--num_test_files=2", "--levels=frame",
                 "--videos_per_file=%d" % max(1, args.inference_videos // 2),
                 "--min_frames=120", "--max_frames=300"), os.path.join(work, "data.log"))
  results = {storage: [] for storage in ensembles}
  for round_index in range(args.inference_rounds):
    for storage, ensemble_dir in ensembles.items():
      if args.wait_quiet:
        subprocess.run([sys.executable, args.wait_quiet], check=True)
      _, rss, text = run_child(yt8m(
          "inference", "--train_dir=" + ensemble_dir,
          "--input_data_pattern=" + os.path.join(data_dir, "frame", "test*.tfrecord"),
          "--output_file=" + os.path.join(work, "predictions_%s.csv" % storage),
          "--batch_size=%d" % args.inference_batch),
                               os.path.join(work, "inference_%s_%d.log" % (storage, round_index)))
      _, overall, steady = inference_rate(text)
      results[storage].append({"videos_per_sec": overall, "steady_videos_per_sec": steady,
                               "rss_mib": rss})
      print("round %d, %s: %.1f videos/sec (%.1f after the first batch), peak RSS %.0f MiB"
            % (round_index + 1, storage, overall, steady, rss), flush=True)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(),
                                                       "yt8m_bench_budget"))
  parser.add_argument("--keep", action="store_true", help="keep the work directory")
  parser.add_argument("--storage", default="uint8", choices=("uint8", "float16", "float32"))
  parser.add_argument("--copies", type=int, default=2, help="members of each size")
  parser.add_argument("--results_json", default="")
  parser.add_argument("--inference_rounds", type=int, default=0,
                      help="> 0: compare inference speed and memory of uint8 and float16")
  parser.add_argument("--inference_videos", type=int, default=1024)
  parser.add_argument("--inference_batch", type=int, default=512)
  parser.add_argument("--wait_quiet", default="",
                      help="a wait_quiet.py to run before each timed inference")
  parser.add_argument("--_make", nargs=1, metavar="DIR", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._make:  # pylint: disable=protected-access
    make_ensemble(args._make[0], args.storage, args.copies)  # pylint: disable=protected-access
    return

  work = os.path.abspath(args.work_dir)
  if os.path.exists(work):
    shutil.rmtree(work)
  os.makedirs(work)
  print(host_setting(), flush=True)
  ensemble_dir = os.path.join(work, "ensemble")
  try:
    seconds, rss, _ = run_child(
        [sys.executable, os.path.abspath(__file__), "--_make", ensemble_dir,
         "--storage=" + args.storage, "--copies=%d" % args.copies],
        os.path.join(work, "make.log"))
    print("built %d members (%s) in %.0f s, peak RSS %.0f MiB" % (
        len(members(args.copies)), args.storage, seconds, rss), flush=True)
    size_json = os.path.join(work, "size.json")
    _, _, text = run_child(yt8m("model_size", "--train_dir=" + ensemble_dir,
                                "--results_json=" + size_json), os.path.join(work, "size.log"))
    print("\n".join(line for line in text.splitlines() if not line.startswith(("I", "W"))),
          flush=True)
    with open(size_json) as handle:
      size = json.load(handle)
    expected = expected_tensor_bytes(members(args.copies), args.storage)
    print("tensor data %d bytes (formula %d: %s); all files %d bytes = %.4f GiB: %s 2^30 by "
          "%s bytes" % (size["tensor_bytes"], expected, "OK" if expected == size[
              "tensor_bytes"] else "MISMATCH", size["total_bytes"], size["total_bytes"] / 2**30,
                        "UNDER" if size["fits"] else "OVER",
                        "{:,}".format(abs(size["headroom_bytes"]))), flush=True)
    results = {"storage": args.storage, "members": members(args.copies), "size": size,
               "formula_tensor_bytes": expected, "build_seconds": seconds,
               "build_rss_mib": rss}
    if args.inference_rounds > 0:
      other = "float16" if args.storage == "uint8" else "uint8"
      other_dir = os.path.join(work, "ensemble_" + other)
      run_child([sys.executable, os.path.abspath(__file__), "--_make", other_dir,
                 "--storage=" + other, "--copies=%d" % args.copies],
                os.path.join(work, "make_%s.log" % other))
      results["inference"] = compare_inference(
          work, {args.storage: ensemble_dir, other: other_dir}, args)
    if args.results_json:
      with open(args.results_json, "w") as handle:
        json.dump(results, handle, indent=1)
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
