"""One file-system layer for local paths and gs:// URLs, testable against a local emulator.

TensorFlow's own gs:// file system talks only to Google's fixed endpoints, so this project
reaches Cloud Storage through `google-cloud-storage`, which honours STORAGE_EMULATOR_HOST
(e.g. http://127.0.0.1:9023 for `gcp-storage-emulator`). TF ops (TFRecordDataset, Saver,
FileWriter) only ever see LOCAL paths; this module stages data between the two:

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
connection reset/refused, truncated transfers, timeouts) are retried with exponential backoff
and jitter (see `configure`), each retry logged at WARNING; when retries are exhausted a
StorageError names the operation, the path, the attempts and the last error.
"""

import builtins
import errno
import glob as _pyglob
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import weakref

logger = logging.getLogger("yt8m.storage")

GCS_SCHEME = "gs://"
DEFAULT_EMULATOR_PROJECT = "yt8m-local"
DEFAULT_MAX_CACHE_BYTES = 2 << 30  # 2 GiB
_READ_IN_MEMORY_BYTES = 64 << 20  # open(gs, 'rb') buffers up to this much in memory
_COPY_CHUNK = 8 << 20
_STAGE_SUFFIX = ".part"

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
# Configuration: retries and timeouts.


def _env_float(name, default):
  value = os.environ.get(name)
  if not value:
    return default
  try:
    return float(value)
  except ValueError:
    raise ValueError("environment variable %s=%r is not a number" % (name, value))


class _Config(object):
  """Retry/timeout settings; change them with configure()."""

  def __init__(self):
    self.retry_attempts = int(_env_float("YT8M_STORAGE_RETRY_ATTEMPTS", 6))
    self.retry_deadline = _env_float("YT8M_STORAGE_RETRY_DEADLINE", 120.0)
    self.initial_backoff = _env_float("YT8M_STORAGE_INITIAL_BACKOFF", 0.5)
    self.max_backoff = _env_float("YT8M_STORAGE_MAX_BACKOFF", 16.0)
    self.backoff_multiplier = 2.0
    # (connect, read) seconds for each HTTP request.
    self.timeout = (_env_float("YT8M_STORAGE_CONNECT_TIMEOUT", 15.0),
                    _env_float("YT8M_STORAGE_READ_TIMEOUT", 120.0))

  def as_dict(self):
    return dict(self.__dict__)


_config = _Config()


def configure(**settings):
  """Changes retry/timeout settings; returns the previous values (a dict for configure(**)).

  Keys: retry_attempts (total tries per operation, >= 1), retry_deadline (seconds from the
  first try after which no new try starts), initial_backoff, max_backoff (seconds),
  backoff_multiplier, timeout (seconds or a (connect, read) tuple per HTTP request).
  Defaults come from YT8M_STORAGE_RETRY_ATTEMPTS, YT8M_STORAGE_RETRY_DEADLINE,
  YT8M_STORAGE_INITIAL_BACKOFF, YT8M_STORAGE_MAX_BACKOFF, YT8M_STORAGE_CONNECT_TIMEOUT and
  YT8M_STORAGE_READ_TIMEOUT, else 6 tries / 120 s / 0.5 s / 16 s / (15 s, 120 s).
  """
  previous = _config.as_dict()
  for key, value in settings.items():
    if key not in previous:
      raise TypeError("unknown storage setting %r (known: %s)"
                      % (key, ", ".join(sorted(previous))))
    if key == "retry_attempts" and int(value) < 1:
      raise ValueError("retry_attempts must be >= 1, got %r" % (value,))
    setattr(_config, key, value)
  return previous


# ---------------------------------------------------------------------------------------
# Paths.


def _fspath(path):
  path = os.fspath(path)
  if isinstance(path, bytes):
    path = path.decode("utf-8")
  return path


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def is_gcs(path):
  """True for a gs:// URL (a malformed one too: the functions then raise ValueError)."""
  return _fspath(path).startswith("gs:")


def _check_scheme(path):
  """ValueError for URLs this module cannot serve (s3://, gs:/x); returns is_gcs."""
  match = _SCHEME_RE.match(path)
  if not match:
    return False
  scheme = match.group(1)
  if scheme.lower() == "gs":
    if not path.startswith(GCS_SCHEME):
      raise ValueError("malformed gs:// URL %r: it must start with 'gs://BUCKET/'" % path)
    return True
  if path[match.end():].startswith("//"):
    raise ValueError("unsupported URL scheme %r in %r: only local paths and gs:// URLs are "
                     "supported" % (scheme, path))
  return False  # e.g. "C:" or "a:b" file names


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


