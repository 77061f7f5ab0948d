"""One file-system layer for local paths and gs:// URLs, on google-cloud-storage.

TensorFlow's own gs:// file system talks only to Google's fixed endpoints, so this project
reaches Cloud Storage through `google-cloud-storage`, which honours STORAGE_EMULATOR_HOST
(with anonymous credentials, e.g. http://127.0.0.1:9023 for `gcp-storage-emulator`). TF ops
(TFRecordDataset, Saver, FileWriter) only ever see LOCAL paths; this module stages data:

  * reading shards: `ShardStager(paths)` yields local paths in order, downloading gs://
    objects ahead in a background thread into a bounded cache, and `stage_file(path)`
    downloads (or reuses) a single object;
  * writing a directory: `SyncedDir(remote_dir)` gives a local working dir `.local` and
    `pull` / `push` / `push_new` to move files between it and the remote directory.

Every function also accepts local paths (and `/gcs/<bucket>/...` Vertex AI FUSE paths, which
are plain local paths) and then behaves like os / tf.io.gfile. Importing this module loads
neither TensorFlow nor google.cloud.storage: both are imported on first use only.

Errors: a missing bucket raises StorageError("bucket 'x' does not exist (gs://x/...)"), a
missing object FileNotFoundError naming the gs:// path. Transient failures (HTTP 408/429/5xx,
dropped or refused connections, timeouts) are retried by the library's policy (the predicate of
google.cloud.storage.retry.DEFAULT_RETRY, exponential backoff, 120 s deadline; an interrupted
download resumes with a Range request), each retry logged at WARNING; once the deadline
passes a StorageError names the operation, the path and the last error.
"""

import builtins
import errno
import fnmatch
import glob as _pyglob
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import weakref

from absl import logging

GCS_SCHEME = "gs://"
DEFAULT_MAX_CACHE_BYTES = 2 << 30  # 2 GiB
_READ_IN_MEMORY_BYTES = 64 << 20  # open(gs, 'rb') buffers up to this much in memory

# Keyword arguments for google.api_core.retry.Retry (initial, maximum, multiplier, timeout)
# overriding its defaults, which are DEFAULT_RETRY's: 1 s, 60 s, x2, 120 s. Tests shorten them.
RETRY_OPTIONS = {}

NO_CREDENTIALS_MESSAGE = (
    "no Google Cloud credentials: run `gcloud auth application-default login` or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or set "
    "STORAGE_EMULATOR_HOST=http://HOST:PORT to use a local emulator) to access %s")


class StorageError(OSError):
  """A storage failure that is not "no such object": missing bucket, retries exhausted,
  permission denied, missing credentials, bad request."""


class _Cancelled(Exception):
  """Raised inside a download when its ShardStager is closed."""


# ---------------------------------------------------------------------------------------
# Paths.


def _fspath(path):
  path = os.fspath(path)
  return path.decode("utf-8") if isinstance(path, bytes) else path


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def is_gcs(path):
  """True for a gs:// URL (a malformed one too: the functions then raise ValueError)."""
  return _fspath(path).startswith("gs:")


def _kind(path):
  """(path as str, is_gcs); ValueError for URLs this module cannot serve (s3://, gs:/x)."""
  path = _fspath(path)
  match = _SCHEME_RE.match(path)
  if not match:
    return path, False
  scheme = match.group(1)
  if scheme.lower() == "gs":
    if not path.startswith(GCS_SCHEME):
      raise ValueError("malformed gs:// URL %r: it must start with 'gs://BUCKET/'" % path)
    return path, True
  if path[match.end():].startswith("//"):
    raise ValueError("unsupported URL scheme %r in %r: only local paths and gs:// URLs are "
                     "supported" % (scheme, path))
  return path, False  # e.g. "C:" or "a:b" file names


def split_gcs(path):
  """'gs://bucket/a/b' -> ('bucket', 'a/b'); 'gs://bucket' -> ('bucket', '').

  Raises ValueError for anything that is not a well-formed gs:// URL.
  """
  path = _fspath(path)
  if not path.startswith(GCS_SCHEME):
    raise ValueError("not a gs:// URL: %r (expected gs://BUCKET/OBJECT)" % path)
  bucket, _, name = path[len(GCS_SCHEME):].partition("/")
  if not bucket:
    raise ValueError("malformed gs:// URL %r: the bucket name is empty" % path)
  if not _BUCKET_RE.match(bucket) or ".." in bucket:
    raise ValueError("malformed gs:// URL %r: %r is not a valid bucket name (3-222 "
                     "characters among a-z 0-9 - _ ., starting and ending with a letter or "
                     "digit)" % (path, bucket))
  if any(c in bucket + name for c in "\r\n"):
    raise ValueError("malformed gs:// URL %r: it contains a line break" % path)
  return bucket, name


