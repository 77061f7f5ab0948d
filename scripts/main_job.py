"""The main job: the original README's whole flow, locally, on a bundled synthetic dataset.

    python scripts/main_job.py [--work_dir=main_job] [--max_steps=300] ...

1. generate synthetic YouTube-8M frame-level data (python -m youtube-8m.synthetic_data);
2. train each single model with the flags of the original's commands (python -m youtube-8m.train);
3. average a range of checkpoints (avg_checkpoints.py);
4. evaluate the exported checkpoints and the average, in turn, in one eval.py process
   (--checkpoint=model.ckpt-N.index,...,avg_...-0.index);
5. pack the averaged single models into ONE graph (build_ensemble.py, the one-command form
   of the original's ensemble steps 1-5), float32 and float16, and evaluate both;
6. search the mixing weights (ensemble_weights.py), build the tuned float16 ensemble;
7. write the submission: tgz (inference.py --output_model_tgz), its size report
   (model_size.py), and the CSV from the tgz (inference.py --input_model_tgz);
8. (beyond the original; --nobudget_build skips it) the budgeted build: build_ensemble
   --candidates chooses among each model's average and last checkpoint, each in float32,
   float16 or 8 bits, under the tuned float16 ensemble's own size, and the two are compared.

Steps that do not depend on each other run side by side (--parallel_jobs): the models'
pipelines (2-4), each on CPUs of its own while another one trains (the last to finish
training evaluates on all); once the float16 ensemble is built, the float32 one and both
evaluations (5) beside the weight search and tuned build (6), which the budgeted build (8)
follows beside the submission (7), all sharing the CPUs.

Every step is printed as it goes: its number and what it does, the command (so that it can be
re-run by hand), the tool's progress lines (checkpoint exports, done/total with ETA), and its
duration and result; each tool's full output is kept in WORK_DIR/logs/.
"""

import argparse
import concurrent.futures
import functools
import json
import os
import queue
import re
import shlex
import shutil
import sys
import threading
import time

from bench_util import REPO_ROOT, run_child, use_forkserver, yt8m
from original_flags import original_model_flags