def _gcs_url(bucket, name):
  return "%s%s/%s" % (GCS_SCHEME, bucket, name)


def _kind(path):
  """(path as str, is_gcs) with the scheme validated."""
  path = _fspath(path)
  return path, _check_scheme(path)


def _dir_prefix(name):
  """Blob-name prefix of the 'directory' name ('' for the bucket root)."""
  name = name.rstrip("/")
  return name + "/" if name else ""


def _glob_regex(pattern):
  """A compiled regex for a shell-style glob: '*' and '?' never match '/', '[..]' classes
  (negated with '!' or '^') never match '/' when negated."""
  out = []
  i, n = 0, len(pattern)
  while i < n:
    c = pattern[i]
    if c == "*":
      while i < n and pattern[i] == "*":
        i += 1
      out.append("[^/]*")
      continue
    if c == "?":
      out.append("[^/]")
    elif c == "[":
      j = i + 1
      if j < n and pattern[j] in "!^":
        j += 1
      if j < n and pattern[j] == "]":
        j += 1
      while j < n and pattern[j] != "]":
        j += 1
      if j >= n:  # no closing bracket: a literal '['
        out.append(re.escape(c))
      else:
        body = pattern[i + 1:j]
        negate = body[:1] in ("!", "^")
        if negate:
          body = body[1:]
        body = "".join("\\" + ch if ch in "\\[]&~|^" else ch for ch in body)
        out.append("[^/%s]" % body if negate else "[%s]" % body)
        i = j
    else:
      out.append(re.escape(c))
    i += 1
  return re.compile("".join(out) + r"\Z", re.DOTALL)


def _has_magic(pattern):
  return any(c in pattern for c in "*?[")


def _literal_prefix(pattern):
  match = re.search(r"[*?\[]", pattern)
  return pattern if match is None else pattern[:match.start()]


# ---------------------------------------------------------------------------------------
# Client, retries and error translation (google libraries imported lazily).

_thread_state = threading.local()


def _gapi():
  from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
  return exceptions


def _client(path=None):
  """This thread's google.cloud.storage.Client for the current environment.

  With STORAGE_EMULATOR_HOST set: anonymous credentials and project GOOGLE_CLOUD_PROJECT or
  'yt8m-local'. Otherwise Application Default Credentials (StorageError if there are none).
  One client per thread and per (emulator host, project), so changing the environment (as
  tests do) takes effect on the next call.
  """
  host = os.environ.get("STORAGE_EMULATOR_HOST") or None
  project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
  key = (host, project)
  clients = getattr(_thread_state, "clients", None)
  if clients is None:
    clients = _thread_state.clients = {}
  client = clients.get(key)
  if client is not None:
    return client
  from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
  if host:
    from google.auth.credentials import AnonymousCredentials  # pylint: disable=g-import-not-at-top
    client = gcs.Client(project=project or DEFAULT_EMULATOR_PROJECT,
                        credentials=AnonymousCredentials())
  else:
    import google.auth  # pylint: disable=g-import-not-at-top
    from google.auth import exceptions as auth_exceptions  # pylint: disable=g-import-not-at-top
    try:
      credentials, default_project = google.auth.default(
          scopes=["https://www.googleapis.com/auth/devstorage.full_control"])
    except auth_exceptions.DefaultCredentialsError as error:
      raise StorageError(NO_CREDENTIALS_MESSAGE % (path or "gs:// paths") + " (%s)" % error
                         ) from None
    client = gcs.Client(project=project or default_project or None, credentials=credentials)
  # google-cloud-storage >= 3.10 fetches bucket metadata for tracing attributes in background
  # threads on first use of each bucket: extra requests we neither need nor want (they would
  # also race with the retry tests' fault injection). The client checks the attribute for
  # truthiness before every use.
  if getattr(client, "_bucket_metadata_cache", None) is not None:
    client._bucket_metadata_cache = None  # pylint: disable=protected-access
  clients[key] = client
  return client


def reset_clients():
  """Forgets this thread's cached clients (e.g. after changing credentials)."""
  _thread_state.clients = {}


_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