def _dir_prefix(name):
  """Blob-name prefix of the 'directory' name ('' for the bucket root)."""
  name = name.rstrip("/")
  return name + "/" if name else ""


def _has_magic(pattern):
  return any(c in pattern for c in "*?[")


def _match(name, pattern):
  """Shell-glob match of '/'-separated names whose wildcards never cross a '/'."""
  names, patterns = name.split("/"), pattern.split("/")
  return len(names) == len(patterns) and all(map(fnmatch.fnmatchcase, names, patterns))


# ---------------------------------------------------------------------------------------
# The library: clients, retries and error translation (imported lazily).

_thread_state = threading.local()


def _client(path):
  """This thread's Client for the current STORAGE_EMULATOR_HOST, which the library reads
  when a client is made (anonymous credentials with it, else Application Default
  Credentials); tests change it between calls."""
  host = os.environ.get("STORAGE_EMULATOR_HOST")
  clients = _thread_state.__dict__.setdefault("clients", {})
  if host not in clients:
    from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
    # project=None: using existing buckets needs no project (the library would insist on one).
    clients[host] = _call("connecting to access", path, lambda: gcs.Client(project=None))
  return clients[host]


def _retry(what, path):
  """The library's retry policy, logging each retry with the path."""
  from google.api_core.retry import Retry  # pylint: disable=g-import-not-at-top
  from google.cloud.storage import retry as gcs_retry  # pylint: disable=g-import-not-at-top

  def log(error):
    logging.warning("storage: %s %s failed (%s); retrying", what, path, _describe(error))

  # DEFAULT_RETRY is Retry(predicate=_should_retry); api_core has no public way to add an
  # on_error callback to an existing Retry.
  return Retry(predicate=gcs_retry._should_retry, on_error=log, **RETRY_OPTIONS)  # pylint: disable=protected-access


def _describe(error):
  text = " ".join((str(error).strip() or type(error).__name__).split())
  return "%s: %s" % (type(error).__name__, text[:300] + "..." if len(text) > 300 else text)


def _call(what, path, fn):
  """fn() with the library's errors translated: a 404 becomes FileNotFoundError (StorageError
  for a missing bucket), other API and credential errors a StorageError naming path."""
  try:
    return fn()
  except Exception as error:  # pylint: disable=broad-except
    from google.api_core import exceptions as gapi  # pylint: disable=g-import-not-at-top
    from google.auth import exceptions as auth  # pylint: disable=g-import-not-at-top
    from google.cloud.storage.exceptions import InvalidResponse  # pylint: disable=g-import-not-at-top
    if isinstance(error, InvalidResponse):  # Blob.open() writers raise the raw media error
      error = gapi.from_http_response(error.response)
    if isinstance(error, gapi.NotFound):
      _missing(path)
    if isinstance(error, gapi.RetryError):
      raise StorageError("%s %s failed: retries exhausted (%s); last error: %s" % (
          what, path, error.message, _describe(error.cause))) from error
    if isinstance(error, gapi.GoogleAPICallError):
      raise StorageError("%s %s failed: %s" % (what, path, _describe(error))) from error
    if isinstance(error, auth.DefaultCredentialsError):
      raise StorageError(NO_CREDENTIALS_MESSAGE % path + " (%s)" % error) from None
    if isinstance(error, auth.GoogleAuthError):
      raise StorageError("%s %s failed: %s (%s)" % (
          what, path, _describe(error), NO_CREDENTIALS_MESSAGE % path)) from error
    raise


def _missing(path):
  """Raises the error for a 404 on path: StorageError if the bucket certainly does not
  exist, else FileNotFoundError."""
  from google.api_core import exceptions as gapi  # pylint: disable=g-import-not-at-top
  bucket = split_gcs(path)[0]

  def bucket_exists():
    try:
      return _client(path).bucket(bucket).exists(retry=_retry("checking bucket of", path))
    except gapi.GoogleAPICallError:  # e.g. 403 without storage.buckets.get: it exists
      return True

  if not _call("checking bucket of", path, bucket_exists):
    raise StorageError("bucket '%s' does not exist (%s)" % (bucket, path))
  raise FileNotFoundError(errno.ENOENT, "No such object", path)


def _blob(path, generation=None):
  bucket, name = split_gcs(path)
  return _client(path).bucket(bucket).blob(name, generation=generation)


def _get_blob(path):
  """The blob with its metadata loaded; missing -> FileNotFoundError / StorageError."""
  bucket, name = split_gcs(path)
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Is a directory (not an object)", path)
  blob = _call("stat", path, lambda: _client(path).bucket(bucket).get_blob(
      name, retry=_retry("stat", path)))
  if blob is None:
    _missing(path)
  return blob


