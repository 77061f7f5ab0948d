"""One file-system layer for local paths and gs:// URLs, on google-cloud-storage.

TensorFlow ops only ever see local paths (staging.py, stage_file, local_output). A missing
bucket raises StorageError, a missing object FileNotFoundError naming the gs:// path.
Transient failures are retried by the library's DEFAULT_RETRY (logged at WARNING), then a
StorageError names the operation, the path and the last error. STORAGE_EMULATOR_HOST selects
an emulator; google.cloud.storage is imported at first use.
"""

import builtins
import contextlib
import errno
import functools
import glob as _pyglob
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading

from absl import logging

from . import interrupts

GCS_SCHEME = "gs://"
_READ_IN_MEMORY_BYTES = 64 << 20  # open(gs, 'rb') buffers up to this much in memory
# Failed writes: a full disk, a quota, no write permission, a read-only file system.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)

# Overrides of api_core Retry's initial, maximum, multiplier, timeout (1 s, 60 s, x2, 120 s).
RETRY_OPTIONS = {}

NO_CREDENTIALS_MESSAGE = (
    "no Google Cloud credentials: run `gcloud auth application-default login` or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or set "
    "STORAGE_EMULATOR_HOST=http://HOST:PORT to use a local emulator) to access %s")


class StorageError(OSError):
  """Missing bucket, retries exhausted, permission denied, no credentials, bad request."""


class Cancelled(Exception):
  """Raised inside download() once its `cancel` event is set."""


def _fspath(path):
  path = os.fspath(path)
  return path.decode("utf-8") if isinstance(path, bytes) else path


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def is_gcs(path):
  """True for a gs:// URL (a malformed one too: the functions then raise ValueError)."""
  return _fspath(path).startswith("gs:")


def abspath(path):
  """A local path made absolute; a gs:// URL as it is (without a trailing slash)."""
  return path.rstrip("/") if is_gcs(path) else os.path.abspath(path)


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
  """'gs://bucket/a/b' -> ('bucket', 'a/b'); 'gs://bucket' -> ('bucket', ''); else ValueError."""
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


# The library: clients, retries and error translation.

_thread_state = threading.local()


def _client(path):
  """This thread's Client for the current STORAGE_EMULATOR_HOST (read at client creation)."""
  host = os.environ.get("STORAGE_EMULATOR_HOST")
  clients = _thread_state.__dict__.setdefault("clients", {})
  if host not in clients:
    from google.cloud import storage as gcs  # pylint: disable=g-import-not-at-top
    clients[host] = _call("connecting to access", path, lambda retry: gcs.Client(project=None))
  return clients[host]


def _retry(what, path):
  """The library's DEFAULT_RETRY with RETRY_OPTIONS, logging each retry with the path (the
  library wraps every request as `retry(func)`; api_core's Retry takes on_error there)."""
  from google.cloud.storage.retry import DEFAULT_RETRY  # pylint: disable=g-import-not-at-top
  options = dict(RETRY_OPTIONS)
  unknown = set(options) - {"initial", "maximum", "multiplier", "timeout"}
  if unknown:
    raise ValueError("storage.RETRY_OPTIONS: unknown option(s) %s (known: initial, "
                     "maximum, multiplier, timeout)" % ", ".join(sorted(unknown)))
  retry = DEFAULT_RETRY
  if "timeout" in options:
    retry = retry.with_timeout(options.pop("timeout"))
  if options:
    retry = retry.with_delay(**options)

  def log(error):
    logging.warning("storage: %s %s failed (%s); retrying", what, path, _describe(error))

  return functools.partial(retry, on_error=log)


def _describe(error):  # one line, at most ~300 characters
  text = " ".join((str(error).strip() or type(error).__name__).split())
  return "%s: %s" % (type(error).__name__, text[:300] + "..." if len(text) > 300 else text)


