"""Runs `python -m youtube-8m.<tool> ...` as forks of one process that imported TensorFlow.

Every tool pays TensorFlow's import (~4 CPU-seconds on an AVX2 host) before it does
anything; the test suite runs a few hundred tools, the main job about fifteen. This server
imports TensorFlow and the
package's flag-free modules once, then forks a child per request: the child takes the
request's stdout/stderr, working directory, environment and argv, and runs the tool's module
as `__main__` exactly as `python -m` does (own process, own pid, own flags, own exit status).

What a fork cannot honour falls back to a plain subprocess (the caller decides, see
`can_serve`): a different Python, a working directory other than the repo root, or settings
that TensorFlow, glibc or Python read once at start-up (TF_*, MALLOC_*, LD_*, PYTHON*, ...)
different from the server's.

Protocol (a Unix socket, one request per connection): the client sends a length-prefixed JSON
{"argv", "cwd", "env", "cpus"} with three file descriptors (stdin, stdout, stderr) and the
server forks the child (on those CPUs only, if "cpus" lists any); it answers
{"pid"} once the child runs, then {"status", "rusage"} (an exit code, or -signal as
subprocess gives; the child's peak RSS in KiB and user and system CPU seconds). Requests
run concurrently: the server forks each child at once and a thread of it waits for the exit.

    python scripts/cli_forkserver.py SOCKET_PATH    # serves until its parent exits
"""