def _list(path, prefix, **options):
  """([blob], [prefix]) under prefix in path's bucket (list_blobs options: delimiter,
  match_glob, max_results); each page request is retried."""

  def do_list():
    pages = _client(path).list_blobs(split_gcs(path)[0], prefix=prefix or None,
                                     retry=_retry("listing", path), **options)
    return list(pages), sorted(pages.prefixes)

  return _call("listing", path, do_list)


# ---------------------------------------------------------------------------------------
# Transfers.


class _CancellableSink(object):
  """A write-only file wrapper that raises _Cancelled once `cancel` is set."""

  def __init__(self, file_obj, cancel):
    self._file = file_obj
    self._cancel = cancel

  def write(self, data):
    if self._cancel.is_set():
      raise _Cancelled()
    return self._file.write(data)

  def __getattr__(self, name):
    return getattr(self._file, name)


def _download(path, file_obj, generation=None, cancel=None, what="download"):
  blob = _blob(path, generation=generation)
  sink = file_obj if cancel is None else _CancellableSink(file_obj, cancel)
  _call(what, path, lambda: blob.download_to_file(sink, retry=_retry(what, path)))


def _silent_remove(path):
  try:
    os.remove(path)
  except OSError:
    pass


def _local_write(path, fill):
  """fill(tmp) writes a temporary file beside path, which then replaces path atomically.
  The file is created with mode 0666 & ~umask, like open() (mkstemp would give 0600)."""
  directory, base = os.path.split(os.path.abspath(path))
  tmp = os.path.join(directory, ".%s.tmp-%s" % (base[:100], os.urandom(4).hex()))
  os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
  try:
    fill(tmp)
    os.replace(tmp, path)
  except BaseException:
    _silent_remove(tmp)
    raise


def _download_to_path(path, local_path, generation=None, cancel=None):
  os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)

  def fill(tmp):
    with builtins.open(tmp, "wb", buffering=8 << 20) as handle:
      _download(path, handle, generation=generation, cancel=cancel)

  _local_write(local_path, fill)


def _upload(local_path, path):
  """Uploads a local file as one object; returns the blob (with the new generation)."""
  blob = _blob(path)
  _call("upload", path, lambda: blob.upload_from_filename(
      local_path, content_type="application/octet-stream", retry=_retry("upload", path)))
  return blob


def _writer(path, text):
  """The library's BlobWriter (what Blob.open("wb") returns: a resumable upload), creating
  the object only on a normal close: leaving a `with` block by an exception, or dropping the
  file unclosed, uploads nothing."""
  from google.cloud.storage.fileio import BlobWriter  # pylint: disable=g-import-not-at-top

  class Writer(BlobWriter):
    done = False

    def close(self):
      if not self.done:
        self.done = True
        _call("write", path, super().close)

    def terminate(self):
      self.done = True
      super().terminate()

    def __del__(self):  # replaces IOBase's finalizer, which would upload
      if not self.done:
        logging.warning("storage: write to %s was never closed; nothing uploaded", path)
        self.terminate()

  class TextWriter(io.TextIOWrapper):
    def __exit__(self, exc_type, *unused):  # TextIOWrapper's would close, i.e. upload
      self.buffer.terminate() if exc_type else self.close()  # pylint: disable=expression-not-assigned

    def __del__(self):  # replaces the closing finalizer; Writer's own discards the data
      pass

  writer = Writer(_blob(path), ignore_flush=True, retry=_retry("write", path),
                  content_type="application/octet-stream")
  return TextWriter(writer, encoding="utf-8") if text else writer


# ---------------------------------------------------------------------------------------
# File-system functions.


def glob(pattern):
  """Sorted paths matching a shell-style pattern ('*', '?', '[..]'; '*' stays within one
  path component), 'directories' included, like a shell; [] if none match. gs:// patterns
  are matched by the service (list_blobs(match_glob=...), Cloud Storage's glob syntax)."""
  pattern, remote = _kind(pattern)
  if not remote:
    return sorted(_pyglob.glob(pattern, include_hidden=True))
  bucket, name_pattern = split_gcs(pattern)
  if not _has_magic(name_pattern):
    return [pattern] if exists(pattern) else []
  prefix = re.split(r"[*?\[{]", name_pattern)[0]  # narrows the listing
  depth = name_pattern.count("/") + 1
  files, _ = _list(pattern, prefix, match_glob=name_pattern)
  # A matching 'directory' shows as objects below it, cut back to the pattern's depth.
  below, _ = _list(pattern, prefix, match_glob=name_pattern + "/**")
  names = {b.name for b in files} | {"/".join(b.name.split("/")[:depth]) for b in below}
  return sorted("%s%s/%s" % (GCS_SCHEME, bucket, name) for name in names)


