"""The original's four model sizes, two of each (8 members), in 8 bits: does it fit 1 GiB?

  .venv/bin/python scripts/bench_budget.py [--work_dir=DIR] [--keep] [--storage=uint8]

Builds ONE ensemble graph of (K, H) = (24, 1440), (32, 1024), (16, 800), (32, 512) twice each
with --kernel_storage=uint8 for every member (six 8-bit kernels per model: hidden1, hidden2,
the context gating, the MoE gates and experts, the probability gating), with UNTRAINED weights
(the graph initialized and saved, its inference meta graph and model_flags.json written, in a
child process), then counts it with model_size (bytes of the submission's files against
2^30) and compares the tensor bytes with the formula of docs/original.md, "Sizes".
--storage=float16 builds the same 8 members in float16 for comparison. The work directory is
deleted at the end unless --keep.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

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


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(),
                                                       "yt8m_bench_budget"))
  parser.add_argument("--keep", action="store_true", help="keep the work directory")
  parser.add_argument("--storage", default="uint8", choices=("uint8", "float16", "float32"))
  parser.add_argument("--copies", type=int, default=2, help="members of each size")
  parser.add_argument("--results_json", default="")
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
    if args.results_json:
      with open(args.results_json, "w") as handle:
        json.dump({"storage": args.storage, "members": members(args.copies), "size": size,
                   "formula_tensor_bytes": expected, "build_seconds": seconds,
                   "build_rss_mib": rss}, handle, indent=1)
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
