"""Local copies of gs:// data for TensorFlow, which reads and writes local files only:
ShardStager(paths) downloads shards ahead into a bounded cache, SyncedDir(remote_dir) mirrors
a local working directory to a gs:// one. Both pass local paths untouched."""

import contextlib
import errno
import fnmatch
import os
import shutil
import threading
import weakref

from absl import logging

from . import checkpoint_utils
from . import storage

DEFAULT_MAX_CACHE_BYTES = 2 << 30  # 2 GiB


class _ClosedByWith(object):
  """`with x:` calls x.close() at the end."""

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.close()


class _Staging(object):
  """A ShardStager's state, shared with its download thread (which references only this, so
  dropping the ShardStager lets its finalizer close it)."""

  def __init__(self, paths, max_cache_bytes, prefetch, keep_yielded):
    self.paths, self.remote = paths, [storage.is_gcs(path) for path in paths]
    self.max_cache_bytes, self.prefetch, self.keep_yielded = (int(max_cache_bytes),
                                                              int(prefetch), int(keep_yielded))
    self.cond = threading.Condition()
    self.close_lock = threading.Lock()
    self.cancel = threading.Event()
    self.closed = False
    self.requested = 0  # files the consumer asked for
    self.ready = {}  # index -> (local path, size), or ("error", exception)
    self.yielded = []  # [(local path, size)] handed out, still on disk
    self.bytes_on_disk = 0  # staged + downloading + handed out and kept
    self.stats = {"downloaded_files": 0, "peak_bytes": 0, "peak_files_ahead": 0}
    self.stage_dir = self.worker = None

  def may_fetch(self, index, length):
    """The consumer waits for it, or it is within `prefetch` files and the byte budget."""
    return index < self.requested or (index < self.requested + self.prefetch and
                                      self.bytes_on_disk + length <= self.max_cache_bytes)

  def work(self):
    try:
      for index, path in enumerate(self.paths):
        if self.remote[index] and not self.fetch(index, path):
          return
    finally:
      with self.cond:
        self.cond.notify_all()  # a consumer waiting on a dead thread must not hang

  def fetch(self, index, path):
    """Downloads paths[index] into ready[index]; False to stop (closed or failed)."""
    reserved = 0  # bytes counted in bytes_on_disk for this file
    try:
      length, generation = storage.stat(path)
      with self.cond:
        while not self.closed and not self.may_fetch(index, length):
          self.cond.wait()
        if self.closed:
          return False
        self.bytes_on_disk += length
        reserved = length
        self.stats["peak_bytes"] = max(self.stats["peak_bytes"], self.bytes_on_disk)
        self.stats["peak_files_ahead"] = max(self.stats["peak_files_ahead"],
                                             index + 1 - self.requested)
      local = os.path.join(self.stage_dir, "%05d-%s" % (index, os.path.basename(path)))
      storage.download(path, local, generation=generation, cancel=self.cancel)
      with self.cond:
        self.stats["downloaded_files"] += 1
        self.ready[index] = (local, length)
        self.cond.notify_all()
      return not self.closed
    except BaseException as error:  # pylint: disable=broad-except
      with self.cond:
        self.bytes_on_disk -= reserved
      if isinstance(error, storage.Cancelled):
        return False
      if not isinstance(error, (FileNotFoundError, storage.StorageError)) or (
          path not in str(error)):
        wrapped = storage.StorageError("staging %s failed: %s: %s" % (
            path, type(error).__name__, error))
        wrapped.__cause__ = error
        error = wrapped
      with self.cond:
        self.ready[index] = ("error", error)
        self.cond.notify_all()
      return False

  def next(self):
    with self.cond:
      if self.closed:
        raise StopIteration
      while len(self.yielded) >= self.keep_yielded:  # the oldest handed-out file goes
        local, length = self.yielded.pop(0)
        self.bytes_on_disk -= length
        with contextlib.suppress(OSError):
          os.remove(local)
      index = self.requested
      if index >= len(self.paths):
        item = ("end", StopIteration())
      else:
        self.requested += 1
        self.cond.notify_all()
        if not self.remote[index]:
          return self.paths[index]
        while index not in self.ready and not self.closed:
          if not self.worker.is_alive():
            self.ready[index] = ("error", storage.StorageError(
                "staging %s failed: the download thread stopped" % self.paths[index]))
            break
          self.cond.wait(timeout=1.0)
        if self.closed:
          raise StopIteration
        item = self.ready.pop(index)
        if item[0] != "error":
          self.yielded.append(item)
          return item[0]
    self.close()
    raise item[1]

  def close(self):
    with self.close_lock:
      with self.cond:
        if self.closed:
          return
        self.closed = True
        self.cancel.set()
        self.cond.notify_all()
      if self.worker is not None and self.worker is not threading.current_thread():
        self.worker.join(timeout=60)
        if self.worker.is_alive():
          logging.warning("staging: the ShardStager download thread did not stop in 60 s")
      if self.stage_dir:
        shutil.rmtree(self.stage_dir, ignore_errors=True)