def exists(path):
  """True if path is a file or a directory (gs://: an object, or any object under path/).
  A missing bucket raises StorageError."""
  path, remote = _kind(path)
  if not remote:
    return os.path.exists(path)
  name = split_gcs(path)[1]
  if name and not name.endswith("/"):
    blob = _blob(path)
    if _call("stat", path, lambda: blob.exists(retry=_retry("stat", path))):
      return True
  return isdir(path)


def isdir(path):
  """True for a directory (gs://: the bucket root, or any object under path/)."""
  path, remote = _kind(path)
  if not remote:
    return os.path.isdir(path)
  name = split_gcs(path)[1]
  blobs, _ = _list(path, _dir_prefix(name), max_results=1)
  return bool(blobs) or not name.strip("/")  # the bucket root exists if listing works


def listdir(path):
  """Sorted names (not paths) directly under a directory; subdirectories without a slash."""
  path, remote = _kind(path)
  if not remote:
    return sorted(os.listdir(path))
  name = split_gcs(path)[1]
  prefix = _dir_prefix(name)
  blobs, prefixes = _list(path, prefix, delimiter="/")
  names = set(blob.name[len(prefix):] for blob in blobs)
  names.update(p[len(prefix):].rstrip("/") for p in prefixes)
  names.discard("")
  if not names and not blobs and name.strip("/"):
    if exists(path):
      raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
    raise FileNotFoundError(errno.ENOENT, "No such directory", path)
  return sorted(names)


def makedirs(path):
  """os.makedirs(path, exist_ok=True); a no-op for gs:// (directories are implicit)."""
  path, remote = _kind(path)
  if remote:
    split_gcs(path)
  elif path:
    os.makedirs(path, exist_ok=True)


def remove(path):
  """Deletes one file / object."""
  path, remote = _kind(path)
  if not remote:
    os.remove(path)
    return
  name = split_gcs(path)[1]
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
  blob = _blob(path)
  _call("delete", path, lambda: blob.delete(retry=_retry("delete", path)))


def size(path):
  """Size in bytes of a file / object."""
  path, remote = _kind(path)
  return int(_get_blob(path).size) if remote else os.path.getsize(path)


def _copy_gcs_to_gcs(src, dst):
  """A server-side rewrite (in as many calls as the service asks for)."""
  from google.api_core import exceptions as gapi  # pylint: disable=g-import-not-at-top
  what = "copy to %s from" % dst
  source, target = _blob(src), _blob(dst)

  def rewrite():
    try:
      token, _, _ = target.rewrite(source, retry=_retry(what, src))
      while token is not None:
        token, _, _ = target.rewrite(source, token=token, retry=_retry(what, src))
    except gapi.NotFound:
      if _call("stat", src, lambda: source.exists(retry=_retry("stat", src))):
        _missing(dst)  # the source exists: the target bucket does not
      raise

  _call(what, src, rewrite)


def copy(src, dst, overwrite=True):
  """Copies one file between any combination of local paths and gs:// URLs.

  dst is the destination file (not a directory). With overwrite=False an existing dst
  raises FileExistsError. Local destinations are written atomically (temp + rename).
  """
  src, src_remote = _kind(src)
  dst, dst_remote = _kind(dst)
  if not overwrite and exists(dst):
    raise FileExistsError(errno.EEXIST, "Destination exists", dst)
  if src_remote and dst_remote:
    _copy_gcs_to_gcs(src, dst)
  elif src_remote:
    if os.path.isdir(dst):
      raise IsADirectoryError(errno.EISDIR, "Is a directory", dst)
    _download_to_path(src, dst)
  elif dst_remote:
    if os.path.isdir(src):
      raise IsADirectoryError(errno.EISDIR, "Is a directory", src)
    _upload(src, dst)
  else:
    _local_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def rename(src, dst, overwrite=False):
  """Renames a file within the local file system or within gs:// (copy + delete there).

  Between a local path and gs:// it refuses with ValueError: use copy() then remove().
  An existing dst raises FileExistsError unless overwrite=True.
  """
  src, src_remote = _kind(src)
  dst, dst_remote = _kind(dst)
  if src_remote != dst_remote:
    raise ValueError("rename(%r, %r): renaming between a local path and gs:// is not "
                     "supported (it would not be atomic); use copy() then remove()"
                     % (src, dst))
  if not overwrite and exists(dst):
    raise FileExistsError(errno.EEXIST, "Destination exists", dst)
  if not src_remote:
    try:
      os.replace(src, dst)
    except OSError as error:
      if error.errno != errno.EXDEV:
        raise
      shutil.move(src, dst)
    return
  name = split_gcs(src)[1]
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Renaming gs:// directories is not supported",
                            src)
  if src == dst:
    size(src)  # FileNotFoundError if missing
    return
  _copy_gcs_to_gcs(src, dst)
  blob = _blob(src)
  try:
    _call("delete (rename source)", src, lambda: blob.delete(retry=_retry("delete", src)))
  except FileNotFoundError:  # a retried delete whose first try succeeded
    pass