def _is_transient(error, depth=0):
  """True for errors worth retrying: throttling, server errors, dropped connections."""
  if depth > 4 or error is None:
    return False
  if isinstance(error, (_Cancelled, StorageError, FileNotFoundError)):
    return False
  if isinstance(error, (ConnectionError, TimeoutError)):  # reset / refused / aborted
    return True
  import http.client  # pylint: disable=g-import-not-at-top
  if isinstance(error, (http.client.IncompleteRead, http.client.BadStatusLine,
                        http.client.ResponseNotReady)):
    return True
  try:
    import requests  # pylint: disable=g-import-not-at-top
    import urllib3  # pylint: disable=g-import-not-at-top
    from google.auth import exceptions as auth_exceptions  # pylint: disable=g-import-not-at-top
    from google.cloud.storage import exceptions as gcs_exceptions  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError,
                        urllib3.exceptions.PoolError)):
    return True
  if isinstance(error, gcs_exceptions.DataCorruption):  # checksum mismatch: truncated body
    return True
  if isinstance(error, gcs_exceptions.InvalidResponse):
    return getattr(error.response, "status_code", None) in _TRANSIENT_STATUS
  if isinstance(error, _gapi().GoogleAPICallError):
    return error.code in _TRANSIENT_STATUS
  if isinstance(error, auth_exceptions.TransportError):
    return any(_is_transient(arg, depth + 1) for arg in error.args
               if isinstance(arg, BaseException)) or _is_transient(error.__cause__, depth + 1)
  return False


def _describe(error):
  text = str(error).strip() or type(error).__name__
  text = " ".join(text.split())
  if len(text) > 300:
    text = text[:300] + "..."
  return "%s: %s" % (type(error).__name__, text)


def _with_retries(what, path, fn):
  """fn() with retries of transient errors; StorageError once attempts/deadline run out."""
  attempts = max(1, int(_config.retry_attempts))
  start = time.monotonic()
  attempt = 0
  while True:
    attempt += 1
    try:
      return fn()
    except Exception as error:  # pylint: disable=broad-except
      if not _is_transient(error):
        raise
      elapsed = time.monotonic() - start
      backoff = min(float(_config.max_backoff),
                    float(_config.initial_backoff) *
                    float(_config.backoff_multiplier) ** (attempt - 1))
      delay = backoff * random.uniform(0.5, 1.0)  # jitter
      if attempt >= attempts or elapsed + delay > float(_config.retry_deadline):
        raise StorageError("%s %s failed after %d attempt%s in %.1f s (retries exhausted); "
                           "last error: %s" % (what, path, attempt,
                                               "" if attempt == 1 else "s", elapsed,
                                               _describe(error))) from error
      logger.warning("storage: %s %s failed (%s); retry %d/%d in %.2f s", what, path,
                     _describe(error), attempt, attempts - 1, delay)
      time.sleep(delay)


def _bucket_missing(bucket_name, path):
  """True only if the bucket certainly does not exist (a 403 on the bucket, e.g. without
  storage.buckets.get permission, counts as existing)."""
  client = _client(path)
  try:
    return not _with_retries("checking bucket of", path,
                             lambda: client.bucket(bucket_name).exists(
                                 retry=None, timeout=_config.timeout))
  except _gapi().GoogleAPICallError:
    return False


def _missing(path):
  """Raises the right error for a 404 on path: StorageError for a missing bucket,
  FileNotFoundError for a missing object."""
  bucket, _ = split_gcs(path)
  if _bucket_missing(bucket, path):
    raise StorageError("bucket '%s' does not exist (%s)" % (bucket, path))
  raise FileNotFoundError(errno.ENOENT, "No such object", path)


def _run(what, path, fn):
  """_with_retries plus translation: 404 -> _missing(path); other API errors ->
  StorageError naming the operation and the path."""
  gapi = _gapi()
  try:
    return _with_retries(what, path, fn)
  except gapi.NotFound:
    _missing(path)
  except gapi.GoogleAPICallError as error:
    raise StorageError("%s %s failed: %s" % (what, path, _describe(error))) from error
  except Exception as error:  # pylint: disable=broad-except
    from google.auth import exceptions as auth_exceptions  # pylint: disable=g-import-not-at-top
    if isinstance(error, auth_exceptions.GoogleAuthError):
      raise StorageError("%s %s failed: %s (%s)" % (
          what, path, _describe(error), NO_CREDENTIALS_MESSAGE % path)) from error
    raise