class ShardStager(_ClosedByWith):
  """Iterates over `paths`, yielding LOCAL paths in the same order (local ones pass through).

  A background thread downloads gs:// objects into a private temporary directory (under
  cache_dir if given), at most `prefetch` files ahead of the consumer and `max_cache_bytes` on
  disk (a file the consumer waits for is always fetched). A staged file is deleted once
  `keep_yielded` newer ones were handed out (a deleted open file stays readable), or by
  close() (idempotent, also at garbage collection). A download error is raised at that file's
  turn and closes the stager. stage_dir is None if every path is local; stats counts
  downloaded_files, peak_bytes, peak_files_ahead.
  """

  def __init__(self, paths, cache_dir=None, max_cache_bytes=DEFAULT_MAX_CACHE_BYTES,
               prefetch=2, keep_yielded=1):
    if prefetch < 0:
      raise ValueError("prefetch must be >= 0, got %r" % (prefetch,))
    if keep_yielded < 1:
      raise ValueError("keep_yielded must be >= 1, got %r" % (keep_yielded,))
    self._state = _Staging([os.fspath(p) for p in paths], max_cache_bytes, prefetch,
                           keep_yielded)
    for path, remote in zip(self._state.paths, self._state.remote):
      if remote:
        storage.split_gcs(path)
    if any(self._state.remote):
      self._state.stage_dir = storage.temp_dir("yt8m-stage", cache_dir)
      self._state.worker = threading.Thread(target=self._state.work, name="ShardStager",
                                            daemon=True)
      self._state.worker.start()
    self._finalizer = weakref.finalize(self, self._state.close)

  stage_dir = property(lambda self: self._state.stage_dir)
  stats = property(lambda self: self._state.stats)

  def __iter__(self):
    return self

  def __next__(self):
    return self._state.next()

  def close(self):
    """Stops the download thread; deletes every staged file and the temporary directory."""
    self._state.close()


SYNC_EXCLUDE = (".*", "*.tmp*", "*_temp*", "*.part")
_SUFFIX_RANK = {"data": 0, "meta": 1, "index": 3}


def _upload_rank(name):
  """Checkpoint data files, .meta, other files, .index, then the `checkpoint` state file: a
  reader never sees an index (or a state file naming a checkpoint) before its data."""
  base = name.rsplit("/", 1)[-1]
  suffix = checkpoint_utils.SUFFIX_RE.search(base)
  if suffix:
    return (_SUFFIX_RANK[suffix.group(1).split("-")[0]], name)
  return (4 if base == "checkpoint" else 2, name)


def _match(name, pattern):
  """Shell-glob match of '/'-separated names whose wildcards never cross a '/'."""
  names, patterns = name.split("/"), pattern.split("/")
  return len(names) == len(patterns) and all(map(fnmatch.fnmatchcase, names, patterns))


