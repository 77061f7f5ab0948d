"""SIGTERM and SIGINT in every tool (handling(tool), run by utils.tool_main).

A first signal is recorded; the tool's next check() raises Interrupted, which unwinds the work
(its finally blocks remove temporary files); handling() then removes what is still registered
as temporary(), logs one line and exits 128 + the signal's number, or 0 after set_resumable().
A second signal, or the first inside immediate(), removes the temporaries and exits at once. A
thread woken through signal.set_wakeup_fd sees the signals, so a busy main thread stops too.
"""

import contextlib
import glob
import os
import shutil
import signal
import sys
import threading

from absl import logging

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SHOWN = 3  # kept outputs and removed temporaries named in the line


class Interrupted(BaseException):
  """Raised at a safe point after a signal; a BaseException so that `except Exception` lets it
  through."""

  def __init__(self, signum, during):
    super().__init__("interrupted by %s during %s" % (signal.Signals(signum).name, during))
    self.signum, self.during = signum, during


class _State(object):
  """What this process's handlers know (reset by each handling())."""

  def __init__(self, tool=None):
    self.tool, self.signum, self.resumable, self.immediate = tool, None, False, 0
    self.temporaries = {}  # path -> True for a prefix (every path starting with it)
    self.at_signal = []  # the temporaries that existed when the signal came
    self.kept = {}  # key -> description of an output written in full
    self.lock = threading.RLock()
    self.wake = threading.Event()


_state = _State()


def _found(path, prefix):
  """The existing paths of a registered temporary."""
  if prefix:
    return glob.glob(glob.escape(path) + "*")
  return [path] if os.path.lexists(path) else []


def remove_path(path):
  """Removes a file, link or directory tree, if it is there."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(OSError):
      os.remove(path)


def temporary(path, prefix=False):
  """Registers a local temporary file or directory (prefix: every path starting with it) that
  an interruption removes if its owner has not; returns path."""
  with _state.lock:
    for known, is_prefix in list(_state.temporaries.items()):
      if not is_prefix and not os.path.lexists(known):
        del _state.temporaries[known]
    _state.temporaries[path] = prefix
  return path


def release(path):
  """Forgets a temporary() (removed by its owner, or now a final output)."""
  with _state.lock:
    _state.temporaries.pop(path, None)


def kept(description, key=None):
  """Records an output written in full (the line's "kept:"); a later one with the same key
  replaces it (e.g. the newest checkpoint of a run)."""
  with _state.lock:
    _state.kept.pop(key or description, None)
    _state.kept[key or description] = description


def set_resumable():
  """An interruption of this tool exits 0: what it kept lets the same command go on."""
  _state.resumable = True


def requested():
  """The name of the signal that asked for a stop, or None."""
  return signal.Signals(_state.signum).name if _state.signum else None


def check(during):
  """A safe point: raises Interrupted (saying it came during `during`) after a signal."""
  if _state.signum:
    raise Interrupted(_state.signum, during)


def sleep(seconds):
  """time.sleep that a signal ends early."""
  _state.wake.wait(seconds)


@contextlib.contextmanager
def immediate():
  """In the with block, the first signal already stops the process at once (nothing to
  save)."""
  with _state.lock:
    _state.immediate += 1
    pending = _state.signum
  if pending:
    _stop_now(pending, exit_code(pending))
  try:
    yield
  finally:
    with _state.lock:
      _state.immediate -= 1


def _describe(items):
  items = list(items)
  if not items:
    return "nothing"
  shown = items[-_SHOWN:]
  more = len(items) - len(shown)
  return ", ".join(shown) + (" (and %d more)" % more if more else "")


def _outcome():
  """'kept: ...; removed: ...' after removing the registered temporaries still there; removed
  are those gone since the signal (by their owners or here)."""
  with _state.lock:
    left = list(_state.temporaries.items())
    _state.temporaries.clear()
    removed = dict.fromkeys(_state.at_signal)
  for path, prefix in left:
    for found in _found(path, prefix):
      remove_path(found)
      removed[path] = None
  removed = [path for path in removed if not os.path.lexists(path)]
  return "kept: %s; removed: %s" % (_describe(_state.kept.values()), _describe(removed))


def exit_code(signum):
  return 0 if _state.resumable else 128 + signum


def _stop_now(signum, code, second=False):
  logging.warning("%s: %s%s: stopping at once; %s; exit status %d", _state.tool,
                  "second " if second else "", signal.Signals(signum).name, _outcome(), code)
  for stream in (sys.stderr, sys.stdout):
    with contextlib.suppress(Exception):
      stream.flush()
  os._exit(code)  # pylint: disable=protected-access


def _on_signal(signum):
  with _state.lock:
    first = _state.signum is None
    if first:
      _state.signum = signum
      _state.at_signal = [path for path, prefix in _state.temporaries.items()
                          if _found(path, prefix)]
      _state.wake.set()
    if first and not _state.immediate:
      return
  _stop_now(signum, exit_code(signum) if first else 128 + signum, second=not first)


def _watch(read_fd):
  """The wakeup fd's reader: each byte is a signal number."""
  with contextlib.suppress(OSError):
    for data in iter(lambda: os.read(read_fd, 64), b""):
      for signum in data:
        if signum in SIGNALS:
          _on_signal(signum)


@contextlib.contextmanager
def _installed():
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)  # before the handlers
  previous = {signum: signal.signal(signum, lambda *unused: None) for signum in SIGNALS}
  signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
  watcher = threading.Thread(target=_watch, args=(read_fd,), name="interrupts", daemon=True)
  watcher.start()
  try:
    yield
  finally:
    signal.set_wakeup_fd(old_fd)
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    os.close(write_fd)  # the watcher reads the end of the pipe and returns
    watcher.join(timeout=5)
    os.close(read_fd)


@contextlib.contextmanager
def handling(tool):
  """Runs the with block (a tool's work) with the handlers installed; an interruption ends
  it with its one line and exit status (SystemExit). A signal that came as the work
  completed is reported in one line, and the status stays 0."""
  global _state
  _state = _State(tool)
  try:
    with _installed():
      try:
        yield
      except Interrupted as stop:
        code = exit_code(stop.signum)
        logging.warning("%s: interrupted by %s during %s; %s; exit status %d%s", tool,
                        signal.Signals(stop.signum).name, stop.during, _outcome(), code,
                        " (the same command goes on from there)" if _state.resumable else "")
        raise SystemExit(code) from None
      if _state.signum:
        logging.warning("%s: %s came as the work completed: nothing was interrupted; kept: "
                        "%s", tool, requested(), _describe(_state.kept.values()))
  finally:
    _state = _State()  # outside a tool's run (in-process use), nothing is interrupted