def open(path, mode="r"):  # pylint: disable=redefined-builtin
  """Opens a file: builtins.open for local paths; for gs:// modes 'r', 'rb' (the object is
  downloaded first) and 'w', 'wb' (uploaded on close; nothing on an exception inside a
  `with` block or without close(); see _writer). Text is UTF-8."""
  path, remote = _kind(path)
  if not remote:
    return builtins.open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
  if mode not in ("r", "rb", "w", "wb"):
    raise ValueError("mode %r is not supported for gs:// paths (use 'r', 'rb', 'w' or 'wb')"
                     % mode)
  split_gcs(path)
  if mode.startswith("w"):
    return _writer(path, text=(mode == "w"))
  blob = _get_blob(path)
  small = (blob.size or 0) <= _READ_IN_MEMORY_BYTES
  buffer = io.BytesIO() if small else tempfile.TemporaryFile()
  try:
    _download(path, buffer, generation=blob.generation, what="read")
  except BaseException:
    buffer.close()
    raise
  buffer.seek(0)
  return buffer if mode == "rb" else io.TextIOWrapper(buffer, encoding="utf-8")


def read_bytes(path):
  path, remote = _kind(path)
  if not remote:
    with builtins.open(path, "rb") as handle:
      return handle.read()
  buffer = io.BytesIO()
  _download(path, buffer, what="read")
  return buffer.getvalue()


def read_text(path):
  return read_bytes(path).decode("utf-8")


def write_bytes(path, data):
  """Writes a whole file atomically: local temp file + rename; one upload for gs://."""
  path, remote = _kind(path)
  if isinstance(data, str):
    raise TypeError("write_bytes needs bytes, got str (encode it first)")
  data = bytes(data)
  if remote:
    blob = _blob(path)
    _call("write", path, lambda: blob.upload_from_string(
        data, content_type="application/octet-stream", retry=_retry("write", path)))
    return

  def fill(tmp):
    with builtins.open(tmp, "wb") as handle:
      handle.write(data)
      handle.flush()
      os.fsync(handle.fileno())

  _local_write(path, fill)


# ---------------------------------------------------------------------------------------
# Staging for reading.


def default_cache_dir():
  """$YT8M_STORAGE_CACHE, else <tmp>/yt8m-storage-cache."""
  return os.environ.get("YT8M_STORAGE_CACHE") or os.path.join(tempfile.gettempdir(),
                                                               "yt8m-storage-cache")


def stage_file(path, cache_dir=None):
  """A local copy of path: local paths are returned as they are; a gs:// object is
  downloaded to cache_dir (default default_cache_dir()) unless the cached copy has the same
  size and generation. The file keeps its base name (cache_dir/<hash>/<basename>)."""
  path, remote = _kind(path)
  if not remote:
    if not os.path.exists(path):
      raise FileNotFoundError(errno.ENOENT, "No such file", path)
    return path
  blob = _get_blob(path)
  digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]
  directory = os.path.join(cache_dir or default_cache_dir(), digest)
  local = os.path.join(directory, os.path.basename(blob.name) or "object")
  meta_path = os.path.join(directory, ".meta.json")
  want = {"path": path, "generation": str(blob.generation), "size": int(blob.size)}
  try:
    with builtins.open(meta_path) as handle:
      have = json.load(handle)
    if have == want and os.path.getsize(local) == want["size"]:
      return local
  except (OSError, ValueError):
    pass
  _download_to_path(path, local, generation=blob.generation)
  if os.path.getsize(local) != want["size"]:
    raise StorageError("staging %s: got %d bytes, expected %d (object changed during the "
                       "download?)" % (path, os.path.getsize(local), want["size"]))
  write_bytes(meta_path, json.dumps(want).encode("utf-8"))
  return local