def _blob(path, generation=None):
  bucket, name = split_gcs(path)
  return _client(path).bucket(bucket).blob(name, generation=generation)


def _get_blob(path):
  """The blob with its metadata loaded; missing -> FileNotFoundError / StorageError."""
  bucket, name = split_gcs(path)
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Is a directory (not an object)", path)
  client = _client(path)
  blob = _run("stat", path, lambda: client.bucket(bucket).get_blob(
      name, retry=None, timeout=_config.timeout))
  if blob is None:
    _missing(path)
  return blob


def _list(bucket, prefix, delimiter=None, max_results=None, path=None):
  """([blob], [prefix]) under prefix, fully listed (so one retry covers the listing)."""
  path = path or _gcs_url(bucket, prefix or "")
  client = _client(path)

  def do_list():
    iterator = client.list_blobs(bucket, prefix=prefix or None, delimiter=delimiter,
                                 max_results=max_results, retry=None,
                                 timeout=_config.timeout)
    blobs = list(iterator)
    return blobs, sorted(getattr(iterator, "prefixes", ()) or ())

  return _run("listing", path, do_list)


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


def _download_to_fileobj(path, file_obj, generation=None, cancel=None, what="download"):
  """Downloads the object into file_obj (rewound and truncated before each try)."""
  blob = _blob(path, generation=generation)
  start = file_obj.tell()

  def attempt():
    file_obj.seek(start)
    file_obj.truncate()
    sink = _CancellableSink(file_obj, cancel) if cancel is not None else file_obj
    blob.download_to_file(sink, retry=None, timeout=_config.timeout)

  _run(what, path, attempt)


def _temp_path_beside(path):
  directory, base = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".%s.tmp-" % base[:100], dir=directory)
  os.close(fd)
  return tmp


_umask = None


def _current_umask():
  """The process umask, read without changing it where possible (os.umask() both reads and
  sets it, which races with other threads creating files)."""
  global _umask
  if _umask is None:
    try:
      with builtins.open("/proc/self/status") as handle:
        for line in handle:
          if line.startswith("Umask:"):
            _umask = int(line.split()[1], 8)
            break
    except (OSError, ValueError):
      pass
    if _umask is None:
      _umask = os.umask(0o022)
      os.umask(_umask)
  return _umask


def _fix_mode(path):
  """mkstemp creates 0600 files; give them the mode a plain open() would have."""
  os.chmod(path, 0o666 & ~_current_umask())


def _download_to_path(path, local_path, generation=None, cancel=None):
  """Downloads gs:// path to local_path atomically (temp file beside it, then rename)."""
  directory = os.path.dirname(os.path.abspath(local_path))
  os.makedirs(directory, exist_ok=True)
  tmp = _temp_path_beside(local_path)
  try:
    with builtins.open(tmp, "r+b", buffering=_COPY_CHUNK) as handle:
      _download_to_fileobj(path, handle, generation=generation, cancel=cancel)
    _fix_mode(tmp)
    os.replace(tmp, local_path)
  except BaseException:
    _silent_remove(tmp)
    raise


def _upload_fileobj(path, file_obj, size, what="upload"):
  """Uploads size bytes of file_obj (from its current position) as one object; nothing is
  created unless the whole upload succeeds."""
  blob = _blob(path)
  start = file_obj.tell()

  def attempt():
    file_obj.seek(start)
    blob.upload_from_file(file_obj, size=size, rewind=False, retry=None,
                          timeout=_config.timeout,
                          content_type="application/octet-stream")

  _run(what, path, attempt)
  return blob


def _upload_path(local_path, path):
  """Uploads a local file; returns the blob (with the new generation)."""
  with builtins.open(local_path, "rb") as handle:
    return _upload_fileobj(path, handle, os.fstat(handle.fileno()).st_size)


def _silent_remove(path):
  try:
    os.remove(path)
  except OSError:
    pass


# ---------------------------------------------------------------------------------------
# File-system functions.