class SyncedDir(_ClosedByWith):
  """A local working directory `.local` mirrored to a remote (gs://) directory.

  For a gs:// remote_dir, `.local` is a new temporary directory (removed by close()); pull()
  downloads remote files, push() and push_new() upload local ones. For a local remote_dir
  `.local` IS remote_dir and pull/push/push_new return []. Names are relative,
  '/'-separated; patterns are globs whose '*' stays within one path component.
  """

  def __init__(self, remote_dir):
    self.remote = self.local = os.fspath(remote_dir)
    self.is_remote = storage.is_gcs(self.remote)
    self._synced = {}  # name -> (mtime_ns, size, remote generation) as last pulled/pushed
    self.close = lambda: None
    if self.is_remote:
      storage.split_gcs(self.remote)
      self.local = os.path.abspath(storage.temp_dir("yt8m-sync"))
      self.close = weakref.finalize(self, shutil.rmtree, self.local, ignore_errors=True)
    os.makedirs(self.local, exist_ok=True)

  def remote_path(self, name):
    if self.is_remote:
      return self.remote.rstrip("/") + "/" + name
    return os.path.join(self.remote, name)

  def local_path(self, name):
    return os.path.join(self.local, *name.split("/"))

  def _local_state(self, name):
    """(mtime_ns, size) of a local file, None if it does not exist."""
    try:
      stat = os.stat(self.local_path(name))
    except OSError:
      return None
    return stat.st_mtime_ns, stat.st_size

  def _local_names(self):
    for root, dirs, files in os.walk(self.local):
      dirs.sort()
      for base in files:
        yield os.path.relpath(os.path.join(root, base), self.local).replace(os.sep, "/")

  def pull(self, patterns=None):
    """Downloads the remote files matching any pattern (all if None) into .local; returns
    their names. Files unchanged on both sides since this object last pulled or pushed them
    are skipped, so polling only fetches new files."""
    if not self.is_remote:
      return []
    pulled = []
    for name, generation in sorted(storage.list_files(self.remote).items()):
      if patterns is not None and not any(_match(name, p) for p in patterns):
        continue
      local = self._local_state(name)
      if local is not None and self._synced.get(name) == local + (str(generation),):
        continue  # unchanged on both sides
      storage.download(self.remote_path(name), self.local_path(name), generation=generation)
      self._synced[name] = self._local_state(name) + (str(generation),)
      pulled.append(name)
    return pulled

  def _upload(self, names):
    ordered = sorted(set(names), key=_upload_rank)
    for name in ordered:
      state = self._local_state(name)
      generation = storage.upload(self.local_path(name), self.remote_path(name))
      self._synced[name] = state + (str(generation),)  # as before the upload
    return ordered

  def push(self, names):
    """Uploads local files given by names or patterns (in _upload_rank order); returns their
    names. A literal name that does not exist raises FileNotFoundError."""
    if not self.is_remote:
      return []
    selected, local_names = [], None
    for pattern in names:
      if any(c in pattern for c in "*?["):
        local_names = local_names or list(self._local_names())
        selected.extend(name for name in local_names if _match(name, pattern))
      elif os.path.isfile(self.local_path(pattern)):
        selected.append(pattern)
      else:
        raise FileNotFoundError(errno.ENOENT, "No such file to push", self.local_path(pattern))
    return self._upload(selected)

  def push_new(self):
    """Uploads the local files created or changed (mtime or size) since the last pull/push,
    except SYNC_EXCLUDE's temporary files (matched per path component); returns their names."""
    if not self.is_remote:
      return []
    changed = [name for name in self._local_names()
               if not any(fnmatch.fnmatchcase(part, pattern) for part in name.split("/")
                          for pattern in SYNC_EXCLUDE)
               and self._local_state(name) not in (None, self._synced.get(name, ())[:2])]
    return self._upload(changed)