class _StagerState(object):
  """The shared state of a ShardStager and its download thread (the thread references only
  this, so dropping the ShardStager lets it be collected and its finalizer clean up)."""

  def __init__(self, paths, remote, cache_dir, max_cache_bytes, prefetch, keep_yielded):
    self.paths = paths
    self.remote = remote
    self.prefetch = prefetch
    self.max_cache_bytes = max_cache_bytes
    self.keep_yielded = keep_yielded
    self.cond = threading.Condition()
    self.close_lock = threading.Lock()
    self.cancel = threading.Event()
    self.closed = False
    self.requested = 0  # number of next() calls that asked for a file
    self.ready = {}  # index -> (local path, size) or ("error", exception)
    self.yielded = []  # [(local path, size)] staged files handed out, still on disk
    self.bytes_on_disk = 0  # staged + downloading + handed-out-and-kept
    self.stats = {"downloaded_files": 0, "downloaded_bytes": 0, "peak_bytes": 0,
                  "peak_files_ahead": 0}
    self.stage_dir = None
    self.worker = None
    if any(remote):
      if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
      self.stage_dir = tempfile.mkdtemp(prefix="yt8m-stage-", dir=cache_dir or None)
      self.worker = threading.Thread(target=self.work, name="ShardStager", daemon=True)
      self.worker.start()

  # Background thread.

  def work(self):
    try:
      self._work()
    finally:
      with self.cond:
        self.cond.notify_all()  # a consumer waiting on a dead thread must not hang

  def _work(self):
    for index, (path, remote) in enumerate(zip(self.paths, self.remote)):
      if not remote:  # handed out by next() itself
        continue
      try:
        blob = _get_blob(path)
        length = int(blob.size or 0)
        with self.cond:
          while not self.closed and not self.may_fetch(index, length):
            self.cond.wait()
          if self.closed:
            return
          self.bytes_on_disk += length
          self.stats["peak_bytes"] = max(self.stats["peak_bytes"], self.bytes_on_disk)
          self.stats["peak_files_ahead"] = max(self.stats["peak_files_ahead"],
                                               index + 1 - self.requested)
        local = os.path.join(self.stage_dir, "%05d-%s" % (index, os.path.basename(path)))
        try:
          _download_to_path(path, local, generation=blob.generation, cancel=self.cancel)
        except BaseException:
          with self.cond:
            self.bytes_on_disk -= length
          raise
        with self.cond:
          self.stats["downloaded_files"] += 1
          self.stats["downloaded_bytes"] += length
          if self.closed:
            _silent_remove(local)
            self.bytes_on_disk -= length
            return
          self.ready[index] = (local, length)
          self.cond.notify_all()
      except _Cancelled:
        return
      except BaseException as error:  # pylint: disable=broad-except
        if not isinstance(error, (FileNotFoundError, StorageError)) or path not in str(error):
          wrapped = StorageError("staging %s failed: %s" % (path, _describe(error)))
          wrapped.__cause__ = error
          error = wrapped
        with self.cond:
          self.ready[index] = ("error", error)
          self.cond.notify_all()
        return

  def may_fetch(self, index, length):
    if index < self.requested:  # the consumer is waiting for it
      return True
    if index >= self.requested + self.prefetch:
      return False
    return self.bytes_on_disk + length <= self.max_cache_bytes

  # Consumer side.

  def release_yielded(self, keep):
    while len(self.yielded) > keep:
      local, length = self.yielded.pop(0)
      _silent_remove(local)
      self.bytes_on_disk -= length
    self.cond.notify_all()

  def next(self):
    with self.cond:
      if self.closed:
        raise StopIteration
      self.release_yielded(self.keep_yielded - 1)
      index = self.requested
      finished = index >= len(self.paths)
      if not finished:
        self.requested += 1
        self.cond.notify_all()
        if not self.remote[index]:
          return self.paths[index]  # local paths pass through untouched
        while index not in self.ready and not self.closed:
          if not self.worker.is_alive() and index not in self.ready:
            self.ready[index] = ("error", StorageError(
                "staging %s failed: the download thread stopped" % self.paths[index]))
            break
          self.cond.wait(timeout=1.0)
        if self.closed:
          raise StopIteration
        item = self.ready.pop(index)
    if finished:
      self.close()
      raise StopIteration
    if item[0] == "error":
      self.close()
      raise item[1]
    with self.cond:
      self.yielded.append(item)  # (local path, size) of a staged file
    return item[0]

  def close(self):
    with self.close_lock:
      with self.cond:
        if self.closed:
          return
        self.closed = True
        self.cancel.set()
        self.cond.notify_all()
      worker = self.worker
      if worker is not None and worker is not threading.current_thread():
        worker.join(timeout=60)
        if worker.is_alive():
          logging.warning("storage: ShardStager download thread did not stop within 60 s")
      with self.cond:
        self.yielded = []
        self.ready = {}
        self.bytes_on_disk = 0
      if self.stage_dir:
        shutil.rmtree(self.stage_dir, ignore_errors=True)