import atexit
import json
import os
import random
import signal
import socket
import struct
import sys
import threading

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Read once when a process starts (by TensorFlow, glibc, Python or this package's
# runtime_settings): a request whose environment differs in any of these runs in a subprocess.
# (CUDA_* and NVIDIA_* are read when CUDA starts, after the fork; an empty search path is none.)
STARTUP_ENV_PREFIXES = ("TF_", "MALLOC_", "LD_", "PYTHON", "OMP_", "KMP_", "ONEDNN_", "DNNL_",
                        "OPENBLAS", "MKL_", "XLA_", "GRPC_", "GLIBC_")
EMPTY_IS_UNSET = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH")
# TF_* variables read when the tool runs (after the fork), not at start-up: TF_CONFIG, the
# distributed job's cluster, which youtube-8m/cluster.py reads when train.py builds its graph.
READ_AFTER_STARTUP = ("TF_CONFIG",)
# Flag-free modules every tool imports: their import is the start-up cost saved. A module that
# defines absl flags at import must not be here (a tool that never imports it would then accept
# its flags); the server checks this.
# The package first: its runtime settings must be in place before TensorFlow is imported.
PRELOAD = ("youtube-8m", "tensorflow", "numpy", "google.cloud.storage", "youtube-8m.storage",
           "youtube-8m.utils", "youtube-8m.staging", "youtube-8m.checkpoint_utils",
           "youtube-8m.eval_util", "youtube-8m.progress")


def startup_env(env):
  return {name: value for name, value in env.items()
          if name.startswith(STARTUP_ENV_PREFIXES) and name not in READ_AFTER_STARTUP
          and (value or name not in EMPTY_IS_UNSET)}


def _send(connection, message, fds=()):
  data = json.dumps(message).encode()
  header = struct.pack("!I", len(data))
  if fds:
    socket.send_fds(connection, [header + data], list(fds))
  else:
    connection.sendall(header + data)


def _receive(connection, max_fds=0):
  """(message, fds) of one length-prefixed JSON message (None at end of stream)."""
  buffer, fds = b"", []
  while len(buffer) < 4 or len(buffer) < 4 + struct.unpack("!I", buffer[:4])[0]:
    if max_fds:
      chunk, new_fds, _, _ = socket.recv_fds(connection, 1 << 16, max_fds)
      fds += new_fds
    else:
      chunk = connection.recv(1 << 16)
    if not chunk:
      return None, fds
    buffer += chunk
  return json.loads(buffer[4:].decode()), fds


def _run_tool(request, fds):
  """In the forked child: becomes `python -m MODULE ARGS` and never returns."""
  import runpy  # pylint: disable=g-import-not-at-top
  import traceback  # pylint: disable=g-import-not-at-top
  status = 1
  try:
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
      os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    if request.get("cpus"):  # before TensorFlow sizes its thread pools (at the first session)
      os.sched_setaffinity(0, request["cpus"])
    os.environ.clear()
    os.environ.update(request["env"])
    # What importing the package sets in a process started anew (the server imported it once,
    # with an environment whose start-up variables are the request's).
    settings = sys.modules["youtube-8m.runtime_settings"]
    os.environ.update(settings.defaults_for(settings.HostCpu(), os.environ))
    # A fresh process draws its own random state; a fork would share the server's.
    random.seed()
    import numpy  # pylint: disable=g-import-not-at-top
    numpy.random.seed()
    module = request["argv"][2]
    sys.argv = [module] + request["argv"][3:]
    try:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
      status = 0
    except SystemExit as exit_request:
      code = exit_request.code
      if code is None:
        status = 0
      elif isinstance(code, int):
        status = code
      else:
        sys.stderr.write("%s\n" % code)
        status = 1
    except BaseException:  # pylint: disable=broad-except (as the interpreter would report it)
      traceback.print_exc()
      status = 1
    atexit._run_exitfuncs()  # pylint: disable=protected-access
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
    os._exit(status)  # pylint: disable=protected-access


def _serve_one(listener, connection, open_connections):
  """Forks the request's child and hands its connection to a thread that reports the exit:
  the server accepts the next request at once (concurrent requests run concurrently)."""
  request, fds = _receive(connection, max_fds=3)
  if request is None or len(fds) != 3:
    for fd in fds:
      os.close(fd)
    connection.close()
    return
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    # The child keeps none of the server's sockets (other requests' connections included).
    for other in list(open_connections) + [connection, listener]:
      other.close()
    _run_tool(request, fds)
  for fd in fds:
    os.close(fd)
  open_connections.add(connection)
  try:
    _send(connection, {"pid": pid})
  except OSError:  # the client went away; the child is still reaped and reported to nobody
    pass
  threading.Thread(target=_report_exit, args=(connection, pid, open_connections),
                   daemon=True).start()


def _report_exit(connection, pid, open_connections):
  """In a thread of the server: waits for the child, sends {"status", "rusage"}."""
  _, wait_status, usage = os.wait4(pid, 0)
  try:
    _send(connection, {"status": os.waitstatus_to_exitcode(wait_status),
                       "rusage": [usage.ru_maxrss, usage.ru_utime, usage.ru_stime]})
  except OSError:  # the client went away (e.g. it timed out and killed the child)
    pass
  finally:
    open_connections.discard(connection)
    connection.close()


def _exit_with_parent(parent_pid):
  while True:
    threading.Event().wait(2)
    if os.getppid() != parent_pid:
      os._exit(0)  # pylint: disable=protected-access


def serve(socket_path):
  import importlib  # pylint: disable=g-import-not-at-top
  sys.path[0] = REPO_ROOT  # as `python -m` from the repo root
  for name in PRELOAD:
    importlib.import_module(name)
  from absl import flags  # pylint: disable=g-import-not-at-top
  defined = [module for module in flags.FLAGS.flags_by_module_dict()
             if "youtube-8m" in module]
  if defined:
    sys.exit("cli_forkserver: PRELOAD defines flags (%s): a tool would accept them" % defined)
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(socket_path)
  listener.listen(8)
  print("ready", flush=True)
  # The watcher is a thread of the server only: a fork copies just the forking thread.
  threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
  open_connections = set()  # connections of running children (closed in every new child)
  while True:
    connection, _ = listener.accept()
    try:
      _serve_one(listener, connection, open_connections)
    except OSError:  # the client went away before its child started
      open_connections.discard(connection)
      connection.close()


class Client(object):
  """Starts the server (lazily, once) and runs requests through it."""

  def __init__(self, socket_dir, env, server_log=None):
    self.socket_path = os.path.join(socket_dir, "cli_forkserver.sock")
    self.env = dict(env)
    self.server_log = server_log  # the server's own stderr (None: this process's)
    self.process = None
    self.failed = False
    self.attached = False  # the server is another process's (attach)
    self._start_lock = threading.Lock()  # spawn may be called from several threads

  @classmethod
  def attach(cls, socket_path, env):
    """A client of the running server another Client started (socket_path from its start(),
    env its environment)."""
    client = cls(os.path.dirname(socket_path), env)
    client.attached = True
    return client

  def _start(self):
    import subprocess  # pylint: disable=g-import-not-at-top
    stderr = open(self.server_log, "a") if self.server_log else None
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), self.socket_path], cwd=REPO_ROOT,
        env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        text=True)
    if stderr:
      stderr.close()
    if self.process.stdout.readline().strip() != "ready":
      self.process.kill()
      self.failed = True
    atexit.register(self.stop)

  def start(self):
    """Starts the server now (spawn starts it otherwise); returns the socket's path, which
    clients in other processes may use (python_shim)."""
    if self.process is None:
      self._start()
    return self.socket_path

  def stop(self):
    if self.process and self.process.poll() is None:
      self.process.kill()
      self.process.wait()
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)

  def can_serve(self, argv, cwd, env):
    return (not self.failed and len(argv) >= 3 and argv[0] == sys.executable
            and argv[1] == "-m" and argv[2].startswith("youtube-8m.") and cwd == REPO_ROOT
            and startup_env(env) == startup_env(self.env))

  def spawn(self, argv, cwd, env, stdout, stderr, cpus=None):
    """Starts argv (can_serve) with stdout/stderr on the given file descriptors (and, given
    cpus, on those CPUs only); returns its Child."""
    with self._start_lock:
      if self.process is None and not self.attached:
        self._start()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
      connection.connect(self.socket_path)
      with open(os.devnull) as stdin:
        _send(connection, {"argv": list(argv), "cwd": cwd, "env": dict(env),
                           "cpus": sorted(cpus or ())}, fds=(stdin.fileno(), stdout, stderr))
      started, _ = _receive(connection)
    except BaseException:
      connection.close()
      raise
    if started is None:
      connection.close()
      raise RuntimeError("cli_forkserver: the server died starting %s" % " ".join(argv[:4]))
    return Child(argv, started["pid"], connection)

  def run(self, argv, cwd, env, timeout):
    """Runs argv (can_serve) as subprocess.run(capture_output=True, text=True) would: the
    CompletedProcess, or subprocess.TimeoutExpired (the child killed) after timeout seconds."""
    import locale  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
      status = self.spawn(argv, cwd, env, stdout.fileno(), stderr.fileno()).wait(timeout)[0]
      outputs = []
      for stream in (stdout, stderr):  # text as subprocess decodes it (universal newlines)
        stream.seek(0)
        outputs.append(stream.read().decode(locale.getpreferredencoding(False), "replace")
                       .replace("\r\n", "\n"))
    return subprocess.CompletedProcess(argv, status, outputs[0], outputs[1])


