"""Benchmark: CPU time per video of train.py's input pipeline alone (no model).

    python scripts/bench_input.py [--videos_per_file=100 --num_files=12 --repeats=3]
                                  [--baseline=OTHER_CHECKOUT]

Generates synthetic frame-level files (300-frame videos on average), then iterates the
training dataset (readers.dataset: 8 interleaved files, shuffled records, parsed, batches
of 160) in a child process, once with the package's malloc settings and once with glibc's
defaults (MALLOC_TRIM_THRESHOLD_ set, which the package leaves alone), and, with --baseline,
once with another checkout's package (e.g. `git worktree add /tmp/base main`), and prints CPU ms
(user + system), page faults and wall ms per video for each. Every CPU millisecond here is
taken from the model on a 2-core machine. Not a test: it prints numbers.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

from bench_util import REPO_ROOT, run_child

CHILD = """
import glob, importlib, json, resource, sys, time
sys.path.insert(0, sys.argv[4])  # the checkout measured, ahead of the working directory
readers = importlib.import_module("youtube-8m.readers")
files = sorted(glob.glob(sys.argv[1]))
repeats, batch_size = int(sys.argv[2]), int(sys.argv[3])
dataset = readers.YT8MFrameFeatureReader(num_classes=3862).dataset(
    files * repeats, batch_size, shuffle=True, num_readers=8, seed=1)
batches = iter(dataset)
first = next(batches)  # start-up (graph, threads, shuffle buffer fill) not timed
start_usage, start = resource.getrusage(resource.RUSAGE_SELF), time.time()
videos = sum(len(batch["labels"]) for batch in batches)
usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.time() - start
print("RESULT " + json.dumps({
    "videos": videos, "wall_ms": 1e3 * wall / videos,
    "cpu_ms": 1e3 * (usage.ru_utime + usage.ru_stime - start_usage.ru_utime
                     - start_usage.ru_stime) / videos,
    "sys_ms": 1e3 * (usage.ru_stime - start_usage.ru_stime) / videos,
    "faults": (usage.ru_minflt - start_usage.ru_minflt) / videos}))
"""

SETTINGS = (("package malloc settings", {}),
            ("glibc defaults", {"MALLOC_TRIM_THRESHOLD_": "131072"}))


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--videos_per_file", type=int, default=100)
  parser.add_argument("--num_files", type=int, default=12)
  parser.add_argument("--repeats", type=int, default=3, help="passes over the files")
  parser.add_argument("--batch_size", type=int, default=160)
  parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
  parser.add_argument("--baseline", default=None,
                      help="another checkout of the project, measured alternately with this one")
  parser.add_argument("--work_dir", default=None)
  args = parser.parse_args(argv)
  variants = [(name, env, REPO_ROOT) for name, env in SETTINGS]
  if args.baseline:
    variants.append(("baseline checkout", {}, os.path.abspath(args.baseline)))
  work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_input_")
  try:
    data = os.path.join(work_dir, "data")
    if not os.path.isdir(os.path.join(data, "frame")):
      run_child([sys.executable, "-m", "youtube-8m.synthetic_data", "--output_dir=" + data,
                 "--levels=frame", "--num_train_files=%d" % args.num_files,
                 "--videos_per_file=%d" % args.videos_per_file, "--num_validate_files=0",
                 "--num_test_files=0"])
    pattern = os.path.join(data, "frame", "train*.tfrecord")
    for round_index in range(args.rounds):
      for name, env, root in variants:
        _, peak_mib, text = run_child(
            [sys.executable, "-c", CHILD, pattern, str(args.repeats), str(args.batch_size), root],
            env=env)
        result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
        print("round %d, %-24s %d videos: CPU %.3f ms/video (system %.3f), %.1f page faults"
              "/video, wall %.3f ms/video, peak RSS %.0f MiB" % (
                  round_index + 1, name + ":", result["videos"], result["cpu_ms"],
                  result["sys_ms"], result["faults"], result["wall_ms"], peak_mib),
              flush=True)
  finally:
    if not args.work_dir:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  main(sys.argv[1:])
