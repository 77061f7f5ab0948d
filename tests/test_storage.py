"""Tests for youtube-8m/storage.py against the real gcp-storage-emulator (a subprocess on
127.0.0.1, see gcs_emulator.py), with a fault-injecting proxy in front of it for retries.

Tests parametrized over `root` run the same calls on a local directory and on a gs:// bucket.
"""

import importlib
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _path in (REPO_ROOT, TESTS_DIR):
  if _path not in sys.path:
    sys.path.insert(0, _path)

from gcs_emulator import FaultProxy, free_port  # pylint: disable=g-import-not-at-top
from gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401,F811  # pylint: disable=g-import-not-at-top,unused-import  (fixtures)

storage = importlib.import_module("youtube-8m.storage")
staging = importlib.import_module("youtube-8m.staging")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
  """Short backoffs so retry tests take milliseconds."""
  monkeypatch.setattr(storage, "RETRY_OPTIONS", dict(initial=0.01, maximum=0.05, timeout=20.0))


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  """A directory on either side: a local tmp dir or a fresh gs:// bucket."""
  if request.param == "local":
    return str(tmp_path / "root")
  return request.getfixturevalue("gcs_bucket")


@pytest.fixture
def proxy(gcs_emulator, monkeypatch):
  """(FaultProxy, 'gs://bucket'): STORAGE_EMULATOR_HOST points at the proxy."""
  with FaultProxy(gcs_emulator.host, delay=1.5) as fault_proxy:
    bucket = gcs_emulator.create_bucket()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.host)
    yield fault_proxy, "gs://" + bucket


def put(path, data):
  storage.makedirs(os.path.dirname(path))
  storage.write_bytes(path, data)


def retry_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and "retrying" in r.getMessage()]


# ---------------------------------------------------------------------------------------
# Paths and import.