def _call(what, path, fn):
  """fn(retry=_retry(what, path)), its 404 raised by _missing(path), other API and auth errors
  as StorageError."""
  try:
    return fn(retry=_retry(what, path))
  except Exception as error:  # pylint: disable=broad-except
    from google.api_core import exceptions as gapi  # pylint: disable=g-import-not-at-top
    from google.auth import exceptions as auth  # pylint: disable=g-import-not-at-top
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
  """Raises StorageError if path's bucket certainly does not exist, else FileNotFoundError."""
  from google.api_core import exceptions as gapi  # pylint: disable=g-import-not-at-top
  bucket = split_gcs(path)[0]

  def bucket_exists(retry):
    try:
      return _client(path).bucket(bucket).exists(retry=retry)
    except gapi.GoogleAPICallError:  # e.g. 403 without storage.buckets.get: it exists
      return True

  if not _call("checking bucket of", path, bucket_exists):
    raise StorageError("bucket '%s' does not exist (%s)" % (bucket, path))
  raise FileNotFoundError(errno.ENOENT, "No such object", path)


def _blob(path, generation=None):
  bucket, name = split_gcs(path)
  return _client(path).bucket(bucket).blob(name, generation=generation)


def stat(path):
  """(size, generation) of a gs:// object; missing -> FileNotFoundError / StorageError."""
  bucket, name = split_gcs(path)
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Is a directory (not an object)", path)
  blob = _call("stat", path, functools.partial(_client(path).bucket(bucket).get_blob, name))
  if blob is None:
    _missing(path)
  return int(blob.size or 0), blob.generation


def _list(path, prefix, **options):
  """([blob], [prefix]) under prefix in path's bucket (list_blobs options), retried."""

  def do_list(retry):
    pages = _client(path).list_blobs(split_gcs(path)[0], prefix=prefix or None, retry=retry,
                                     **options)
    return list(pages), sorted(pages.prefixes)

  return _call("listing", path, do_list)


# Transfers.


class _CancellableSink(object):
  """file_obj, whose write() raises Cancelled once the `cancel` event is set."""

  def __init__(self, file_obj, cancel):
    self._file, self._cancel = file_obj, cancel

  def write(self, data):
    if self._cancel.is_set():
      raise Cancelled()
    return self._file.write(data)

  def __getattr__(self, name):
    return getattr(self._file, name)


def _download(path, file_obj, generation=None, cancel=None, what="download"):
  sink = file_obj if cancel is None else _CancellableSink(file_obj, cancel)
  _call(what, path, functools.partial(_blob(path, generation).download_to_file, sink))


def download(path, local_path, generation=None, cancel=None):
  """Downloads a gs:// object (that generation, if given) to local_path, atomically; a set
  `cancel` event (threading.Event) stops it with Cancelled."""
  os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
  with local_output(local_path) as tmp, builtins.open(tmp, "wb", buffering=8 << 20) as handle:
    _download(path, handle, generation=generation, cancel=cancel)


def upload(local_path, path):
  """Uploads a local file as one gs:// object; returns the object's new generation."""
  blob = _blob(path)
  _call("upload", path, functools.partial(blob.upload_from_filename, local_path,
                                          content_type="application/octet-stream"))
  return blob.generation


def list_files(directory):
  """{name relative to directory ('/'-separated): generation} of every gs:// object below."""
  prefix = _dir_prefix(split_gcs(directory)[1])
  blobs, _ = _list(directory, prefix)
  return {b.name[len(prefix):]: b.generation for b in blobs
          if not b.name.endswith("/") and b.name[len(prefix):]}


# File-system functions.


def glob(pattern):
  """Sorted paths matching a shell pattern ('*' within one path component), 'directories'
  included; [] if none. gs:// patterns are matched by the service (match_glob)."""
  pattern, remote = _kind(pattern)
  if not remote:
    return sorted(_pyglob.glob(pattern, include_hidden=True))
  bucket, name_pattern = split_gcs(pattern)
  if not any(c in name_pattern for c in "*?["):
    return [pattern] if exists(pattern) else []
  prefix = re.split(r"[*?\[{]", name_pattern)[0]  # narrows the listing
  depth = name_pattern.count("/") + 1
  files, _ = _list(pattern, prefix, match_glob=name_pattern)
  # A matching 'directory' shows as objects below it, cut back to the pattern's depth.
  below, _ = _list(pattern, prefix, match_glob=name_pattern + "/**")
  names = {b.name for b in files} | {"/".join(b.name.split("/")[:depth]) for b in below}
  return sorted("%s%s/%s" % (GCS_SCHEME, bucket, name) for name in names)


