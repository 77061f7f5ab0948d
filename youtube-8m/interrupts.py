"""SIGTERM and SIGINT in every tool: the first signal stops the work cleanly at the next safe
point, a second one stops the process at once.

handling(tool) (utils.tool_main runs each tool's main in it) installs the handlers. A first
SIGTERM/SIGINT only records the signal; the tool goes on to its next safe point (check():
between batches, tensors, files, polls), where Interrupted unwinds the work, so that the
try/finally blocks remove the temporary files and nothing incomplete gets a final name.
handling() then removes what is still registered as temporary() and logs one line

    <tool>: interrupted by SIGTERM during <what>; kept: <outputs>; removed: <temporaries>; ...

and exits with 128 + the signal's number (143 SIGTERM, 130 SIGINT), or with 0 once the tool
called set_resumable() (train, eval's polling: the same command goes on from what was kept).
A second signal, or the first inside immediate(), removes the registered temporaries and
exits at once (os._exit) with one line. The signals are seen by a thread woken through
signal.set_wakeup_fd, so a main thread busy in a long TensorFlow call stops too.
"""

import contextlib
import glob
import os
import shutil
import signal
import sys
import threading

from absl import logging

SIGNALS = (signal.SIGINT, signal.SIGTERM)  # installed in this order: SIGTERM caught, both are
_SHOWN = 3  # kept outputs and removed temporaries named in the line


class Interrupted(BaseException):
  """Raised at a safe point after a SIGTERM/SIGINT. A BaseException, as KeyboardInterrupt:
  the tools' `except Exception` and error handlers let it through."""

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


def _exists(path, prefix):
  return bool(glob.glob(glob.escape(path) + "*")) if prefix else os.path.lexists(path)


def _remove(path, prefix):
  for found in glob.glob(glob.escape(path) + "*") if prefix else [path]:
    if os.path.isdir(found) and not os.path.islink(found):
      shutil.rmtree(found, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(found)


def temporary(path, prefix=False):
  """Registers a local temporary file or directory (prefix: every path starting with it) that
  an interruption removes if its owner has not; returns path. Registered paths that no
  longer exist are forgotten."""
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
  """An interruption of this tool exits 0: what it kept lets the same command go on (a
  preempted job restarted by Vertex AI is not a failed one)."""
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
  """In the with block, the first signal already stops the process at once (e.g. a
  parameter server, or a worker waiting for its chief: nothing to save)."""
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


def _remove_temporaries():
  """Removes the registered temporaries still there; returns those removed since the signal
  (by their owners or here)."""
  with _state.lock:
    left = list(_state.temporaries.items())
    _state.temporaries.clear()
    removed = dict.fromkeys(_state.at_signal)
  for path, prefix in left:
    if _exists(path, prefix):
      _remove(path, prefix)
      removed[path] = None
  return [path for path in removed if not os.path.lexists(path)]


def exit_code(signum):
  return 0 if _state.resumable else 128 + signum


def _stop_now(signum, code, second=False):
  removed = _remove_temporaries()
  logging.warning("%s: %s%s: stopping at once; kept: %s; removed: %s; exit status %d",
                  _state.tool, "second " if second else "", signal.Signals(signum).name,
                  _describe(_state.kept.values()), _describe(removed), code)
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
                          if _exists(path, prefix)]
      _state.wake.set()
    if first and not _state.immediate:
      return
  _stop_now(signum, exit_code(signum) if first else 128 + signum, second=not first)


def _watch(read_fd):
  """The wakeup fd's reader: each byte is a signal number."""
  while True:
    try:
      data = os.read(read_fd, 64)
    except OSError:
      return
    if not data:
      return
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


def _finish(during, signum):
  """The line of an interrupted run; returns its exit status."""
  removed = _remove_temporaries()
  code = exit_code(signum)
  logging.warning("%s: interrupted by %s during %s; kept: %s; removed: %s; exit status %d%s",
                  _state.tool, signal.Signals(signum).name, during,
                  _describe(_state.kept.values()), _describe(removed), code,
                  " (the same command goes on from there)" if _state.resumable else "")
  return code


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
        raise SystemExit(_finish(stop.during, stop.signum)) from None
      if _state.signum:
        logging.warning("%s: %s came as the work completed: nothing was interrupted; kept: "
                        "%s", tool, requested(), _describe(_state.kept.values()))
  finally:
    _state = _State()  # outside a tool's run (in-process use), nothing is interrupted