@pytest.mark.slow
def test_import_loads_neither_tensorflow_nor_google_cloud():
  code = ("import importlib, sys; importlib.import_module('youtube-8m.storage'); "
          "bad = [m for m in ('tensorflow', 'google.cloud.storage', 'google.auth') "
          "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr


def test_is_gcs_and_split_gcs():
  assert storage.is_gcs("gs://b-1/x") and not storage.is_gcs("/gcs/b-1/x")
  assert not storage.is_gcs("relative/path")
  assert storage.split_gcs("gs://my-bucket/a/b.tfrecord") == ("my-bucket", "a/b.tfrecord")
  assert storage.split_gcs("gs://my-bucket") == ("my-bucket", "")
  assert storage.split_gcs("gs://my-bucket/") == ("my-bucket", "")
  for bad in ("gs://", "gs:///x", "gs://UPPER/x", "gs://a/x", "gs://bad bucket/x",
              "/local/path"):
    with pytest.raises(ValueError, match="gs://"):
      storage.split_gcs(bad)
  with pytest.raises(ValueError, match="malformed gs:// URL"):
    storage.exists("gs:/bucket/x")
  with pytest.raises(ValueError, match="unsupported URL scheme 's3'"):
    storage.exists("s3://bucket/x")


def test_vertex_fuse_paths_are_local(tmp_path):
  fuse_like = str(tmp_path / "gcs" / "bucket" / "f.txt")
  storage.makedirs(os.path.dirname(fuse_like))
  storage.write_bytes(fuse_like, b"x")
  assert storage.exists(fuse_like) and storage.size(fuse_like) == 1
  with staging.SyncedDir(str(tmp_path / "gcs" / "bucket")) as synced:
    assert synced.local == str(tmp_path / "gcs" / "bucket")


# ---------------------------------------------------------------------------------------
# File-system functions, on both sides.

TREE = {
    "data/train-0001.tfrecord": b"a" * 11,
    "data/train-0002.tfrecord": b"b" * 12,
    "data/train-x.txt": b"c",
    "data/validate0a.tfrecord": b"d",
    "data/sub/train-0003.tfrecord": b"e",
    "other/train-9.tfrecord": b"f",
}


def make_tree(root):
  for name, data in TREE.items():
    put(root + "/" + name, data)


@pytest.mark.parametrize("pattern, expected", [
    ("data/train-*.tfrecord", ["data/train-0001.tfrecord", "data/train-0002.tfrecord"]),
    ("data/*", ["data/sub", "data/train-0001.tfrecord", "data/train-0002.tfrecord",
                "data/train-x.txt", "data/validate0a.tfrecord"]),
    ("data/*/train-*", ["data/sub/train-0003.tfrecord"]),
    ("*/train-*.tfrecord", ["data/train-0001.tfrecord", "data/train-0002.tfrecord",
                            "other/train-9.tfrecord"]),
    ("data/train-000?.tfrecord", ["data/train-0001.tfrecord", "data/train-0002.tfrecord"]),
    ("data/train-000[2-9].tfrecord", ["data/train-0002.tfrecord"]),
    ("data/train-000[!1].tfrecord", ["data/train-0002.tfrecord"]),
    ("data/validate*", ["data/validate0a.tfrecord"]),
    ("data/train-0001.tfrecord", ["data/train-0001.tfrecord"]),  # no wildcard, exists
    ("data/nothing-*", []),
    ("nothing/*.tfrecord", []),
    ("data/train-0009.tfrecord", []),  # no wildcard, missing
])
def test_glob(root, pattern, expected):
  make_tree(root)
  assert storage.glob(root + "/" + pattern) == [root + "/" + e for e in expected]


def test_exists_isdir_listdir(root):
  make_tree(root)
  assert storage.exists(root + "/data/train-x.txt")
  assert storage.exists(root + "/data/sub")
  assert not storage.exists(root + "/data/nope")
  assert not storage.exists(root + "/dat")  # a name prefix is not a directory
  assert storage.isdir(root + "/data") and storage.isdir(root + "/data/")
  assert storage.isdir(root + "/data/sub")
  assert not storage.isdir(root + "/data/train-x.txt")
  assert not storage.isdir(root + "/nope")
  assert storage.listdir(root + "/data") == ["sub", "train-0001.tfrecord",
                                             "train-0002.tfrecord", "train-x.txt",
                                             "validate0a.tfrecord"]
  assert storage.listdir(root) == ["data", "other"]
  with pytest.raises(FileNotFoundError):
    storage.listdir(root + "/nope")
  storage.makedirs(root + "/new/dir")  # a no-op on gs://
  assert storage.isdir(root + "/new/dir") == (not storage.is_gcs(root))


def test_open_read_write_text_and_binary(root):
  storage.makedirs(root)
  text_path, bin_path = root + "/t.json", root + "/b.bin"
  storage.write_bytes(text_path, '{"name": "h\u00e9llo"}\nline2\nline3\n'.encode("utf-8"))
  with storage.open(text_path) as handle:
    assert handle.read() == '{"name": "h\u00e9llo"}\nline2\nline3\n'
  with storage.open(text_path, "r") as handle:
    assert [line for line in handle] == ['{"name": "h\u00e9llo"}\n', "line2\n", "line3\n"]
  payload = bytes(range(256)) * 1000
  storage.write_bytes(bin_path, payload)
  with storage.open(bin_path, "rb") as handle:
    assert handle.read(10) == payload[:10]
    assert handle.read() == payload[10:]
  assert storage.read_bytes(bin_path) == payload
  assert storage.read_text(text_path).startswith('{"name"')
  storage.write_bytes(text_path, b"replaced")
  assert storage.read_text(text_path) == "replaced"
  assert storage.size(bin_path) == len(payload)
  with pytest.raises(FileNotFoundError, match="nope"):
    storage.open(root + "/nope.txt")
  with pytest.raises(FileNotFoundError, match="nope"):
    storage.read_bytes(root + "/nope.txt")
  with pytest.raises(ValueError, match="not supported"):
    storage.open(text_path, "w")


def test_write_bytes_is_atomic_locally(tmp_path):
  path = str(tmp_path / "f.bin")
  storage.write_bytes(path, b"one")
  storage.write_bytes(path, b"two")
  assert storage.read_bytes(path) == b"two"
  assert os.listdir(str(tmp_path)) == ["f.bin"]  # no temporary file left behind
  with pytest.raises(TypeError):
    storage.write_bytes(path, "text")


def test_failed_gcs_write_creates_nothing(gcs_bucket):
  path = gcs_bucket + "/ckpt/model_flags.json"
  with pytest.raises(RuntimeError):
    with storage.local_output(path) as tmp:
      with open(tmp, "wb") as handle:
        handle.write(b"partial")
      raise RuntimeError("boom")
  assert not storage.exists(path)
  storage.write_bytes(path, b"old")
  with pytest.raises(RuntimeError):  # an existing object is not replaced either
    with storage.local_output(path) as tmp:
      raise RuntimeError("boom")
  assert storage.read_bytes(path) == b"old"


def test_copy_across_local_and_gcs(gcs_bucket, tmp_path):
  local_a, local_b = str(tmp_path / "a.bin"), str(tmp_path / "sub" / "b.bin")
  storage.write_bytes(local_a, b"payload")
  gs_a, gs_b = gcs_bucket + "/x/a.bin", gcs_bucket + "/y/b.bin"
  storage.copy(local_a, gs_a)  # local -> gs
  assert storage.read_bytes(gs_a) == b"payload"
  storage.copy(gs_a, gs_b)  # gs -> gs
  assert storage.read_bytes(gs_b) == b"payload"
  os.makedirs(os.path.dirname(local_b))
  storage.copy(gs_b, local_b)  # gs -> local
  assert storage.read_bytes(local_b) == b"payload"
  storage.copy(local_b, local_b + ".2")  # local -> local
  assert storage.read_bytes(local_b + ".2") == b"payload"
  with pytest.raises(FileNotFoundError, match="missing"):
    storage.copy(gcs_bucket + "/missing", local_b)
  with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket-yt8m' does not"):
    storage.copy(gs_a, "gs://no-such-bucket-yt8m/a.bin")
  with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket-yt8m' does not"):
    storage.copy(local_a, "gs://no-such-bucket-yt8m/a.bin")
  umask = os.umask(0o022)
  os.umask(umask)
  assert oct(os.stat(local_b).st_mode & 0o777) == oct(0o666 & ~umask)  # as open() creates


def test_remove_size(root):
  make_tree(root)
  assert storage.size(root + "/data/train-0002.tfrecord") == 12
  storage.remove(root + "/data/train-x.txt")
  assert not storage.exists(root + "/data/train-x.txt")
  with pytest.raises(FileNotFoundError):
    storage.remove(root + "/data/train-x.txt")
  with pytest.raises(FileNotFoundError):
    storage.size(root + "/data/train-x.txt")
  assert storage.exists(root + "/data/train-0001.tfrecord")


def test_missing_bucket_and_missing_object_messages(gcs_bucket):
  missing = "gs://no-such-bucket-yt8m/dir/f.tfrecord"
  for call in (storage.read_bytes, storage.size, storage.exists, storage.isdir,
               storage.listdir, storage.open, storage.stage_file, storage.remove,
               lambda p: storage.glob(p + "*"), lambda p: storage.write_bytes(p, b"x"),
               lambda p: list(staging.ShardStager([p]))):
    with pytest.raises(storage.StorageError) as info:
      call(missing)
    assert "bucket 'no-such-bucket-yt8m' does not exist (gs://no-such-bucket-yt8m/dir/" in str(
        info.value)
  missing_object = gcs_bucket + "/dir/none.tfrecord"
  for call in (storage.read_bytes, storage.size, storage.open, storage.stage_file,
               storage.remove):
    with pytest.raises(FileNotFoundError) as info:
      call(missing_object)
    assert missing_object in str(info.value)
  assert not isinstance(FileNotFoundError(), storage.StorageError)


@pytest.mark.slow
def test_no_credentials_gives_clear_error(tmp_path):
  """Without STORAGE_EMULATOR_HOST and without credentials (and with the GCE metadata check
  disabled, so nothing leaves the machine) a gs:// call explains how to log in."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS",
                      "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG")}
  env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
             NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9",
             GCE_METADATA_IP="127.0.0.1:9")
  code = ("import importlib; s = importlib.import_module('youtube-8m.storage')\n"
          "try:\n  s.exists('gs://some-bucket/x')\n"
          "except s.StorageError as e:\n  print('ERR', e)\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
  assert "ERR no Google Cloud credentials" in result.stdout, result.stdout + result.stderr
  assert "gcloud auth application-default login" in result.stdout
  assert "gs://some-bucket/x" in result.stdout
  assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stdout


# ---------------------------------------------------------------------------------------
# Retries through the fault-injecting proxy.


def test_library_retries_recover_from_transient_faults(proxy, caplog, tmp_path):
  """Downloads, uploads, listings and metadata calls recover from 5xx/429 answers and from
  dropped or reset connections; each retry is logged with the gs:// path."""
  fault_proxy, bucket = proxy
  path = bucket + "/a/shard.bin"
  payload = os.urandom(1 << 20)
  with caplog.at_level(logging.WARNING):
    fault_proxy.fail("503", 1, when="uploadType").fail("reset", 1, when="uploadType")
    storage.write_bytes(path, payload)  # one multipart request
    fault_proxy.fail("drop", 1, when="uploadType")
    storage.write_bytes(bucket + "/a/y.txt", b"2")
    for kind in ("503", "429", "reset"):
      fault_proxy.fail(kind, 1, when="alt=media")
    assert storage.read_bytes(path) == payload
    fault_proxy.fail("truncate", 1, when="alt=media")  # resumed with a Range request
    storage.copy(path, str(tmp_path / "shard.bin"))
    assert storage.read_bytes(str(tmp_path / "shard.bin")) == payload
    fault_proxy.fail("502", 1, when="GET /storage/v1/b/%s/o?" % bucket[5:])
    fault_proxy.fail("reset", 1, when="GET /storage/v1/b/%s/o?" % bucket[5:])
    assert storage.glob(bucket + "/a/*") == [path, bucket + "/a/y.txt"]
    fault_proxy.fail("504", 1, when="/o/a%2Fshard.bin")
    assert storage.size(path) == len(payload)
  assert fault_proxy.pending == 0
  assert storage.read_text(bucket + "/a/y.txt") == "2"
  warnings = retry_warnings(caplog)
  assert len(warnings) == 10, warnings
  assert all(bucket + "/a/" in w for w in warnings)


def test_retries_exhausted_and_permanent_errors(proxy, monkeypatch):
  fault_proxy, bucket = proxy
  path = bucket + "/f.bin"
  storage.write_bytes(path, b"x")
  monkeypatch.setitem(storage.RETRY_OPTIONS, "timeout", 0.3)
  fault_proxy.fail("503", 1000, when="alt=media")
  start = time.monotonic()
  with pytest.raises(storage.StorageError,
                     match=r"read gs://.*/f.bin failed: retries exhausted.*503"):
    storage.read_bytes(path)
  assert time.monotonic() - start < 3
  fault_proxy.clear()

  # A non-transient error is not retried.
  fault_proxy.fail("403", 5, when="alt=media")
  with pytest.raises(storage.StorageError, match="f.bin failed: Forbidden"):
    storage.read_bytes(path)
  assert len(fault_proxy.log) == 1
  fault_proxy.clear()

  # Nothing listening at all: connection refused, retried, then a clear error.
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:%d" % free_port())
  with pytest.raises(storage.StorageError, match="retries exhausted.*Connection"):
    storage.read_bytes(path)


# ---------------------------------------------------------------------------------------
# ShardStager and stage_file.


def make_shards(bucket, count, size=50000):
  paths, contents = [], []
  for i in range(count):
    data = bytes([i]) * size
    path = "%s/shards/train-%04d.tfrecord" % (bucket, i)
    storage.write_bytes(path, data)
    paths.append(path)
    contents.append(data)
  return paths, contents


def staged_files(stager):
  return sorted(n for n in os.listdir(stager.stage_dir) if ".tmp-" not in n)


def wait_for(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError("condition not reached within %.0f s" % timeout)
    time.sleep(0.01)


def test_shard_stager_order_passthrough_and_cleanup(gcs_bucket, tmp_path):
  paths, contents = make_shards(gcs_bucket, 4)
  local = str(tmp_path / "local.tfrecord")
  storage.write_bytes(local, b"local")
  order = [paths[0], paths[1], local, paths[2], paths[3]]
  expected = [contents[0], contents[1], b"local", contents[2], contents[3]]
  stager = staging.ShardStager(order, cache_dir=str(tmp_path / "cache"), prefetch=2)
  stage_dir = stager.stage_dir
  assert stage_dir.startswith(str(tmp_path / "cache"))
  seen, previous = [], None
  for got in stager:
    if got == local:
      assert expected[len(seen)] == b"local"
    else:
      assert os.path.dirname(got) == stage_dir
      assert os.path.basename(got).endswith(os.path.basename(order[len(seen)]))
    if previous is not None and previous != local:
      assert not os.path.exists(previous)  # deleted once the consumer moved on
    seen.append(storage.read_bytes(got))
    previous = got
  assert seen == expected
  assert not os.path.exists(stage_dir)
  assert os.path.exists(local)  # local inputs are never touched
  assert stager.stats["downloaded_files"] == 4
  assert list(stager) == []  # exhausted
  assert list(staging.ShardStager([local, local])) == [local, local]


def test_shard_stager_prefetch_bound(gcs_bucket):
  paths, contents = make_shards(gcs_bucket, 6)
  with staging.ShardStager(paths, prefetch=2) as stager:
    wait_for(lambda: stager.stats["downloaded_files"] == 2)
    time.sleep(0.3)  # would be enough to fetch more if the bound were not enforced
    assert stager.stats["downloaded_files"] == 2 and len(staged_files(stager)) == 2
    for i in range(6):
      got = next(stager)
      assert storage.read_bytes(got) == contents[i]
      want = min(6, i + 3)
      wait_for(lambda want=want: stager.stats["downloaded_files"] == want)
      time.sleep(0.05)
      assert stager.stats["downloaded_files"] == want
      assert len(staged_files(stager)) == want - i  # the current file + up to 2 ahead
    assert stager.stats["peak_files_ahead"] == 2
    with pytest.raises(StopIteration):
      next(stager)

  with staging.ShardStager(paths[:3], prefetch=0) as stager:  # strictly on demand
    time.sleep(0.3)
    assert stager.stats["downloaded_files"] == 0
    assert storage.read_bytes(next(stager)) == contents[0]
    time.sleep(0.2)
    assert stager.stats["downloaded_files"] == 1


def test_shard_stager_byte_budget(gcs_bucket):
  paths, contents = make_shards(gcs_bucket, 5, size=100000)
  with staging.ShardStager(paths, prefetch=10, max_cache_bytes=250000) as stager:
    wait_for(lambda: stager.stats["downloaded_files"] == 2)
    time.sleep(0.3)
    assert stager.stats["downloaded_files"] == 2  # a third would exceed 250 kB
    assert [storage.read_bytes(p) for p in stager] == contents
    assert stager.stats["peak_bytes"] <= 250000
  with staging.ShardStager(paths[:2], max_cache_bytes=10) as stager:  # file > budget
    assert [storage.read_bytes(p) for p in stager] == contents[:2]


def test_shard_stager_propagates_errors_with_the_path(gcs_bucket, proxy):
  paths, contents = make_shards(gcs_bucket, 2)
  missing = gcs_bucket + "/shards/train-missing.tfrecord"
  stager = staging.ShardStager([paths[0], missing, paths[1]])
  stage_dir = stager.stage_dir
  assert storage.read_bytes(next(stager)) == contents[0]
  with pytest.raises(FileNotFoundError, match="train-missing.tfrecord"):
    next(stager)
  assert not os.path.exists(stage_dir)
  with pytest.raises(StopIteration):
    next(stager)

  fault_proxy, bucket = proxy  # downloads failing for good: StorageError naming the path
  storage.RETRY_OPTIONS["timeout"] = 0.3  # restored by fast_retries
  paths, _ = make_shards(bucket, 2)
  fault_proxy.fail("503", 100, when="train-0001")
  with staging.ShardStager(paths) as stager:
    next(stager)
    with pytest.raises(storage.StorageError, match="train-0001.tfrecord.*retries exhausted"):
      next(stager)


def test_shard_stager_close_is_thread_safe(proxy):
  fault_proxy, bucket = proxy
  paths, contents = make_shards(bucket, 4)
  stager = staging.ShardStager(paths, prefetch=1)
  assert storage.read_bytes(next(stager)) == contents[0]
  wait_for(lambda: stager.stats["downloaded_files"] == 2)
  # The next download is slow (1.5 s at the proxy): a consumer blocks in next() ...
  fault_proxy.fail("delay", 5, when="alt=media")
  stage_dir = stager.stage_dir
  assert storage.read_bytes(next(stager)) == contents[1]
  outcome = []

  def consume():
    try:
      outcome.append(next(stager))
    except StopIteration:
      outcome.append("stopped")

  consumer = threading.Thread(target=consume)
  consumer.start()
  time.sleep(0.2)
  closers = [threading.Thread(target=stager.close) for _ in range(3)]
  start = time.monotonic()
  for closer in closers:
    closer.start()
  stager.close()
  for thread in closers + [consumer]:
    thread.join(timeout=10)
    assert not thread.is_alive()
  assert time.monotonic() - start < 5
  assert outcome == ["stopped"]  # the blocked consumer is released, not left hanging
  assert not stager._state.worker.is_alive()  # pylint: disable=protected-access
  assert not os.path.exists(stage_dir)
  with pytest.raises(StopIteration):
    next(stager)


def test_stage_file_reuses_same_generation(gcs_bucket, tmp_path):
  path = gcs_bucket + "/model/inference_model.tgz"
  storage.write_bytes(path, b"v1")
  cache = str(tmp_path / "cache")
  local = storage.stage_file(path, cache_dir=cache)
  assert local.startswith(cache) and os.path.basename(local) == "inference_model.tgz"
  assert storage.read_bytes(local) == b"v1"
  stat = os.stat(local)
  assert storage.stage_file(path, cache_dir=cache) == local
  assert os.stat(local).st_mtime_ns == stat.st_mtime_ns and os.stat(local).st_ino == stat.st_ino
  storage.write_bytes(path, b"v2")  # new generation, same size
  assert storage.stage_file(path, cache_dir=cache) == local
  assert storage.read_bytes(local) == b"v2"
  plain = str(tmp_path / "plain.txt")
  storage.write_bytes(plain, b"p")
  assert storage.stage_file(plain) == plain


def test_tfrecord_round_trip_through_gcs(gcs_bucket, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = {}
  local_dir = tmp_path / "records"
  local_dir.mkdir()
  for shard in range(3):
    name = "train%04d.tfrecord" % shard
    records[name] = [("shard %d record %d " % (shard, i)).encode() * (i + 1)
                     for i in range(5)]
    with tf.io.TFRecordWriter(str(local_dir / name)) as writer:
      for record in records[name]:
        writer.write(record)
    storage.copy(str(local_dir / name), "%s/frame/%s" % (gcs_bucket, name))
  files = storage.glob(gcs_bucket + "/frame/train*.tfrecord")
  assert [os.path.basename(f) for f in files] == sorted(records)
  expected = [r for name in sorted(records) for r in records[name]]

  with staging.ShardStager(files) as stager:
    got = [r.numpy() for local in stager for r in tf.data.TFRecordDataset(local)]
  assert got == expected

  # The integration pattern: names from a generator, records via flat_map.
  stager = staging.ShardStager(files, prefetch=1)
  names = tf.data.Dataset.from_generator(lambda: stager, output_signature=tf.TensorSpec(
      [], tf.string))
  got = [r.numpy() for r in names.flat_map(tf.data.TFRecordDataset)]
  assert got == expected
  assert not os.path.exists(stager.stage_dir)


# ---------------------------------------------------------------------------------------
# SyncedDir.

CKPT_FILES = ("model.ckpt-10.data-00000-of-00001", "model.ckpt-10.index",
              "model.ckpt-10.meta", "checkpoint", "model_flags.json",
              "events.out.tfevents.1.host")


def generation(path):
  from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
  bucket, name = storage.split_gcs(path)
  return int(gcs.Client(project=None).bucket(bucket).get_blob(name).generation)


def test_synced_dir_push_order_push_new_and_pull(gcs_bucket):
  remote = gcs_bucket + "/train_dir"
  with staging.SyncedDir(remote) as synced:
    local = synced.local
    assert os.path.isdir(local) and not storage.is_gcs(local)
    for name in CKPT_FILES:
      storage.write_bytes(os.path.join(local, name), name.encode())
    pushed = synced.push(["checkpoint", "model.ckpt-10.*"])
    assert pushed == ["model.ckpt-10.data-00000-of-00001", "model.ckpt-10.meta",
                      "model.ckpt-10.index", "checkpoint"]
    generations = [generation(remote + "/" + name) for name in pushed]
    assert generations == sorted(generations)  # index after data, state file last
    with pytest.raises(FileNotFoundError):
      synced.push(["model.ckpt-99.index"])

    assert synced.push_new() == ["events.out.tfevents.1.host", "model_flags.json"]
    assert synced.push_new() == []
    assert synced.pull() == []  # everything remote was pushed from here: nothing to fetch
    # A new checkpoint, an appended events file, and temporary files (excluded).
    time.sleep(0.01)
    for name in ("model.ckpt-20.index", "model.ckpt-20.data-00000-of-00001",
                 ".tmp-1234-model.ckpt-30.index", "checkpoint.tmp5f3a", "model.ckpt-30_temp/x"):
      storage.makedirs(os.path.dirname(os.path.join(local, name)))
      storage.write_bytes(os.path.join(local, name), b"new " + name.encode())
    with open(os.path.join(local, "events.out.tfevents.1.host"), "ab") as handle:
      handle.write(b"more events")
    storage.write_bytes(os.path.join(local, "checkpoint"), b"model.ckpt-20")
    assert synced.push_new() == ["model.ckpt-20.data-00000-of-00001",
                                 "events.out.tfevents.1.host", "model.ckpt-20.index",
                                 "checkpoint"]
    assert storage.read_bytes(remote + "/events.out.tfevents.1.host").endswith(b"more events")
    assert not storage.glob(remote + "/*tmp*") and not storage.exists(remote + "/model.ckpt-30_temp")

    for name in CKPT_FILES[:3]:  # an old checkpoint deleted remotely
      storage.remove(remote + "/" + name)
  assert not os.path.exists(local)  # the temporary working dir is removed

  synced = staging.SyncedDir(remote)
  pulled_dir = synced.local
  assert synced.pull(["model.ckpt-*", "checkpoint", "model_flags.json"]) == [
      "checkpoint", "model.ckpt-20.data-00000-of-00001", "model.ckpt-20.index",
      "model_flags.json"]
  assert sorted(os.listdir(pulled_dir)) == ["checkpoint", "model.ckpt-20.data-00000-of-00001",
                                            "model.ckpt-20.index", "model_flags.json"]
  assert storage.read_bytes(os.path.join(pulled_dir, "checkpoint")) == b"model.ckpt-20"
  assert synced.push_new() == []  # pulled files are not uploaded back
  assert synced.pull() == ["events.out.tfevents.1.host"]  # the rest is up to date
  assert synced.pull() == []
  storage.write_bytes(remote + "/checkpoint", b"model.ckpt-30")  # changed remotely
  assert synced.pull(["checkpoint", "model.ckpt-*"]) == ["checkpoint"]
  assert storage.read_bytes(os.path.join(pulled_dir, "checkpoint")) == b"model.ckpt-30"
  synced.close()
  assert staging.SyncedDir(gcs_bucket + "/fresh_dir").pull() == []


def test_synced_dir_on_a_local_directory_is_a_no_op(tmp_path):
  directory = str(tmp_path / "train_dir")
  with staging.SyncedDir(directory) as synced:
    assert synced.local == directory and os.path.isdir(directory)
    storage.write_bytes(os.path.join(directory, "model.ckpt-1.index"), b"i")
    assert synced.pull(["*"]) == [] and synced.push(["*"]) == [] and synced.push_new() == []
  assert os.path.exists(os.path.join(directory, "model.ckpt-1.index"))


def _private_google_uses(source):
  """[(line, name)] of private (`_`-prefixed, not dunder) names of google.* packages that
  source uses: imported from them, or read as attributes of a module imported from them."""
  import ast  # pylint: disable=g-import-not-at-top
  private = lambda name: name.startswith("_") and not name.startswith("__")
  aliases, found = set(), []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("google"):
      for part in node.module.split("."):
        if private(part):
          found.append((node.lineno, node.module))
      for alias in node.names:
        if private(alias.name):
          found.append((node.lineno, alias.name))
        aliases.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("google"):
          aliases.add(alias.asname or alias.name.split(".")[0])
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.Attribute) and private(node.attr)
        and isinstance(node.value, ast.Name) and node.value.id in aliases):
      found.append((node.lineno, "%s.%s" % (node.value.id, node.attr)))
  return found


def test_no_private_google_cloud_storage_api():
  """The package uses google-cloud-storage / api_core only through their public names (a
  private one may change in any release within the declared range)."""
  assert _private_google_uses("from google.cloud.storage import retry as r\nr._should_retry\n"
                              "from google.cloud.storage._media import x\n") == [
                                  (3, "google.cloud.storage._media"), (2, "r._should_retry")]
  package = os.path.join(REPO_ROOT, "youtube-8m")
  for name in sorted(os.listdir(package)):
    if name.endswith(".py"):
      with open(os.path.join(package, name)) as handle:
        assert _private_google_uses(handle.read()) == [], name


def test_retry_options_checked(monkeypatch):
  monkeypatch.setattr(storage, "RETRY_OPTIONS", dict(deadline=5))
  with pytest.raises(ValueError, match=r"RETRY_OPTIONS: unknown option\(s\) deadline"):
    storage._retry("stat", "gs://b/x")  # pylint: disable=protected-access