def glob(pattern):
  """Sorted paths matching a shell-style pattern ('*', '?', '[..]'; '*' stays within one
  path component). gs:// patterns list the blobs under the literal prefix before the first
  wildcard and also match 'directories' (common prefixes), like a shell; [] if none match."""
  pattern, remote = _kind(pattern)
  if not remote:
    return sorted(_pyglob.glob(pattern, include_hidden=True))
  bucket, name_pattern = split_gcs(pattern)
  if not _has_magic(name_pattern):
    return [pattern] if exists(pattern) else []
  regex = _glob_regex(name_pattern)
  prefix = _literal_prefix(name_pattern)
  rest = name_pattern[len(prefix):]
  candidates = set()
  if "/" not in rest:
    # Matches lie at the prefix's level: one delimited listing returns them all.
    blobs, prefixes = _list(bucket, prefix, delimiter="/", path=pattern)
    candidates.update(blob.name for blob in blobs)
    candidates.update(p.rstrip("/") for p in prefixes)
  else:
    blobs, _ = _list(bucket, prefix, path=pattern)
    for blob in blobs:
      parts = blob.name.split("/")
      for i in range(1, len(parts) + 1):
        candidates.add("/".join(parts[:i]))
  return sorted(_gcs_url(bucket, name) for name in candidates
                if name and name.startswith(prefix) and regex.match(name))


def exists(path):
  """True if path is a file or a directory (gs://: an object, or any object under path/).
  A missing bucket raises StorageError."""
  path, remote = _kind(path)
  if not remote:
    return os.path.exists(path)
  bucket, name = split_gcs(path)
  if name and not name.endswith("/"):
    blob = _client(path).bucket(bucket).blob(name)
    if _run("stat", path, lambda: blob.exists(retry=None, timeout=_config.timeout)):
      return True
  return isdir(path)


def isdir(path):
  """True for a directory (gs://: the bucket root, or any object under path/)."""
  path, remote = _kind(path)
  if not remote:
    return os.path.isdir(path)
  bucket, name = split_gcs(path)
  blobs, _ = _list(bucket, _dir_prefix(name), max_results=1, path=path)
  return bool(blobs) or not name.strip("/")  # the bucket root exists if listing works


def listdir(path):
  """Sorted names (not paths) directly under a directory; subdirectories without a slash."""
  path, remote = _kind(path)
  if not remote:
    return sorted(os.listdir(path))
  bucket, name = split_gcs(path)
  prefix = _dir_prefix(name)
  blobs, prefixes = _list(bucket, prefix, delimiter="/", path=path)
  names = set(blob.name[len(prefix):] for blob in blobs)
  names.update(p[len(prefix):].rstrip("/") for p in prefixes)
  names.discard("")
  if not names and not blobs:
    if name.strip("/") and exists(path):
      raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
    if name.strip("/"):
      raise FileNotFoundError(errno.ENOENT, "No such directory", path)
  return sorted(names)


def makedirs(path):
  """os.makedirs(path, exist_ok=True); a no-op for gs:// (directories are implicit)."""
  path, remote = _kind(path)
  if remote:
    split_gcs(path)
    return
  if path:
    os.makedirs(path, exist_ok=True)


def remove(path):
  """Deletes one file / object."""
  path, remote = _kind(path)
  if not remote:
    os.remove(path)
    return
  bucket, name = split_gcs(path)
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Is a directory (use rmtree)", path)
  blob = _client(path).bucket(bucket).blob(name)
  _run("delete", path, lambda: blob.delete(retry=None, timeout=_config.timeout))


def rmtree(path):
  """Deletes a directory and everything under it (gs://: every object under path/)."""
  path, remote = _kind(path)
  if not remote:
    shutil.rmtree(path)
    return
  bucket, name = split_gcs(path)
  if not name.strip("/"):
    raise ValueError("refusing to delete a whole bucket: %s" % path)
  blobs, _ = _list(bucket, _dir_prefix(name), path=path)
  if not blobs:
    raise FileNotFoundError(errno.ENOENT, "No such directory", path)
  gapi = _gapi()
  for blob in blobs:
    url = _gcs_url(bucket, blob.name)

    def delete(blob=blob):
      try:
        blob.delete(retry=None, timeout=_config.timeout)
      except gapi.NotFound:  # deleted meanwhile (or by a retried request)
        pass

    _run("delete", url, delete)


def size(path):
  """Size in bytes of a file / object."""
  path, remote = _kind(path)
  if not remote:
    return os.path.getsize(path)
  return int(_get_blob(path).size)