class ShardStager(object):
  """Iterates over `paths`, yielding LOCAL paths in the same order.

  Local paths pass through untouched. gs:// objects are downloaded ahead by a background
  thread into a private temporary directory (under cache_dir if given): at most `prefetch`
  files that the consumer has not asked for yet, and at most `max_cache_bytes` on disk in
  all (a file the consumer is waiting for is always fetched, even if it alone exceeds the
  budget). A staged file is deleted as soon as the consumer asks for the next one (keeping
  the last `keep_yielded` yielded files; use the cycle length of an interleave), when the
  iteration ends, or on close(); close() also removes the temporary directory. close() is
  thread-safe and idempotent; it also runs when the stager is garbage-collected and at exit.

  A download error is raised to the consumer at that file's turn (FileNotFoundError or
  StorageError naming the gs:// path); the stager is then closed.

  With tf.data, feed the paths through a generator so each file is staged just in time:
      stager = ShardStager(files)
      names = tf.data.Dataset.from_generator(lambda: stager, tf.string, tf.TensorShape([]))
      records = names.flat_map(tf.data.TFRecordDataset)
  (On POSIX a staged file deleted while TF still has it open stays readable until closed.)

  Attributes: stage_dir (None if every path is local), stats (dict: downloaded_files,
  downloaded_bytes, peak_bytes, peak_files_ahead).
  """

  def __init__(self, paths, cache_dir=None, max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
               prefetch=2, keep_yielded=1):
    kinds = [_kind(p) for p in paths]
    if prefetch < 0:
      raise ValueError("prefetch must be >= 0, got %r" % (prefetch,))
    if keep_yielded < 1:
      raise ValueError("keep_yielded must be >= 1, got %r" % (keep_yielded,))
    for path, remote in kinds:
      if remote:
        split_gcs(path)
    self._state = _StagerState([p for p, _ in kinds], [r for _, r in kinds], cache_dir,
                               int(max_cache_bytes), int(prefetch), int(keep_yielded))
    self._finalizer = weakref.finalize(self, self._state.close)

  stage_dir = property(lambda self: self._state.stage_dir)
  stats = property(lambda self: self._state.stats)
  prefetch = property(lambda self: self._state.prefetch)
  max_cache_bytes = property(lambda self: self._state.max_cache_bytes)

  def __len__(self):
    return len(self._state.paths)

  def __iter__(self):
    return self

  def __next__(self):
    return self._state.next()

  next = __next__

  def close(self):
    """Stops the download thread, deletes every staged file and the temporary directory."""
    self._state.close()

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.close()


# ---------------------------------------------------------------------------------------
# Writing a directory.

_DATA_FILE_RE = re.compile(r"\.data-\d+-of-\d+$")
SYNC_EXCLUDE = (".*", "*.tmp*", "*_temp*", "*.part")


def _upload_rank(name):
  """Upload order: checkpoint data files, .meta, other files, .index, then the
  'checkpoint' state file, so a reader never sees an index (or a state file pointing at a
  checkpoint) before the data it refers to."""
  base = name.rsplit("/", 1)[-1]
  rank = (0 if _DATA_FILE_RE.search(base) else 1 if base.endswith(".meta") else
          3 if base.endswith(".index") else 4 if base == "checkpoint" else 2)
  return (rank, name)