def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  parser.add_argument("--work_dir", default=os.path.join(REPO_ROOT, "main_job"))
  parser.add_argument("--models", default="16x128,8x96",
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
  parser.add_argument("--parallel_jobs", type=int, default=0,
                      help="run up to this many independent steps (the models' pipelines, "
                           "each on its own CPUs; the ensembles) side by side (0: one per CPU; "
                           "1: one step at a time)")
  parser.add_argument("--nobudget_build", dest="budget_build", action="store_false",
                      help="skip step 8, the budgeted build under the tuned ensemble's size")
  # Real data (e.g. the 2018 frame-level files, local or gs://) instead of synthetic data.
  parser.add_argument("--train_data_pattern", default="",
                      help="real data: 'TRAIN_GLOB,VALIDATE_GLOB' of frame-level TFRecords "
                           "(skips the synthetic data; needs the two patterns below too)")
  parser.add_argument("--eval_data_pattern", default="",
                      help="real data: the validate files' glob (held-out files evaluated)")
  parser.add_argument("--test_data_pattern", default="",
                      help="real data: the test files' glob (the submission CSV)")
  parser.add_argument("--eval_all_files", action="store_true",
                      help="evaluate every file --eval_data_pattern matches, not only the "
                           "original's 60 held-out validate files (e.g. a partial download)")
  parser.add_argument("--fresh_processes", action="store_true",
                      help="start every tool as a new process (by default each is forked from "
                           "one process that imported TensorFlow once: the same commands, "
                           "flags and outputs, without ~4 s of start-up per tool)")
  args = parser.parse_args(argv)
  real = [args.train_data_pattern, args.eval_data_pattern, args.test_data_pattern]
  if any(real) and not all(real):
    parser.error("real data needs --train_data_pattern, --eval_data_pattern and "
                 "--test_data_pattern together")
  if args.parallel_jobs < 0:
    parser.error("--parallel_jobs must be >= 0 (0: one per CPU)")
  args.models = [tuple(int(v) for v in m.lower().split("x")) for m in args.models.split(",")]
  return args


# Lines of a tool's output echoed to the console while it runs (all of it goes to its log):
# checkpoint exports, progress lines with totals/ETA, the planned ensemble size.
ECHO_RE = re.compile(r"Exported |\| ETA |planned submission|weight search: start")
_STEPS = [0]
_JOB_START = [time.time()]
_CONSOLE = threading.Lock()
# The model pipeline a thread runs: its tag in the console and the CPUs of its tools.
_PIPELINE = threading.local()
# The tags of the model pipelines still training (guarded by _CONSOLE).
_TRAINING = set()


def say(text):
  """Prints text as one write (lines of side-by-side model pipelines do not mix)."""
  with _CONSOLE:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _tag():
  tag = getattr(_PIPELINE, "tag", "")
  return "[%s] " % tag if tag else ""


def begin_step(title):
  """Prints the header of the next step."""
  with _CONSOLE:
    _STEPS[0] += 1
    number = _STEPS[0]
  say("\n[step %d, %s into the job] %s%s" % (
      number, _duration(time.time() - _JOB_START[0]), _tag(), title))


def _duration(seconds):
  return "%.1f s" % seconds if seconds < 90 else "%d min %02d s" % divmod(int(seconds), 60)


def done(seconds, result):
  say("    %sdone in %s: %s" % (_tag(), _duration(seconds), result))


def run(command, log_path=None):
  """Runs a `python -m youtube-8m.X` command (printed first); its output goes to log_path,
  its progress lines also to the console. Returns the seconds it took."""
  say("%s+ %s" % (_tag(), " ".join(shlex.quote(c) for c in command)))
  return run_child(command, log_path, echo=ECHO_RE, cpus=getattr(_PIPELINE, "cpus", None),
                   tag=_tag().strip())[0]


def cpu_groups(jobs):
  """This process's CPUs split into `jobs` groups of consecutive CPUs (sizes differ by at
  most one)."""
  cpus = sorted(os.sched_getaffinity(0))
  return [cpus[i * len(cpus) // jobs:(i + 1) * len(cpus) // jobs] for i in range(jobs)]


def side_by_side(args, tasks, pin=True):
  """Runs tasks [(tag, function)] --parallel_jobs at a time (0: as many as there are tasks and
  CPUs), each in a thread; one at a time, untagged, if that is 1. pin: each thread's tools run
  on CPUs of their own (for tasks of equal length, e.g. the models' trainings: one TensorFlow
  process per core does more in all than processes sharing both cores, docs/measurements.md);
  otherwise they share every CPU, so that the longer task gets all of them once the shorter
  one is done. Returns the functions' results in order."""
  cpus = len(os.sched_getaffinity(0))
  jobs = max(1, min(args.parallel_jobs or cpus, len(tasks), cpus))
  if jobs == 1:
    return [function() for _, function in tasks]
  free = queue.Queue()
  for group in cpu_groups(jobs):
    free.put(group)

  def call(task):
    _PIPELINE.tag, function = task
    group = free.get() if pin else None
    _PIPELINE.cpus = group
    try:
      return function()
    finally:
      if pin:
        free.put(group)
      _PIPELINE.tag, _PIPELINE.cpus = "", None

  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    return list(pool.map(call, tasks))


def train_models(args, data, logs):
  """Trains, averages and evaluates each model (train_single_model), side by side."""
  _TRAINING.update("c%dh%d" % model for model in args.models)
  return side_by_side(args, [("c%dh%d" % model, functools.partial(
      train_single_model, args, data, model[0], model[1], logs)) for model in args.models])


def eval_files_flags(args):
  return ["--noeval_holdout_only"] if args.eval_all_files else []


def model_flags(args, cluster, hidden):
  return original_model_flags(cluster, hidden, args.iterations) + [
      "--num_classes=%d" % args.num_classes]


def evaluate_checkpoints(args, train_dir, eval_pattern, checkpoints, cluster, hidden, logs):
  """Evaluates the checkpoints of train_dir (names relative to it) in ONE eval.py process;
  returns {name: results}."""
  label = os.path.basename(train_dir)
  results = os.path.join(train_dir, "eval_results_checkpoints.json")
  begin_step("evaluate %s: %s on the 60 held-out files" % (label, ", ".join(checkpoints)))
  seconds = run(yt8m("eval", "--eval_data_pattern=" + eval_pattern, "--model=NetVLADModelLF",
                     "--train_dir=" + train_dir, *model_flags(args, cluster, hidden),
                     "--batch_size=200", "--base_learning_rate=%g" % args.base_learning_rate,
                     "--learning_rate_decay=0.8", "--run_once=True",
                     "--checkpoint=" + ",".join(c + ".index" for c in checkpoints),
                     "--results_json=" + results, *eval_files_flags(args)),
                os.path.join(logs, "eval_%s.log" % label))
  evaluated = json.load(open(results))
  evaluated = dict(zip(checkpoints, evaluated if len(checkpoints) > 1 else [evaluated]))
  done(seconds, "GAP " + ", ".join("%s %.5f" % (name.replace("model.ckpt-", ""), r["gap"])
                                   for name, r in evaluated.items()))
  return evaluated


def train_single_model(args, data, cluster, hidden, logs):
  name = "c%dh%d_%d" % (cluster, hidden, args.batch_size)
  train_dir = os.path.join(args.work_dir, name)
  log = os.path.join(logs, "train_%s.log" % name)
  begin_step("train %s (cluster size %d, hidden size %d): %d steps of batch %d" % (
      name, cluster, hidden, args.max_steps, args.batch_size))
  seconds = run(yt8m("train", "--train_data_pattern=" + data["train_pattern"],
                     "--train_dir=" + train_dir, *model_flags(args, cluster, hidden),
                     "--batch_size=%d" % args.batch_size,
                     "--base_learning_rate=%g" % args.base_learning_rate,
                     "--learning_rate_decay=0.8", "--max_steps=%d" % args.max_steps,
                     "--export_model_steps=%d" % args.export_model_steps,
                     "--num_epochs=1000", "--random_seed=%d" % args.seed), log)
  with _CONSOLE:
    _TRAINING.discard("c%dh%d" % (cluster, hidden))
    last = not _TRAINING
  if last:  # the other pipelines' CPUs are free now, or will be when their evaluations end
    _PIPELINE.cpus = None
  speeds = [float(line.split("Examples/sec: ")[1].split()[0]) for line in open(log)
            if "Examples/sec: " in line]
  steps = sorted(int(n[len("model.ckpt-"):-len(".index")]) for n in os.listdir(train_dir)
                 if n.startswith("model.ckpt-") and n.endswith(".index"))
  done(seconds, "checkpoints %s, median %.1f examples/sec" % (
      ",".join(str(s) for s in steps), sorted(speeds)[len(speeds) // 2] if speeds else 0.0))
  first, last = steps[-args.average_last], steps[-1]
  average = "avg_c%dh%d_%d_%d.ckpt" % (cluster, hidden, first, last)
  begin_step("average the checkpoints %d..%d of %s" % (first, last, name))
  avg_seconds = run(yt8m("avg_checkpoints", "--checkpoints_start_end=%d,%d" % (first, last),
                         "--prefix=%s/model.ckpt-" % train_dir,
                         "--output_path=" + os.path.join(train_dir, average)),
                    os.path.join(logs, "avg_%s.log" % name))
  done(avg_seconds, os.path.join(train_dir, average + "-0"))
  # The original's eval loop over the exported checkpoints and the evaluation of the average, in
  # one process: the graph and the held-out data pipeline are built once.
  evaluated = evaluate_checkpoints(
      args, train_dir, data["eval_pattern"],
      ["model.ckpt-%d" % s for s in steps] + [average + "-0"], cluster, hidden, logs)
  singles = {step: evaluated["model.ckpt-%d" % step] for step in steps}
  averaged = evaluated[average + "-0"]
  median_speed = sorted(speeds)[len(speeds) // 2] if speeds else 0.0
  return {"name": name, "dir": train_dir, "cluster": cluster, "hidden": hidden,
          "train_seconds": seconds, "examples_per_sec": median_speed, "singles": singles,
          "average_name": average, "average_range": (first, last), "averaged": averaged}


class Ensembles(object):
  """The averaged single models (their inference_model_avg_* checkpoints) in one graph:
  built with given weights, evaluated, and the weights searched; results[name] keeps each
  ensemble's directory, weights and evaluation."""

  def __init__(self, args, data, models, logs):
    self.args, self.data, self.models, self.logs = args, data, models, logs
    self.members = ",".join(os.path.join(m["dir"], "inference_model_" + m["average_name"]
                                         + "-0") for m in models)
    self.results = {}

  def directory(self, name):
    return os.path.join(self.args.work_dir, name)

  def build(self, name, float16, weights):
    flags = ["--train_dir=" + self.directory(name), "--checkpoints=" + self.members,
             "--float16_flag=%s" % float16]
    for model, weight in zip(self.models, weights):
      flags += ["--netvlad_cluster_size=%d" % model["cluster"],
                "--netvlad_hidden_size=%d" % model["hidden"], "--ensemble_wts=%g" % weight]
    begin_step("build %s: the averaged models in ONE %s graph, weights %s" % (
        name, "float16" if float16 else "float32", " ".join("%.2f" % w for w in weights)))
    seconds = run(yt8m("build_ensemble", *flags), os.path.join(self.logs,
                                                                "build_%s.log" % name))
    done(seconds, self.directory(name))
    self.results[name] = {"dir": self.directory(name), "weights": list(weights),
                          "float16": float16}

  def evaluate(self, name):
    results = os.path.join(self.directory(name), "eval_results.json")
    begin_step("evaluate %s" % name)
    seconds = run(yt8m("eval", "--eval_data_pattern=" + self.data["eval_pattern"],
                       "--train_dir=" + self.directory(name), "--batch_size=200",
                       "--run_once=True", "--checkpoint_file=inference_model",
                       "--results_json=" + results, *eval_files_flags(self.args)),
                  os.path.join(self.logs, "eval_%s.log" % name))
    self.results[name]["eval"] = json.load(open(results))
    done(seconds, "GAP %.5f" % self.results[name]["eval"]["gap"])

  def build_and_evaluate(self, name, float16, weights):
    self.build(name, float16, weights)
    self.evaluate(name)

  def search_and_build_tuned(self):
    """ensemble_weights' search on the equal-weight float16 ensemble (built), and the float16
    ensemble of the best weights built (not yet evaluated); returns the search's results."""
    search_json = os.path.join(self.directory("ensemble_fp16_equal"), "weight_search.json")
    begin_step("search the mixing weights on the held-out files")
    seconds = run(yt8m("ensemble_weights", "--train_dir=" + self.directory(
        "ensemble_fp16_equal"), "--eval_data_pattern=" + self.data["eval_pattern"],
                       "--results_json=" + search_json, *eval_files_flags(self.args)),
                  os.path.join(self.logs, "ensemble_weights.log"))
    search = json.load(open(search_json))
    done(seconds, "best weights %s: GAP %.5f (equal weights %.5f)" % (
        search["best_weights"]["weights"], search["best_weights"]["gap"],
        search["equal_weights"]["gap"]))
    self.build("ensemble_fp16_tuned", True, search["best_weights"]["weights"])
    return search


def submission(args, data, logs, ensembles):
  """The tuned float16 ensemble evaluated, then the submission: its tgz, its size and the
  CSV predicted from the tgz. Returns (size, csv_path, tgz, rows)."""
  ensembles.evaluate("ensemble_fp16_tuned")
  tuned_dir = ensembles.directory("ensemble_fp16_tuned")
  submission_dir = os.path.join(args.work_dir, "submission")
  os.makedirs(submission_dir, exist_ok=True)
  tgz = os.path.join(submission_dir, "submission.tgz")
  csv_path = os.path.join(submission_dir, "submission.csv")
  begin_step("write the submission tgz (and predict the test file from the model directory)")
  seconds = run(yt8m("inference", "--train_dir=" + tuned_dir, "--output_model_tgz=" + tgz,
                     "--input_data_pattern=" + data["test_pattern"],
                     "--output_file=" + os.path.join(submission_dir, "submission_from_dir.csv"),
                     "--batch_size=100"), os.path.join(logs, "inference_dir.log"))
  done(seconds, "%s (%s B)" % (tgz, "{:,}".format(os.path.getsize(tgz))))
  size_json = os.path.join(submission_dir, "size.json")
  begin_step("measure the submission model against the 1 GiB limit")
  seconds = run(yt8m("model_size", "--model_tgz=" + tgz, "--results_json=" + size_json),
                os.path.join(logs, "model_size.log"))
  size = json.load(open(size_json))
  done(seconds, "%s B, %s" % ("{:,}".format(size["total_bytes"]),
                              "fits" if size["fits"] else "DOES NOT FIT"))
  begin_step("predict the test file from the tgz (the Kaggle CSV)")
  seconds = run(yt8m("inference", "--input_model_tgz=" + tgz,
                     "--untar_model_dir=" + os.path.join(args.work_dir, "untar"),
                     "--input_data_pattern=" + data["test_pattern"],
                     "--output_file=" + csv_path, "--batch_size=100"),
                os.path.join(logs, "inference_tgz.log"))
  rows = sum(1 for _ in open(csv_path)) - 1
  done(seconds, "%s (%d videos)" % (csv_path, rows))
  return size, csv_path, tgz, rows


def budget_candidates(models):
  """Step 8's candidates: each model's average and its last exported checkpoint (a snapshot
  of the same run: a second member for the price of no extra training)."""
  candidates = []
  for model in models:
    last = max(model["singles"])
    candidates += [os.path.join(model["dir"], "inference_model_" + model["average_name"] + "-0"),
                   os.path.join(model["dir"], "inference_model_%d" % last)]
  return candidates


def candidate_label(path):
  """'c16h128_160/avg_c16h128_210_300.ckpt-0' or 'c16h128_160/model.ckpt-300' for a
  candidate's inference model path."""
  name = os.path.basename(path).replace("inference_model_", "")
  return "%s/%s" % (os.path.basename(os.path.dirname(path)),
                    "model.ckpt-" + name if name.isdigit() else name)


def budget_build(args, data, models, tuned_dir, logs):
  """Step 8: build_ensemble --candidates (each model's average and last checkpoint) under
  the bytes of the hand-picked ensemble in tuned_dir (model_size); returns its results."""
  directory = os.path.join(args.work_dir, "ensemble_budget")
  results = os.path.join(args.work_dir, "ensemble_budget.json")
  size_json = os.path.join(args.work_dir, "ensemble_budget_limit.json")
  begin_step("measure the tuned float16 ensemble's directory: the budgeted build's limit")
  seconds = run(yt8m("model_size", "--train_dir=" + tuned_dir, "--results_json=" + size_json),
                os.path.join(logs, "model_size_budget_limit.log"))
  size = json.load(open(size_json))
  done(seconds, "%s B" % "{:,}".format(size["total_bytes"]))
  candidates = budget_candidates(models)
  begin_step("budgeted build: %d candidates (%s) in float32, float16 or 8 bits under %s B "
             "(the tuned float16 ensemble's size)" % (
                 len(candidates), ", ".join(candidate_label(c) for c in candidates),
                 "{:,}".format(size["total_bytes"])))
  if os.path.exists(directory):  # a re-run: the tool writes only into a new directory
    shutil.rmtree(directory)
  seconds = run(yt8m("build_ensemble", "--train_dir=" + directory,
                     "--candidates=" + ",".join(candidates),
                     "--eval_data_pattern=" + data["eval_pattern"], "--batch_size=200",
                     "--size_limit_bytes=%d" % size["total_bytes"], "--results_json=" + results,
                     *eval_files_flags(args)), os.path.join(logs, "budget_build.log"))
  budget = json.load(open(results))
  done(seconds, "GAP %.5f, %s B: %s" % (budget["graph_gap"], "{:,}".format(
      budget["measured_bytes"]), ", ".join("%s in %s" % (candidate_label(m["candidate"]),
                                                         m["storage"])
                                           for m in budget["members"])))
  return budget


def main(argv):
  args = parse_args(argv)
  start = time.time()
  os.makedirs(args.work_dir, exist_ok=True)
  logs = os.path.join(args.work_dir, "logs")
  os.makedirs(logs, exist_ok=True)
  data_dir = os.path.join(args.work_dir, "data")
  frame = os.path.join(data_dir, "frame")
  _JOB_START[0] = start
  if not args.fresh_processes:
    use_forkserver(os.path.join(logs, "forkserver.log"))
    print("Each tool runs in its own process, forked from one that imported TensorFlow once "
          "(--fresh_processes: each started anew)", flush=True)
  print("Main job: the original's flow on %s in %s (models %s, %d steps each)" % (
      "real data" if args.train_data_pattern else "synthetic data", args.work_dir,
      ", ".join("%dx%d" % m for m in args.models), args.max_steps), flush=True)
  if args.train_data_pattern:
    data = {"train_pattern": args.train_data_pattern, "eval_pattern": args.eval_data_pattern,
            "test_pattern": args.test_data_pattern}
  else:
    begin_step("generate synthetic frame-level data (%d train files, the 60 held-out validate "
               "files, 1 test file)" % args.num_train_files)
    seconds = run(yt8m("synthetic_data", "--output_dir=" + data_dir, "--levels=frame",
                       "--num_train_files=%d" % args.num_train_files,
                       "--videos_per_file=%d" % args.videos_per_file, "--num_validate_files=60",
                       "--validate_videos_per_file=%d" % args.validate_videos_per_file,
                       "--num_test_files=1", "--test_videos_per_file=%d" % args.test_videos,
                       "--num_classes=%d" % args.num_classes,
                       "--difficulty=%g" % args.difficulty, "--seed=%d" % args.seed),
                  os.path.join(logs, "synthetic_data.log"))
    done(seconds, "%s (%d MB)" % (data_dir, sum(
        os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(data_dir)
        for n in names) // 10**6))
    data = {"train_pattern": "%s/train*.tfrecord,%s/validate*.tfrecord" % (frame, frame),
            "eval_pattern": "%s/validate*.tfrecord" % frame,
            "test_pattern": "%s/test*.tfrecord" % frame}

  models = train_models(args, data, logs)

  ensembles = Ensembles(args, data, models, logs)
  equal = [1.0 / len(models)] * len(models)
  ensembles.build("ensemble_fp16_equal", True, equal)
  # Side by side, sharing the CPUs: the float32 ensemble and both equal-weight evaluations;
  # and the weight search, the tuned build, then the tuned ensemble's evaluation and
  # submission beside the budgeted build (under the tuned ensemble's size, which model_size
  # counts alike in its directory and tgz), the longest chain, started as early as it can.
  def tuned_then_submission_and_budget():
    search = ensembles.search_and_build_tuned()
    tasks = [("submission", lambda: submission(args, data, logs, ensembles))]
    if args.budget_build:
      tasks.append(("budget", lambda: budget_build(args, data, models, ensembles.directory(
          "ensemble_fp16_tuned"), logs)))
    return search, side_by_side(args, tasks, pin=False)

  def equal_weights():
    ensembles.build_and_evaluate("ensemble_fp32_equal", False, equal)
    ensembles.evaluate("ensemble_fp16_equal")

  _, (search, results) = side_by_side(args, [("equal", equal_weights),
                                             ("tuned", tuned_then_submission_and_budget)],
                                      pin=False)
  size, csv_path, tgz, rows = results[0]
  budget = results[1] if args.budget_build else None
  ensembles = ensembles.results

  print()
  print("=" * 78)
  print("Main job done in %.1f min. Work folder: %s" % ((time.time() - start) / 60,
                                                       args.work_dir))
  print("  data:       %s (train+validate minus the 60 held-out files / 60 held-out / test)"
        % (data_dir if not args.train_data_pattern else ", ".join(
            data[k] for k in ("train_pattern", "eval_pattern", "test_pattern"))))
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
  print("  ensembles (one graph, the averaged single models above; GAP on the 60 held-out "
        "files):")
  print("    %-22s %-26s %8s %8s" % ("name", "weights", "GAP", "Hit@1"))
  for name in ("ensemble_fp32_equal", "ensemble_fp16_equal", "ensemble_fp16_tuned"):
    ensemble = ensembles[name]
    print("    %-22s %-26s %8.5f %8.4f" % (
        name, " ".join("%.2f" % w for w in ensemble["weights"]), ensemble["eval"]["gap"],
        ensemble["eval"]["hit_at_one"]))
  print("    weight search: equal weights GAP %.5f -> best %s GAP %.5f" % (
      search["equal_weights"]["gap"], search["best_weights"]["weights"],
      search["best_weights"]["gap"]))
  print("  submission model: %s B in the tgz's 4 files (float32 would be %s B, ratio %.3f), "
        "%s the %s B limit" % ("{:,}".format(size["total_bytes"]),
                               "{:,}".format(size["float32_total_bytes"]), size["ratio"],
                               "fits" if size["fits"] else "DOES NOT FIT",
                               "{:,}".format(size["limit_bytes"])))
  if budget:
    print("  budgeted build under the hand-picked ensemble's size (%s B):" % "{:,}".format(
        size["total_bytes"]))
    print("    hand-picked float16 ensemble: GAP %.5f, %s B" % (
        ensembles["ensemble_fp16_tuned"]["eval"]["gap"], "{:,}".format(size["total_bytes"])))
    print("    budgeted ensemble:            GAP %.5f, %s B: %s" % (
        budget["graph_gap"], "{:,}".format(budget["measured_bytes"]), ", ".join(
            "%s in %s (weight %.2f)" % (candidate_label(m["candidate"]), m["storage"],
                                        m["weight"])
            for m in budget["members"])))
  print("  submission: %s (%d videos) from %s" % (csv_path, rows, tgz))
  print("  logs:       %s" % logs)
  best_member = max(m["averaged"]["gap"] for m in models)
  best_checkpoint = max(r["gap"] for m in models for r in m["singles"].values())
  final = ensembles["ensemble_fp16_tuned"]["eval"]["gap"]
  print("GAP reached: %.5f (tuned float16 ensemble; best member, an average, %.5f; best "
        "single checkpoint %.5f)" % (final, best_member, best_checkpoint))
  summary = {"models": models, "ensembles": ensembles, "weight_search": search,
             "budget_build": budget,
             "size": size, "submission_csv": csv_path, "submission_tgz": tgz,
             "gap": final, "minutes": (time.time() - start) / 60}
  with open(os.path.join(args.work_dir, "summary.json"), "w") as handle:
    json.dump(summary, handle, indent=1, default=str)


if __name__ == "__main__":
  main(sys.argv[1:])