def exists(path):
  """True for a file or directory (gs://: an object, or any object under path/)."""
  path, remote = _kind(path)
  if not remote:
    return os.path.exists(path)
  name = split_gcs(path)[1]
  if name and not name.endswith("/") and _call("stat", path, _blob(path).exists):
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
  names = {b.name[len(prefix):] for b in blobs} | {p[len(prefix):].rstrip("/") for p in prefixes}
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
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as error:
      if error.errno not in WRITE_ERRNOS:
        raise
      raise write_error(path, error, "create directory") from error


def remove(path):
  """Deletes one file / object."""
  path, remote = _kind(path)
  if not remote:
    os.remove(path)
    return
  name = split_gcs(path)[1]
  if not name or name.endswith("/"):
    raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
  _call("delete", path, _blob(path).delete)


def size(path):
  """Size in bytes of a file / object."""
  path, remote = _kind(path)
  return stat(path)[0] if remote else os.path.getsize(path)


def _copy_gcs_to_gcs(src, dst):
  """A server-side rewrite (in as many calls as the service asks for)."""
  from google.api_core import exceptions as gapi  # pylint: disable=g-import-not-at-top
  source, target = _blob(src), _blob(dst)

  def rewrite(retry):
    try:
      token, _, _ = target.rewrite(source, retry=retry)
      while token is not None:
        token, _, _ = target.rewrite(source, token=token, retry=retry)
    except gapi.NotFound:
      if _call("stat", src, source.exists):
        _missing(dst)  # the source exists: the target bucket does not
      raise

  _call("copy to %s from" % dst, src, rewrite)


def copy(src, dst):
  """Copies one file between local paths and gs:// URLs (dst a file name; local ones written
  atomically)."""
  src, src_remote = _kind(src)
  dst, dst_remote = _kind(dst)
  if src_remote and dst_remote:
    _copy_gcs_to_gcs(src, dst)
  elif src_remote:
    if os.path.isdir(dst):
      raise IsADirectoryError(errno.EISDIR, "Is a directory", dst)
    download(src, dst)
  elif dst_remote:
    if os.path.isdir(src):
      raise IsADirectoryError(errno.EISDIR, "Is a directory", src)
    upload(src, dst)
  else:
    with local_output(dst) as tmp:
      shutil.copyfile(src, tmp)


def publish(local_path, path):
  """Moves a complete local file to path: renamed when path is local, uploaded when gs://
  (the local file is then left for the caller to remove)."""
  path, remote = _kind(path)
  if remote:
    upload(local_path, path)
  else:
    os.replace(local_path, path)


def open(path, mode="r"):  # pylint: disable=redefined-builtin
  """A file opened for reading ('r': UTF-8 text, or 'rb'); a gs:// object is downloaded
  first (into memory when small, else into a temporary file)."""
  path, remote = _kind(path)
  if mode not in ("r", "rb"):
    raise ValueError("mode %r is not supported (use 'r' or 'rb'; write with write_bytes or "
                     "local_output)" % mode)
  if not remote:
    return builtins.open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
  length, generation = stat(path)
  buffer = io.BytesIO() if length <= _READ_IN_MEMORY_BYTES else tempfile.TemporaryFile()
  try:
    _download(path, buffer, generation=generation, what="read")
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
  """Writes a whole file atomically (local: temp file + rename; gs://: one upload)."""
  if isinstance(data, str):
    raise TypeError("write_bytes needs bytes, got str (encode it first)")
  with local_output(path) as tmp, builtins.open(tmp, "wb") as handle:
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())


def default_cache_dir():
  """$YT8M_STORAGE_CACHE, else <tmp>/yt8m-storage-cache."""
  return os.environ.get("YT8M_STORAGE_CACHE") or os.path.join(tempfile.gettempdir(),
                                                               "yt8m-storage-cache")


def stage_file(path, cache_dir=None):
  """A local copy of path: a local path itself; a gs:// object downloaded to cache_dir/<hash>/
  <basename> (default_cache_dir()) unless the cached copy has the same size and generation."""
  path, remote = _kind(path)
  if not remote:
    if not os.path.exists(path):
      raise FileNotFoundError(errno.ENOENT, "No such file", path)
    return path
  length, generation = stat(path)
  directory = os.path.join(cache_dir or default_cache_dir(),
                           hashlib.sha1(path.encode("utf-8")).hexdigest()[:16])
  local = os.path.join(directory, os.path.basename(path) or "object")
  meta_path = os.path.join(directory, ".meta.json")
  want = {"path": path, "generation": str(generation), "size": length}
  try:
    if json.loads(read_text(meta_path)) == want and os.path.getsize(local) == length:
      return local
  except (OSError, ValueError):
    pass
  download(path, local, generation=generation)  # that generation: `length` bytes
  write_bytes(meta_path, json.dumps(want).encode("utf-8"))
  return local