PYTHON_SHIM = """#!%(python)s
# %(python)s, but `-m youtube-8m.<tool> ...` from the repo root is forked by the fork server
# at %(socket)s when it can (cli_forkserver.py); anything else runs in %(python)s itself.
import os
import sys

sys.path.insert(0, %(scripts)r)
import cli_forkserver

argv = [%(python)r] + sys.argv[1:]
env = dict(os.environ)
client = cli_forkserver.Client.attach(%(socket)r, %(env)r)
if client.can_serve(argv, os.getcwd(), env):
  status = client.spawn(argv, os.getcwd(), env, 1, 2).wait()[0]
  sys.exit(status if status >= 0 else 128 - status)  # killed by signal N: 128 + N, as a shell
os.execv(%(python)r, argv)
"""


def python_shim(client, path):
  """Writes an executable at path that a script can run as its Python (e.g. PYTHON=path):
  `path -m youtube-8m.<tool> ...` is forked by client's server (started now), with the exit
  status of the tool; other command lines run in this Python unchanged."""
  socket_path = client.start()
  with open(path, "w") as handle:
    handle.write(PYTHON_SHIM % {"python": sys.executable, "socket": socket_path,
                                "scripts": os.path.dirname(os.path.abspath(__file__)),
                                "env": startup_env(client.env)})
  os.chmod(path, 0o755)
  return path


class Child(object):
  """A tool the server forked: its pid, and wait() for its end."""

  def __init__(self, argv, pid, connection):
    self.argv, self.pid, self._connection = argv, pid, connection

  def wait(self, timeout=None):
    """(exit status, rusage [peak RSS KiB, user s, system s]); after timeout seconds the
    child is killed and subprocess.TimeoutExpired raised."""
    import subprocess  # pylint: disable=g-import-not-at-top
    with self._connection:
      self._connection.settimeout(timeout)
      try:
        finished, _ = _receive(self._connection)
      except socket.timeout:
        os.kill(self.pid, signal.SIGKILL)
        raise subprocess.TimeoutExpired(self.argv, timeout)
    if finished is None:
      raise RuntimeError("cli_forkserver: the server died running %s"
                         % " ".join(self.argv[:4]))
    return finished["status"], finished["rusage"]


if __name__ == "__main__":
  serve(sys.argv[1])