def _copy_gcs_to_gcs(src, dst):
  src_bucket, src_name = split_gcs(src)
  dst_bucket, dst_name = split_gcs(dst)
  client = _client(src)
  source = client.bucket(src_bucket).blob(src_name)
  target = client.bucket(dst_bucket).blob(dst_name)

  def attempt():
    token, _, _ = target.rewrite(source, retry=None, timeout=_config.timeout)
    while token is not None:
      token, _, _ = target.rewrite(source, token=token, retry=None, timeout=_config.timeout)

  gapi = _gapi()
  try:
    _with_retries("copy to %s from" % dst, src, attempt)
  except gapi.NotFound:
    if _bucket_missing(dst_bucket, dst):
      raise StorageError("bucket '%s' does not exist (%s)" % (dst_bucket, dst))
    _missing(src)
  except gapi.GoogleAPICallError as error:
    raise StorageError("copy %s -> %s failed: %s" % (src, dst, _describe(error))) from error


def copy(src, dst, overwrite=True):
  """Copies one file between any combination of local paths and gs:// URLs.

  dst is the destination file (not a directory). With overwrite=False an existing dst
  raises FileExistsError. Local destinations are written atomically (temp + rename).
  """
  src, src_remote = _kind(src)
  dst, dst_remote = _kind(dst)
  if not overwrite and exists(dst):
    raise FileExistsError(errno.EEXIST, "Destination exists", dst)
  if not src_remote and not dst_remote:
    tmp = _temp_path_beside(dst)
    try:
      shutil.copyfile(src, tmp)
      _fix_mode(tmp)
      os.replace(tmp, dst)
    except BaseException:
      _silent_remove(tmp)
      raise
  elif not src_remote:
    if os.path.isdir(src):
      raise IsADirectoryError(errno.EISDIR, "Is a directory", src)
    _upload_path(src, dst)
  elif not dst_remote:
    if os.path.isdir(dst):
      raise IsADirectoryError(errno.EISDIR, "Is a directory", dst)
    _download_to_path(src, dst)
  else:
    _copy_gcs_to_gcs(src, dst)


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
  bucket, name = split_gcs(src)
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Renaming gs:// directories is not supported",
                            src)
  if src == dst:
    size(src)  # FileNotFoundError if missing
    return
  _copy_gcs_to_gcs(src, dst)
  blob = _client(src).bucket(bucket).blob(name)
  gapi = _gapi()

  def delete():
    try:
      blob.delete(retry=None, timeout=_config.timeout)
    except gapi.NotFound:  # a retried delete whose first try succeeded
      pass

  _run("delete (rename source)", src, delete)


class _GcsWriter(object):
  """open(gs, 'w'/'wb'): buffers locally, uploads once on close().

  Leaving a `with` block by an exception, calling abort(), or dropping the object without
  close() uploads nothing, so a failed write never creates (or replaces) the object.
  """

  def __init__(self, path, text):
    self.name = path
    self.mode = "w" if text else "wb"
    self._text = text
    self._buffer = tempfile.SpooledTemporaryFile(max_size=_READ_IN_MEMORY_BYTES)
    self._closed = False

  @property
  def closed(self):
    return self._closed

  def _check_open(self):
    if self._closed:
      raise ValueError("I/O operation on closed file %s" % self.name)

  def write(self, data):
    self._check_open()
    if self._text:
      if not isinstance(data, str):
        raise TypeError("write() argument must be str, not %s" % type(data).__name__)
      self._buffer.write(data.encode("utf-8"))
    else:
      if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
      self._buffer.write(data)
    return len(data)

  def writelines(self, lines):
    for line in lines:
      self.write(line)

  def flush(self):
    self._check_open()

  def tell(self):
    self._check_open()
    return self._buffer.tell()

  def readable(self):
    return False

  def writable(self):
    return True

  def seekable(self):
    return False

  def close(self):
    """Uploads the data written (the object appears only if the upload succeeds)."""
    if self._closed:
      return
    self._closed = True
    try:
      length = self._buffer.tell()
      self._buffer.seek(0)
      _upload_fileobj(self.name, self._buffer, length)
    finally:
      self._buffer.close()

  def abort(self):
    """Discards the data: nothing is uploaded."""
    if self._closed:
      return
    self._closed = True
    self._buffer.close()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc_value, traceback):
    if exc_type is not None:
      self.abort()
    else:
      self.close()

  def __del__(self):
    if not getattr(self, "_closed", True):
      logger.warning("storage: write to %s was never closed; nothing uploaded", self.name)
      self.abort()


