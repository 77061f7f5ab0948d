"""The main job: the seed README's whole flow, locally, on a bundled synthetic dataset.

    python scripts/main_job.py [--work_dir=main_job] [--max_steps=300] ...

1. generate synthetic YouTube-8M frame-level data (python -m youtube-8m.synthetic_data);
2. train each single model with the seed's flags (python -m youtube-8m.train);
3. evaluate its exported checkpoints in a loop (eval.py --checkpoint=model.ckpt-N.index);
4. average a range of checkpoints (avg_checkpoints.py) and evaluate the average;
5. write the submission: inference model, tgz, and CSV from the tgz (inference.py).

Every command is printed before it runs, so each step can be re-run by hand.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  parser.add_argument("--work_dir", default=os.path.join(REPO_ROOT, "main_job"))
  parser.add_argument("--models", default="16x128",
                      help="comma list of CLUSTERxHIDDEN single models to train")
  parser.add_argument("--max_steps", type=int, default=300)
  parser.add_argument("--export_model_steps", type=int, default=50)
  parser.add_argument("--average_last", type=int, default=3,
                      help="average the range of the last N exported checkpoints")
  parser.add_argument("--batch_size", type=int, default=160)
  parser.add_argument("--base_learning_rate", type=float, default=0.001)
  parser.add_argument("--iterations", type=int, default=30, help="frames sampled per video")
  parser.add_argument("--num_classes", type=int, default=3862)
  parser.add_argument("--num_train_files", type=int, default=40)
  parser.add_argument("--videos_per_file", type=int, default=100)
  parser.add_argument("--validate_videos_per_file", type=int, default=20)
  parser.add_argument("--test_videos", type=int, default=100)
  parser.add_argument("--difficulty", type=float, default=0.5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  args.models = [tuple(int(v) for v in m.lower().split("x")) for m in args.models.split(",")]
  return args


def run(command, log_path=None):
  """Runs a `python -m youtube-8m.X` command (printed first); its log goes to log_path."""
  print("+ " + " ".join(shlex.quote(c) for c in command), flush=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  start = time.time()
  with open(log_path or os.devnull, "w") as log:
    result = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=env)
  if result.returncode != 0:
    tail = open(log_path).read()[-3000:] if log_path else ""
    sys.exit("FAILED (exit %d): %s\n%s" % (result.returncode, command[2], tail))
  return time.time() - start


def yt8m(module, *flags):
  return [sys.executable, "-m", "youtube-8m." + module] + list(flags)


def model_flags(args, cluster, hidden):
  return ["--frame_features", "--feature_names=rgb,audio", "--feature_sizes=1024,128",
          "--netvlad_cluster_size=%d" % cluster, "--netvlad_hidden_size=%d" % hidden,
          "--moe_l2=1e-6", "--iterations=%d" % args.iterations, "--netvlad_relu=False",
          "--gating=True", "--moe_prob_gating=True", "--num_classes=%d" % args.num_classes]


def evaluate(args, train_dir, eval_pattern, checkpoint, cluster, hidden, logs, *extra):
  label = os.path.basename(checkpoint).replace(".index", "")
  results = os.path.join(train_dir, "eval_results_%s.json" % label)
  run(yt8m("eval", "--eval_data_pattern=" + eval_pattern, "--model=NetVLADModelLF",
           "--train_dir=" + train_dir, *model_flags(args, cluster, hidden),
           "--batch_size=200", "--base_learning_rate=%g" % args.base_learning_rate,
           "--learning_rate_decay=0.8", "--run_once=True", "--checkpoint=" + checkpoint,
           "--results_json=" + results, *extra),
      os.path.join(logs, "eval_%s_%s.log" % (os.path.basename(train_dir),
                                             os.path.basename(checkpoint))))
  return json.load(open(results))


def train_single_model(args, data, cluster, hidden, logs):
  name = "c%dh%d_%d" % (cluster, hidden, args.batch_size)
  train_dir = os.path.join(args.work_dir, name)
  log = os.path.join(logs, "train_%s.log" % name)
  seconds = run(yt8m("train", "--train_data_pattern=" + data["train_pattern"],
                     "--train_dir=" + train_dir, *model_flags(args, cluster, hidden),
                     "--batch_size=%d" % args.batch_size,
                     "--base_learning_rate=%g" % args.base_learning_rate,
                     "--learning_rate_decay=0.8", "--max_steps=%d" % args.max_steps,
                     "--export_model_steps=%d" % args.export_model_steps,
                     "--num_epochs=1000", "--random_seed=%d" % args.seed), log)
  speeds = [float(line.split("Examples/sec: ")[1].split()[0]) for line in open(log)
            if "Examples/sec: " in line]
  steps = sorted(int(n[len("model.ckpt-"):-len(".index")]) for n in os.listdir(train_dir)
                 if n.startswith("model.ckpt-") and n.endswith(".index"))
  singles = {}
  for step in steps:
    singles[step] = evaluate(args, train_dir, data["eval_pattern"],
                             "model.ckpt-%d.index" % step, cluster, hidden, logs)
  first, last = steps[-args.average_last], steps[-1]
  average = "avg_c%dh%d_%d_%d.ckpt" % (cluster, hidden, first, last)
  run(yt8m("avg_checkpoints", "--checkpoints_start_end=%d,%d" % (first, last),
           "--prefix=%s/model.ckpt-" % train_dir,
           "--output_path=" + os.path.join(train_dir, average)),
      os.path.join(logs, "avg_%s.log" % name))
  averaged = evaluate(args, train_dir, data["eval_pattern"], average + "-0.index", cluster,
                      hidden, logs)
  median_speed = sorted(speeds)[len(speeds) // 2] if speeds else 0.0
  return {"name": name, "dir": train_dir, "cluster": cluster, "hidden": hidden,
          "train_seconds": seconds, "examples_per_sec": median_speed, "singles": singles,
          "average_name": average, "average_range": (first, last), "averaged": averaged}


def main(argv):
  args = parse_args(argv)
  start = time.time()
  os.makedirs(args.work_dir, exist_ok=True)
  logs = os.path.join(args.work_dir, "logs")
  os.makedirs(logs, exist_ok=True)
  data_dir = os.path.join(args.work_dir, "data")
  frame = os.path.join(data_dir, "frame")
  run(yt8m("synthetic_data", "--output_dir=" + data_dir, "--levels=frame",
           "--num_train_files=%d" % args.num_train_files,
           "--videos_per_file=%d" % args.videos_per_file, "--num_validate_files=60",
           "--validate_videos_per_file=%d" % args.validate_videos_per_file,
           "--num_test_files=1", "--test_videos_per_file=%d" % args.test_videos,
           "--num_classes=%d" % args.num_classes, "--difficulty=%g" % args.difficulty,
           "--seed=%d" % args.seed), os.path.join(logs, "synthetic_data.log"))
  data = {"train_pattern": "%s/train*.tfrecord,%s/validate*.tfrecord" % (frame, frame),
          "eval_pattern": "%s/validate*.tfrecord" % frame,
          "test_pattern": "%s/test*.tfrecord" % frame}

  models = [train_single_model(args, data, cluster, hidden, logs)
            for cluster, hidden in args.models]

  # Submission from the best averaged single model.
  best = max(models, key=lambda m: m["averaged"]["gap"])
  evaluate(args, best["dir"], data["eval_pattern"], best["average_name"] + "-0.index",
           best["cluster"], best["hidden"], logs, "--force_output_model_name")
  submission_dir = os.path.join(args.work_dir, "submission")
  os.makedirs(submission_dir, exist_ok=True)
  tgz = os.path.join(submission_dir, "submission.tgz")
  csv_path = os.path.join(submission_dir, "submission.csv")
  run(yt8m("inference", "--train_dir=" + best["dir"], "--output_model_tgz=" + tgz,
           "--input_data_pattern=" + data["test_pattern"],
           "--output_file=" + os.path.join(submission_dir, "submission_from_dir.csv"),
           "--batch_size=100"), os.path.join(logs, "inference_dir.log"))
  run(yt8m("inference", "--input_model_tgz=" + tgz,
           "--untar_model_dir=" + os.path.join(args.work_dir, "untar"),
           "--input_data_pattern=" + data["test_pattern"], "--output_file=" + csv_path,
           "--batch_size=100"), os.path.join(logs, "inference_tgz.log"))
  rows = sum(1 for _ in open(csv_path)) - 1

  print()
  print("=" * 78)
  print("Main job done in %.1f min. Work folder: %s" % ((time.time() - start) / 60,
                                                       args.work_dir))
  print("  data:       %s (train+validate minus the 60 held-out files / 60 held-out / test)"
        % data_dir)
  for model in models:
    print("  model %-10s %s (trained %d steps in %.0f s, %.0f examples/sec at batch %d)" % (
        model["name"], model["dir"], args.max_steps, model["train_seconds"],
        model["examples_per_sec"], args.batch_size))
    print("    %-34s %8s %8s %8s" % ("checkpoint", "GAP", "Hit@1", "PERR"))
    for step, result in sorted(model["singles"].items()):
      print("    %-34s %8.5f %8.4f %8.4f" % ("model.ckpt-%d" % step, result["gap"],
                                            result["hit_at_one"], result["perr"]))
    averaged = model["averaged"]
    print("    %-34s %8.5f %8.4f %8.4f" % (model["average_name"] + "-0", averaged["gap"],
                                          averaged["hit_at_one"], averaged["perr"]))
  print("  submission: %s (%d videos) from %s" % (csv_path, rows, tgz))
  print("  logs:       %s" % logs)
  print("GAP reached: %.5f (averaged %s)" % (best["averaged"]["gap"], best["name"]))
  summary = {"models": models, "submission_csv": csv_path, "submission_tgz": tgz,
             "best_gap": best["averaged"]["gap"], "minutes": (time.time() - start) / 60}
  with open(os.path.join(args.work_dir, "summary.json"), "w") as handle:
    json.dump(summary, handle, indent=1, default=str)


if __name__ == "__main__":
  main(sys.argv[1:])