class SyncedDir(object):
  """A local working directory mirrored to a remote (gs://) directory.

  For a gs:// remote_dir, `.local` is local_dir (created if needed) or a new temporary
  directory (removed by close()); pull() downloads remote files into it, push() and
  push_new() upload local files. For a local remote_dir (including /gcs/... FUSE paths)
  `.local` IS remote_dir and pull/push/push_new do nothing (they return []).

  Names are relative to the directory, with '/' separators; patterns are shell globs whose
  '*' does not cross '/'.
  """

  def __init__(self, remote_dir, local_dir=None, exclude=SYNC_EXCLUDE):
    remote_dir, remote = _kind(remote_dir)
    self.remote = remote_dir
    self.is_remote = remote
    self.exclude = tuple(exclude)
    self._owns_local = False
    self._state = {}  # name -> (mtime_ns, size) of the local file as last pulled/pushed
    self._generations = {}  # name -> remote generation as last pulled/pushed
    if remote:
      split_gcs(remote_dir)
      if local_dir is None:
        local_dir = tempfile.mkdtemp(prefix="yt8m-sync-")
        self._owns_local = True
      self.local = os.path.abspath(_fspath(local_dir))
      if self._owns_local:
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.local,
                                           ignore_errors=True)
    else:
      self.local = remote_dir
    os.makedirs(self.local, exist_ok=True)

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.close()

  def close(self):
    """Removes .local if it is a temporary directory this object created."""
    if self._owns_local:
      self._finalizer()
      self._owns_local = False

  def remote_path(self, name):
    return self.remote.rstrip("/") + "/" + name if self.is_remote else os.path.join(
        self.remote, name)

  def local_path(self, name):
    return os.path.join(self.local, *name.split("/"))

  def _remote_files(self):
    prefix = _dir_prefix(split_gcs(self.remote)[1])
    blobs, _ = _list(self.remote, prefix)
    return {blob.name[len(prefix):]: blob for blob in blobs
            if not blob.name.endswith("/") and blob.name[len(prefix):]}

  def _local_files(self):
    found = {}
    for root, dirs, files in os.walk(self.local):
      dirs.sort()
      for base in files:
        full = os.path.join(root, base)
        name = os.path.relpath(full, self.local).replace(os.sep, "/")
        found[name] = full
    return found

  def _excluded(self, name):
    return any(fnmatch.fnmatchcase(part, pattern)
               for part in name.split("/") for pattern in self.exclude)

  def _record(self, name, generation):
    stat = os.stat(self.local_path(name))
    self._state[name] = (stat.st_mtime_ns, stat.st_size)
    self._generations[name] = str(generation)

  def _up_to_date(self, name, blob):
    """True if the local copy is what we last pulled/pushed and the remote is unchanged."""
    try:
      stat = os.stat(self.local_path(name))
    except OSError:
      return False
    return (self._state.get(name) == (stat.st_mtime_ns, stat.st_size) and
            self._generations.get(name) == str(blob.generation))

  def pull(self, patterns=None):
    """Downloads the remote files matching any pattern (all files if None) into .local and
    returns the names downloaded. Files already pulled or pushed by this object and unchanged
    on both sides since are skipped, so polling with pull() only fetches new files. A remote
    directory with no files yields []."""
    if not self.is_remote:
      return []
    patterns = None if patterns is None else _as_list(patterns)
    pulled = []
    for name, blob in sorted(self._remote_files().items()):
      if patterns is not None and not any(_match(name, p) for p in patterns):
        continue
      if self._up_to_date(name, blob):
        continue
      _download_to_path(self.remote_path(name), self.local_path(name),
                        generation=blob.generation)
      self._record(name, blob.generation)
      pulled.append(name)
    return pulled

  def _push_names(self, names):
    ordered = sorted(set(names), key=_upload_rank)
    for name in ordered:
      full = self.local_path(name)
      stat = os.stat(full)
      blob = _upload(full, self.remote_path(name))
      self._state[name] = (stat.st_mtime_ns, stat.st_size)
      self._generations[name] = str(blob.generation)
    return ordered

  def push(self, names):
    """Uploads local files given by names or glob patterns relative to .local (data files
    before .index, the 'checkpoint' state file last); returns the names uploaded. A literal
    name that does not exist raises FileNotFoundError."""
    if not self.is_remote:
      return []
    local_files = None
    selected = []
    for pattern in _as_list(names):
      if not _has_magic(pattern):
        if not os.path.isfile(self.local_path(pattern)):
          raise FileNotFoundError(errno.ENOENT, "No such file to push",
                                  self.local_path(pattern))
        selected.append(pattern)
        continue
      if local_files is None:
        local_files = self._local_files()
      selected.extend(name for name in local_files if _match(name, pattern))
    return self._push_names(selected)

  def changed(self):
    """Names of local files created or changed (mtime or size) since the last pull/push,
    excluding temporary files (the `exclude` patterns, matched per path component)."""
    names = []
    for name, full in self._local_files().items():
      if self._excluded(name):
        continue
      try:
        stat = os.stat(full)
      except FileNotFoundError:  # removed meanwhile
        continue
      if self._state.get(name) != (stat.st_mtime_ns, stat.st_size):
        names.append(name)
    return sorted(names)

  def push_new(self, delete_removed=False):
    """Uploads the files created or changed since the last push (see changed()); returns
    their names. With delete_removed=True, also deletes remote files that this object
    pulled or pushed earlier and that no longer exist locally (e.g. old checkpoints removed
    by Saver(max_to_keep)), .index files first."""
    if not self.is_remote:
      return []
    pushed = self._push_names([n for n in self.changed() if os.path.exists(self.local_path(n))])
    if delete_removed:
      gone = [name for name in self._state if not os.path.exists(self.local_path(name))]
      for name in sorted(gone, key=_upload_rank, reverse=True):
        try:
          remove(self.remote_path(name))
        except FileNotFoundError:
          pass
        del self._state[name]
        self._generations.pop(name, None)
    return pushed


def _as_list(names):
  if isinstance(names, (str, bytes, os.PathLike)):
    return [_fspath(names)]
  return [_fspath(n) for n in names]