def _read_gcs(path):
  """A binary file object (rewound) holding the object's bytes."""
  blob = _get_blob(path)
  if (blob.size or 0) <= _READ_IN_MEMORY_BYTES:
    buffer = io.BytesIO()
  else:
    buffer = tempfile.TemporaryFile()
  try:
    _download_to_fileobj(path, buffer, generation=blob.generation, what="read")
  except BaseException:
    buffer.close()
    raise
  buffer.seek(0)
  return buffer


def open(path, mode="r"):  # pylint: disable=redefined-builtin
  """Opens a file: builtins.open for local paths; for gs:// modes 'r', 'rb' (the object is
  downloaded first) and 'w', 'wb' (uploaded on close; see _GcsWriter). Text is UTF-8."""
  path, remote = _kind(path)
  if not remote:
    if "b" in mode:
      return builtins.open(path, mode)
    return builtins.open(path, mode, encoding="utf-8")
  if mode not in ("r", "rb", "w", "wb"):
    raise ValueError("mode %r is not supported for gs:// paths (use 'r', 'rb', 'w' or 'wb')"
                     % mode)
  split_gcs(path)
  if mode.startswith("w"):
    return _GcsWriter(path, text=(mode == "w"))
  buffer = _read_gcs(path)
  if mode == "rb":
    return buffer
  return io.TextIOWrapper(buffer, encoding="utf-8")


def read_bytes(path):
  path, remote = _kind(path)
  if not remote:
    with builtins.open(path, "rb") as handle:
      return handle.read()
  buffer = io.BytesIO()
  _download_to_fileobj(path, buffer, what="read")
  return buffer.getvalue()


def read_text(path):
  return read_bytes(path).decode("utf-8")


def write_bytes(path, data):
  """Writes a whole file atomically: local temp file + rename; one upload for gs://."""
  path, remote = _kind(path)
  if isinstance(data, str):
    raise TypeError("write_bytes needs bytes, got str (use write_text)")
  data = bytes(data)
  if remote:
    split_gcs(path)
    _upload_fileobj(path, io.BytesIO(data), len(data), what="write")
    return
  tmp = _temp_path_beside(path)
  try:
    with builtins.open(tmp, "wb") as handle:
      handle.write(data)
      handle.flush()
      os.fsync(handle.fileno())
    _fix_mode(tmp)
    os.replace(tmp, path)
  except BaseException:
    _silent_remove(tmp)
    raise


def write_text(path, text):
  write_bytes(path, text.encode("utf-8"))


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
    self.ready = {}  # index -> (local path, size, staged) or ("error", exception)
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
          self.ready[index] = (local, length, True)
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
    local, length, staged = item
    if staged:
      with self.cond:
        self.yielded.append((local, length))
    return local

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
          logger.warning("storage: ShardStager download thread did not stop within 60 s")
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

  @property
  def stage_dir(self):
    return self._state.stage_dir

  @property
  def stats(self):
    return self._state.stats

  @property
  def prefetch(self):
    return self._state.prefetch

  @property
  def max_cache_bytes(self):
    return self._state.max_cache_bytes

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
SYNC_EXCLUDE = (".*", "*.tmp*", "*_temp*", "*" + _STAGE_SUFFIX)


def _upload_rank(name):
  """Upload order: checkpoint data files, .meta, other files, .index, then the
  'checkpoint' state file, so a reader never sees an index (or a state file pointing at a
  checkpoint) before the data it refers to."""
  base = name.rsplit("/", 1)[-1]
  if _DATA_FILE_RE.search(base):
    rank = 0
  elif base.endswith(".meta"):
    rank = 1
  elif base.endswith(".index"):
    rank = 3
  elif base == "checkpoint":
    rank = 4
  else:
    rank = 2
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
    bucket, name = split_gcs(self.remote)
    prefix = _dir_prefix(name)
    blobs, _ = _list(bucket, prefix, path=self.remote)
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
    import fnmatch  # pylint: disable=g-import-not-at-top
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
    regexes = None if patterns is None else [_glob_regex(p) for p in _as_list(patterns)]
    pulled = []
    for name, blob in sorted(self._remote_files().items()):
      if regexes is not None and not any(r.match(name) for r in regexes):
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
      blob = _upload_path(full, self.remote_path(name))
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
      regex = _glob_regex(pattern)
      selected.extend(name for name in local_files if regex.match(name))
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