def temp_name(name):
  """'.<name>.tmp-<pid>-<random>': a hidden temporary name carrying this process's id, so
  that remove_orphans can tell a live write from a killed one."""
  return ".%s.tmp-%d-%s" % (name[:100], os.getpid(), os.urandom(4).hex())


def temp_dir(name, parent=None):
  """A new directory temp_name(name) in parent (default: the system's temporary directory),
  made after removing those of killed processes; the caller removes it."""
  parent = parent or tempfile.gettempdir()
  os.makedirs(parent, exist_ok=True)
  remove_orphans(parent, name)
  return interrupts.temporary(tempfile.mkdtemp(prefix=temp_name(name), dir=parent))


@contextlib.contextmanager
def temporary_dir(name, parent=None):
  """temp_dir(name, parent), removed when the with block ends."""
  directory = temp_dir(name, parent)
  try:
    yield directory
  finally:
    shutil.rmtree(directory, ignore_errors=True)


def _running(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # e.g. EPERM: another user's process
    pass
  return True


def remove_orphans(directory, name):
  """Removes the temp_name(name) files and directories in a local directory of processes no
  longer running (what a kill -9 mid-write leaves)."""
  stem = ".%s.tmp-" % name[:100]
  try:
    entries = [entry for entry in os.listdir(directory) if entry.startswith(stem)]
  except OSError:
    return
  for entry in entries:
    pid = entry[len(stem):].split("-", 1)[0]
    if pid.isdigit() and not _running(int(pid)):
      path = os.path.join(directory, entry)
      logging.info("Removing %s, left by an interrupted write", path)
      interrupts.remove_path(path)


def _skip_event_thread_traceback(args):
  """threading.excepthook: TF's EventLoggerThread logs its error (e.g. a full disk) and the
  summary writer raises it again in the main thread, so the thread's traceback is left out."""
  if args.thread is None or args.thread.name != "EventLoggerThread":
    threading.__excepthook__(args)


@contextlib.contextmanager
def event_file_errors():
  """A tf.compat.v1.summary.FileWriter's failures, which TF raises as RuntimeError naming the
  event file, raised as one OSError."""
  hook, threading.excepthook = threading.excepthook, _skip_event_thread_traceback
  try:
    yield
  except RuntimeError as error:
    if ".tfevents." not in str(error):
      raise
    raise OSError("cannot write the event file %s" % str(error).splitlines()[0]) from error
  finally:
    threading.excepthook = hook


class WriteError(OSError):
  """A path could not be written (or created): a full disk, a denied permission, ... ."""

  def __str__(self):
    return self.strerror


def write_error(path, error, what="write"):
  """A WriteError (errno of error, filename path) saying path could not be written."""
  return WriteError(error.errno, "cannot %s %s: %s" % (what, path, os.strerror(error.errno)),
                    path)


@contextlib.contextmanager
def local_output(path):
  """Yields a new local file (mode 0666 & ~umask, as open() makes) that becomes `path` (renamed
  into place, or uploaded) only if the block succeeds: a failure leaves nothing there. A
  missing local directory is created; a full disk or a denied permission raises an OSError
  naming path."""
  path, remote = _kind(path)
  directory = (temp_dir("yt8m-output") if remote
               else os.path.dirname(os.path.abspath(path)))
  if not remote:
    makedirs(directory)
    remove_orphans(directory, os.path.basename(path))
  tmp = os.path.join(directory, temp_name(os.path.basename(path)))
  try:
    try:
      os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
      interrupts.temporary(tmp)
      yield tmp
      if remote:
        upload(tmp, path)
      else:
        os.replace(tmp, path)
    except OSError as error:
      if error.errno not in WRITE_ERRNOS or error.filename not in (None, tmp):
        raise  # e.g. an input file that cannot be read
      raise write_error(path, error) from error
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    interrupts.release(tmp)
    if remote:
      shutil.rmtree(directory, ignore_errors=True)
