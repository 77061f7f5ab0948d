#!/usr/bin/env python
"""Read throughput of youtube-8m/storage.py from a LOCAL Cloud Storage emulator.

Starts gcp-storage-emulator on 127.0.0.1 (or uses --emulator_host), uploads --num_files
TFRecord files of --file_mb MB each, then measures:
  (a) ShardStager staging (background download, --prefetch ahead) + reading every record
      with a local tf.data.TFRecordDataset, end to end;
  (a') ShardStager staging alone (the consumer only moves on);
  (b) streaming the bytes through Python: one download to memory per object;
and, for reference, TFRecordDataset on the same files already on local disk.

  .venv/bin/python scripts/bench_storage.py [--num_files=20 --file_mb=20 --prefetch=2]

Only loopback traffic; the emulator is stopped at the end.
"""

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO_ROOT, os.path.join(REPO_ROOT, "tests")):
  if _path not in sys.path:
    sys.path.insert(0, _path)

from gcs_emulator import Emulator, create_bucket  # pylint: disable=g-import-not-at-top

storage = importlib.import_module("youtube-8m.storage")
staging = importlib.import_module("youtube-8m.staging")

MB = 1e6


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_files", type=int, default=20)
  parser.add_argument("--file_mb", type=float, default=20.0, help="size of each file, MB")
  parser.add_argument("--record_kb", type=float, default=100.0, help="size of each record")
  parser.add_argument("--prefetch", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement")
  parser.add_argument("--emulator_host", default=None,
                      help="use a running emulator (http://127.0.0.1:PORT) instead of "
                           "starting one")
  parser.add_argument("--json", default=None, help="also write the results here")
  return parser.parse_args(argv)


def write_tfrecords(tf, directory, num_files, file_bytes, record_bytes):
  paths = []
  for i in range(num_files):
    path = os.path.join(directory, "train%04d.tfrecord" % i)
    with tf.io.TFRecordWriter(path) as writer:
      written = 0
      while written < file_bytes:
        record = os.urandom(int(min(record_bytes, file_bytes - written)) or 1)
        writer.write(record)
        written += len(record) + 16  # framing: length, crc, data, crc
    paths.append(path)
  return paths


def read_records(tf, local_path):
  """(records, payload bytes) read with a local TFRecordDataset."""
  count = total = 0
  for batch in tf.data.TFRecordDataset(local_path, buffer_size=8 << 20).batch(64):
    count += int(batch.shape[0])
    total += int(tf.reduce_sum(tf.strings.length(batch)))
  return count, total


def timed(fn, repeats):
  best = None
  result = None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
  return best, result


def main(argv=None):
  args = parse_args(argv if argv is not None else sys.argv[1:])
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  workdir = tempfile.mkdtemp(prefix="yt8m-bench-storage-")
  emulator = None
  try:
    if args.emulator_host:
      host = args.emulator_host
    else:
      emulator = Emulator().start()
      host = emulator.host
    os.environ["STORAGE_EMULATOR_HOST"] = host
    bucket = create_bucket(host)
    print("emulator %s, bucket gs://%s" % (host, bucket), flush=True)

    source_dir = os.path.join(workdir, "src")
    os.makedirs(source_dir)
    local_paths = write_tfrecords(tf, source_dir, args.num_files, args.file_mb * MB,
                                  args.record_kb * 1e3)
    total_bytes = sum(os.path.getsize(p) for p in local_paths)
    total_mb = total_bytes / MB

    start = time.perf_counter()
    remote_paths = []
    for path in local_paths:
      remote = "gs://%s/frame/%s" % (bucket, os.path.basename(path))
      storage.copy(path, remote)
      remote_paths.append(remote)
    upload_s = time.perf_counter() - start
    assert storage.glob("gs://%s/frame/train*.tfrecord" % bucket) == remote_paths
    print("uploaded %d files, %.1f MB in %.2f s: %.1f MB/s"
          % (len(remote_paths), total_mb, upload_s, total_mb / upload_s), flush=True)

    expected = [read_records(tf, p) for p in local_paths]  # also warms up tf.data

    def local_read():
      return [read_records(tf, p) for p in local_paths]

    def staged_read():
      with staging.ShardStager(remote_paths, cache_dir=os.path.join(workdir, "cache"),
                               prefetch=args.prefetch) as stager:
        return [read_records(tf, p) for p in stager]

    def staged_only():
      with staging.ShardStager(remote_paths, cache_dir=os.path.join(workdir, "cache"),
                               prefetch=args.prefetch) as stager:
        return sum(os.path.getsize(p) for p in stager)

    def streamed():
      return sum(len(storage.read_bytes(p)) for p in remote_paths)

    results = {"num_files": len(remote_paths), "total_mb": round(total_mb, 1),
               "prefetch": args.prefetch, "upload_mb_s": round(total_mb / upload_s, 1)}
    seconds, got = timed(local_read, args.repeats)
    assert got == expected
    results["local_tfrecord_read_mb_s"] = round(total_mb / seconds, 1)
    seconds, got = timed(staged_read, args.repeats)
    assert got == expected, "staged records differ from the originals"
    results["a_staged_plus_tfrecord_read_mb_s"] = round(total_mb / seconds, 1)
    seconds, got = timed(staged_only, args.repeats)
    assert got == total_bytes
    results["a_staging_only_mb_s"] = round(total_mb / seconds, 1)
    seconds, got = timed(streamed, args.repeats)
    assert got == total_bytes
    results["b_stream_to_memory_mb_s"] = round(total_mb / seconds, 1)

    print("\n%-42s %10s" % ("measurement (%d x %.0f MB)" % (args.num_files, args.file_mb),
                           "MB/s"))
    for key, label in (("a_staged_plus_tfrecord_read_mb_s",
                        "(a) ShardStager + local TFRecordDataset"),
                       ("a_staging_only_mb_s", "(a') ShardStager staging only"),
                       ("b_stream_to_memory_mb_s", "(b) download to memory (Python)"),
                       ("local_tfrecord_read_mb_s", "ref: TFRecordDataset on local disk"),
                       ("upload_mb_s", "ref: upload (storage.copy)")):
      print("%-42s %10.1f" % (label, results[key]))
    if args.json:
      with open(args.json, "w") as handle:
        json.dump(results, handle, indent=2)
    return results
  finally:
    if emulator is not None:
      emulator.stop()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
