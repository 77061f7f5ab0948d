"""Side-by-side benchmark: the project against the PyTorch peer, in ONE run.

    python scripts/bench_vs_peer.py --peer_dir=DIR [--rounds=2]
                                    [--compute_dtypes=float32,bfloat16]
                                    [--work_dir=DIR] [--results_json=PATH] [--quick]

The peer is an independent PyTorch implementation of the same Gated NetVLAD model (in-memory random
data), kept outside this repository: --peer_dir (default $YT8M_PEER_DIR) is the directory holding
its torch_netvlad.py, flops.py and wait_quiet.py. It runs in its own venv, --peer_venv (created with
python3.11 -m venv + pip install torch==2.13.0 numpy if missing; torch is not a project dependency).
The original's configuration by default: K=32, H=512, batch 160, 300 frames sampled.

Each round measures, alternating project and peer (A B A B), each measurement only after
the peer's wait_quiet.py reports a quiet machine, for each --compute_dtypes:
  * train.py end to end (synthetic TFRecords -> checkpoints): examples/sec over the steady
    steps, i.e. batch x (last step - first timed step) / the time between those two steps'
    log lines (absl timestamps): the input pipeline, the metrics of every 10th step and
    the Python loop are included; start-up, graph building, the first export (step 10) and
    the final save are not (the first timed step is --skip_steps, default 11);
  * the peer's training step (torch_netvlad.py train, one JSON line);
  * the model step alone: the same train.py and graph on ONE in-memory batch (its first
    batch cached and repeated; bench_train.STEP_ALONE), timed the same way;
  * inference.py of the trained model (its inference_model written by eval.py), steady
    videos/sec after the first batch (bench_ensemble.inference_rate);
  * the peer's inference (torch_netvlad.py infer);
  * the original's 4-model float16 ensemble (random weights, made once by
    scripts/bench_ensemble.py --keep) with inference.py at --batch_size.
Then the peer's flops.py measures this machine's GEMM rate on the model's shapes and
gives the float32 roofline, as which fraction each figure is reported (the ensemble's: each
member's forward FLOPs at its own measured GEMM rate, summed; bfloat16 may exceed it). Peak
RSS (the child's own ru_maxrss) of train.py at --batch_size, of eval.py at --eval_batch_size
and of the ensemble's inference.py.

--compute_dtype is passed to the project's tools when they define it (their --helpfull);
a dtype other than float32 is skipped with a note otherwise. Prints a markdown table and
writes all figures as JSON. --quick: tiny sizes and few steps, to try the script on a busy
machine (its numbers mean nothing; the ensemble keeps the original's sizes). Not a test.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import bench_ensemble
import bench_train
from bench_util import REPO_ROOT, allocator_setting, host_setting, run_child, yt8m
from original_flags import original_model_flags

PEER_TORCH = "torch==2.13.0"
# absl's log line prefix, e.g. "I1130 14:38:08.123456 1234 train.py:521] training step 11 |"
STEP_LINE = re.compile(r"^I\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*\] training step (\d+) \|", re.M)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cluster", type=int, default=32)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=160)
  parser.add_argument("--iterations", type=int, default=300, help="frames sampled per video")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--compute_dtypes", default="float32,bfloat16",
                      help="comma list of the project's --compute_dtype values to measure")
  parser.add_argument("--steps", type=int, default=40, help="train.py steps per run")
  parser.add_argument("--skip_steps", type=int, default=11,
                      help="first timed step (after warm-up and the step-10 export)")
  parser.add_argument("--num_train_files", type=int, default=12,
                      help="synthetic train files of 100 videos")
  parser.add_argument("--test_videos", type=int, default=800,
                      help="synthetic test videos for inference.py")
  parser.add_argument("--eval_batch_size", type=int, default=1024)
  parser.add_argument("--no_ensemble", action="store_true",
                      help="skip the original's 4-model ensemble (~2 GB of random checkpoints)")
  parser.add_argument("--peer_dir", default=os.environ.get("YT8M_PEER_DIR"),
                      help="the peer's directory (torch_netvlad.py, flops.py, wait_quiet.py); "
                           "default $YT8M_PEER_DIR")
  parser.add_argument("--peer_venv", default=os.path.expanduser("~/.cache/torchvenv"))
  parser.add_argument("--max_wait", type=float, default=900,
                      help="seconds wait_quiet.py waits for a quiet machine")
  parser.add_argument("--allow_busy", action="store_true",
                      help="measure anyway (flagged 'busy') when the machine is not quiet")
  parser.add_argument("--quick", action="store_true",
                      help="tiny model, few steps, --allow_busy: a dry run (add --no_ensemble "
                           "to skip the ensemble)")
  parser.add_argument("--work_dir", default=None, help="kept if given; else a temporary dir")
  parser.add_argument("--results_json", default="bench_vs_peer.json",
                      help="where all the figures go as JSON")
  args = parser.parse_args(argv)
  if not args.peer_dir:
    parser.error("--peer_dir (or $YT8M_PEER_DIR) must name the peer's directory")
  if args.quick:
    args.cluster, args.hidden, args.batch_size, args.iterations = 4, 32, 32, 20
    args.steps, args.num_train_files, args.test_videos = 16, 2, 96
    args.eval_batch_size, args.allow_busy = 128, True
  if args.steps <= args.skip_steps + 1:
    parser.error("--steps must exceed --skip_steps + 1")
  args.compute_dtypes = args.compute_dtypes.split(",")
  return args


class Bench:
  """Runs the measurements; keeps every figure in self.rows / self.memory."""

  def __init__(self, args, work_dir):
    self.args = args
    self.work_dir = work_dir
    self.logs = os.path.join(work_dir, "logs")
    os.makedirs(self.logs, exist_ok=True)
    self.peer_python = os.path.join(args.peer_venv, "bin", "python")
    self.rows = []  # {"what", "compute_dtype", "round", "project", "peer", "busy", ...}
    self.memory = {}
    self.notes = []
    self.peer_runs = []  # the peer's JSON lines
    self.runs = 0
    self.dtype_flag = False  # the project's tools define --compute_dtype

  def log(self, name):
    self.runs += 1
    return os.path.join(self.logs, "%02d_%s.log" % (self.runs, name))

  def wait_quiet(self):
    """True if the machine is quiet; False (a 'busy' measurement) with --allow_busy."""
    result = subprocess.run([sys.executable, os.path.join(self.args.peer_dir, "wait_quiet.py"),
                             "--max_wait=%g" % self.args.max_wait], capture_output=True,
                            text=True)
    if result.returncode == 0:
      return True
    if not self.args.allow_busy:
      sys.exit("the machine did not become quiet within %g s (%s); --allow_busy measures "
               "anyway" % (self.args.max_wait, result.stdout.strip()))
    return False

  # --- set-up (not timed) ---------------------------------------------------------------

  def setup_peer(self):
    if not os.path.exists(self.peer_python):
      print("creating the peer's venv %s (%s, numpy)" % (self.args.peer_venv, PEER_TORCH))
      subprocess.run(["python3.11", "-m", "venv", self.args.peer_venv], check=True)
    if subprocess.run([self.peer_python, "-c", "import torch, numpy"],
                      capture_output=True).returncode != 0:
      subprocess.run([self.peer_python, "-m", "pip", "install", "-q", PEER_TORCH, "numpy"],
                     check=True)

  def supported_dtypes(self):
    """The requested dtypes the project's train/eval/inference all accept."""
    # absl exits with status 1 after --helpfull
    helps = [subprocess.run(yt8m(tool, "--helpfull"), cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout for tool in ("train", "eval", "inference")]
    if all("--compute_dtype" in text for text in helps):
      self.dtype_flag = True
      return self.args.compute_dtypes
    skipped = [d for d in self.args.compute_dtypes if d != "float32"]
    if skipped:
      self.notes.append("the project has no --compute_dtype: %s not measured"
                        % ",".join(skipped))
    return ["float32"] if "float32" in self.args.compute_dtypes else []

  def dtype_flags(self, dtype):
    return ["--compute_dtype=" + dtype] if self.dtype_flag else []

  def make_data(self):
    data = os.path.join(self.work_dir, "data")
    run_child(yt8m("synthetic_data", "--output_dir=" + data, "--levels=frame",
                   "--num_train_files=%d" % self.args.num_train_files,
                   "--videos_per_file=%d" % bench_train.VIDEOS_PER_FILE,
                   "--num_validate_files=0", "--num_test_files=2",
                   "--test_videos_per_file=%d" % (self.args.test_videos // 2)),
              self.log("synthetic_data"))
    self.train_pattern = os.path.join(data, "frame", "train*.tfrecord")
    self.test_pattern = os.path.join(data, "frame", "test*.tfrecord")

  def make_ensemble(self):
    """The original's float16 ensemble (random weights) and its test data, by bench_ensemble."""
    directory = os.path.join(self.work_dir, "ensemble")
    run_child([sys.executable, os.path.join(REPO_ROOT, "scripts", "bench_ensemble.py"),
               "--work_dir=" + directory, "--keep", "--videos=%d" % self.args.test_videos,
               "--batch_size=%d" % self.args.batch_size,
               "--iterations=%d" % self.args.iterations], self.log("bench_ensemble"))
    self.ensemble_dir = os.path.join(directory, "ensemble_YHLS")
    self.ensemble_pattern = os.path.join(directory, "data", "frame", "test*.tfrecord")

  # --- the measurements -----------------------------------------------------------------

  def train(self, dtype, train_dir, step_alone=False):
    """train.py (or the model step alone): (steady examples/sec, peak RSS MiB)."""
    args = self.args
    tool = ["-c", bench_train.STEP_ALONE] if step_alone else ["-m", "youtube-8m.train"]
    shutil.rmtree(train_dir, ignore_errors=True)
    command = [sys.executable, *tool, "--train_data_pattern=" + self.train_pattern,
               "--train_dir=" + train_dir,
               *original_model_flags(args.cluster, args.hidden, args.iterations),
               "--batch_size=%d" % args.batch_size, "--base_learning_rate=0.0001",
               "--learning_rate_decay=0.8", "--max_steps=%d" % args.steps,
               "--export_model_steps=100000", "--num_epochs=1000", "--save_model_secs=0",
               *self.dtype_flags(dtype)]
    _, peak_mib, text = run_child(command, self.log(
        "train_%s%s" % (dtype, "_step_alone" if step_alone else "")))
    return steady_rate(text, args.skip_steps, args.batch_size), peak_mib

  def inference(self, dtype, train_dir, pattern, name):
    """inference.py of train_dir's inference_model: (steady videos/sec, peak RSS MiB)."""
    _, peak_mib, text = run_child(yt8m(
        "inference", "--train_dir=" + train_dir, "--input_data_pattern=" + pattern,
        "--output_file=" + os.path.join(self.work_dir, name + ".csv"),
        "--batch_size=%d" % self.args.batch_size, *self.dtype_flags(dtype)),
                                  self.log("inference_%s_%s" % (name, dtype)))
    return bench_ensemble.inference_rate(text)[2], peak_mib

  def export_and_eval_memory(self, train_dir):
    """eval.py at --eval_batch_size on the train files: its peak RSS; also writes
    train_dir/inference_model for inference.py."""
    _, peak_mib, _ = run_child(yt8m(
        "eval", "--train_dir=" + train_dir, "--eval_data_pattern=" + self.train_pattern,
        "--noeval_holdout_only", "--run_once", "--force_output_model_name",
        "--batch_size=%d" % self.args.eval_batch_size), self.log("eval_memory"))
    self.peak("eval.py --batch_size=%d" % self.args.eval_batch_size, peak_mib)

  def peer(self, mode):
    args = self.args
    command = [self.peer_python, os.path.join(self.args.peer_dir, "torch_netvlad.py"), mode,
               "--cluster_size=%d" % args.cluster, "--hidden_size=%d" % args.hidden,
               "--batch_size=%d" % args.batch_size, "--frames=%d" % args.iterations]
    if args.quick:
      command += ["--steps=3", "--warmup=1"]
    text = run_child(command, self.log("peer_" + mode))[2]
    result = json.loads(text.strip().splitlines()[-1])
    self.peer_runs.append(result)
    return result["examples_per_sec"], result["other_cpu_share"]

  def measure(self, what, dtype, round_index, function, *function_args):
    """One measurement after wait_quiet; returns function's result."""
    quiet = self.wait_quiet()
    value = function(*function_args)
    print("  round %d %-40s %-9s %.1f%s" % (round_index, what, dtype, value[0],
                                           "" if quiet else " (busy)"), flush=True)
    return value, not quiet

  def measure_peer(self, mode, round_index):
    """(peer examples/sec, busy): busy also if other processes took > 5% of the machine
    during the peer's timed steps (its other_cpu_share, as the peer reports it)."""
    (examples_per_sec, other_share), busy = self.measure("peer " + mode, "", round_index,
                                                          self.peer, mode)
    return examples_per_sec, busy or other_share > 0.05

  def round(self, round_index, dtypes):
    for dtype in dtypes:
      train_dir = os.path.join(self.work_dir, "train_" + dtype)
      (project, peak), busy = self.measure("train.py end to end", dtype, round_index,
                                          self.train, dtype, train_dir)
      self.peak("train.py --batch_size=%d (%s)" % (self.args.batch_size, dtype), peak)
      peer, peer_busy = self.measure_peer("train", round_index)
      self.add("train.py end to end", dtype, round_index, project, peer, busy or peer_busy,
               "train")
      (alone, _), busy = self.measure("model step alone", dtype, round_index, self.train,
                                      dtype, train_dir + "_step_alone", True)
      self.add("model step alone (in-memory batch)", dtype, round_index, alone, peer,
               busy or peer_busy, "train")
      if not os.path.exists(os.path.join(train_dir, "inference_model.index")):
        self.export_and_eval_memory(train_dir)
      (project, _), busy = self.measure("inference.py single model", dtype, round_index,
                                        self.inference, dtype, train_dir, self.test_pattern,
                                        "single")
      peer, peer_busy = self.measure_peer("infer", round_index)
      self.add("inference.py, single model", dtype, round_index, project, peer,
               busy or peer_busy, "infer")
      if not self.args.no_ensemble:
        (project, peak), busy = self.measure(
            "the original's 4-model float16 ensemble inference", dtype, round_index, self.inference,
            dtype, self.ensemble_dir, self.ensemble_pattern, "ensemble")
        self.peak("inference.py --batch_size=%d, the original's float16 ensemble (%s)" % (
            self.args.batch_size, dtype), peak)
        self.add("inference.py, the original's 4-model float16 ensemble", dtype, round_index,
                 project, None, busy, "ensemble")

  def peak(self, what, mib):
    """Keeps the highest peak RSS seen for what."""
    self.memory[what] = max(mib, self.memory.get(what, 0))

  def add(self, what, dtype, round_index, project, peer, busy, roofline):
    self.rows.append({"what": what, "compute_dtype": dtype, "round": round_index,
                      "project": project, "peer": peer, "busy": busy, "roofline": roofline})

  def roofline(self):
    """flops.py (measured GEMM rate): {"train"|"infer"|"ensemble": examples/sec ceiling}."""
    args = self.args
    self.wait_quiet()
    flops = ["--cluster_size=%d" % args.cluster, "--hidden_size=%d" % args.hidden,
             "--batch_size=%d" % args.batch_size, "--frames=%d" % args.iterations]
    if args.quick:
      flops.append("--min_seconds=0.05")
    text = run_child([self.peer_python, os.path.join(self.args.peer_dir, "flops.py")] + flops,
                     self.log("flops"))[2]
    measured = json.loads(text.strip().splitlines()[-1])
    ceilings = {"train": measured["roofline_train_ex_per_sec"],
                "infer": measured["roofline_infer_ex_per_sec"]}
    if not args.no_ensemble:
      # Each member's GEMM rate on its own shapes (the bigger models' matmuls run faster than
      # K=32/H=512's): the ensemble's ceiling is 1 / sum of the members' seconds per example.
      seconds_per_example = 0.0
      for cluster, hidden in bench_ensemble.ORIGINAL_MODELS:
        self.wait_quiet()
        text = run_child([self.peer_python, os.path.join(self.args.peer_dir, "flops.py"),
                          "--cluster_size=%d" % cluster, "--hidden_size=%d" % hidden,
                          "--batch_size=%d" % args.batch_size, "--frames=%d" % args.iterations]
                         + flops[4:], self.log("flops_c%dh%d" % (cluster, hidden)))[2]
        member = json.loads(text.strip().splitlines()[-1])
        seconds_per_example += 1.0 / member["roofline_infer_ex_per_sec"]
      ceilings["ensemble"] = 1.0 / seconds_per_example
    return measured, ceilings


def steady_rate(log_text, first_step, batch_size):
  """Examples/sec between the log lines of training step first_step and of the last step."""
  times = {}
  for match in STEP_LINE.finditer(log_text):
    hours, minutes, seconds, step = match.groups()
    times[int(step)] = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
  last = max(times)
  if first_step not in times or last <= first_step:
    sys.exit("no steady steps %d..%d in the training log" % (first_step, last))
  seconds = (times[last] - times[first_step]) % 86400  # across midnight
  return batch_size * (last - first_step) / seconds


def markdown(rows, ceilings, memory):
  lines = ["| measurement | compute dtype | round | project | peer | project / peer | "
           "fraction of float32 roofline |", "|---|---|---|---|---|---|---|"]
  for row in rows:
    lines.append("| %s | %s | %d%s | %.1f | %s | %s | %.0f%% |" % (
        row["what"], row["compute_dtype"], row["round"], " (busy)" if row["busy"] else "",
        row["project"], "%.1f" % row["peer"] if row["peer"] else "-",
        "%.2f" % (row["project"] / row["peer"]) if row["peer"] else "",
        100 * row["project"] / ceilings[row["roofline"]]))
  lines += ["", "| train.py end to end / model step alone | compute dtype | round |",
            "|---|---|---|"]
  training = {(r["what"], r["compute_dtype"], r["round"]): r["project"] for r in rows}
  for (what, dtype, round_index), alone in training.items():
    if what.startswith("model step alone"):
      lines.append("| %.3f | %s | %d |" % (
          training[("train.py end to end", dtype, round_index)] / alone, dtype, round_index))
  lines += ["", "| peak RSS | MiB |", "|---|---|"]
  lines += ["| %s | %.0f |" % item for item in sorted(memory.items())]
  return "\n".join(lines)


def main(argv):
  args = parse_args(argv)
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_vs_peer_")
  os.makedirs(work_dir, exist_ok=True)
  bench = Bench(args, work_dir)
  try:
    host = host_setting()
    print("NetVLADModelLF K=%d H=%d, batch %d, %d frames sampled, %d cores; %s\n%s" % (
        args.cluster, args.hidden, args.batch_size, args.iterations, os.cpu_count(),
        allocator_setting(), host), flush=True)
    bench.setup_peer()
    dtypes = bench.supported_dtypes()
    bench.make_data()
    if not args.no_ensemble:
      bench.make_ensemble()
    for round_index in range(1, args.rounds + 1):
      bench.round(round_index, dtypes)
    measured, ceilings = bench.roofline()
    table = markdown(bench.rows, ceilings, bench.memory)
    print("\n" + table)
    print("roofline (flops.py, %.0f GFLOP/s on the model's shapes, other processes %.0f%% "
          "of the machine meanwhile): train %.0f, infer %.0f%s examples/sec" % (
              measured["sustained_gflops"], 100 * measured["other_cpu_share"],
              ceilings["train"], ceilings["infer"], ", seed ensemble %.0f"
              % ceilings["ensemble"] if "ensemble" in ceilings else ""))
    for note in bench.notes:
      print("note: " + note)
    print(host)
    results = {"config": {k: v for k, v in vars(args).items()}, "host": host, "rows": bench.rows,
               "peak_rss_mib": bench.memory, "roofline": ceilings, "flops": measured,
               "peer_runs": bench.peer_runs, "notes": bench.notes, "markdown": table}
    with open(args.results_json, "w") as handle:
      json.dump(results, handle, indent=1)
    print("(all figures in %s)" % args.results_json)
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1:])
