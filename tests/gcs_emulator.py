"""A real Cloud Storage emulator (the `gcp-storage-emulator` package) for tests and tools.

Runs `python -m gcp_storage_emulator start --host=127.0.0.1 --port=PORT --in-memory -q` as a
subprocess on a free loopback port, waits until it answers its health check, and stops it
(terminate, then kill, with bounded waits). Only the standard library is used here, so the
helper does not depend on the code under test.

In pytest:
    from gcs_emulator import gcs_emulator, gcs_bucket  # fixtures

    def test_something(gcs_bucket):          # "gs://test-1a2b3c4d", STORAGE_EMULATOR_HOST set
      ...

`gcs_emulator` is session-scoped (one emulator process shared by every test file that uses
it, even when several modules import the fixture) and yields an `Emulator` (.host,
.create_bucket(name), .wipe()); `gcs_bucket` is per test: a fresh bucket and the environment
pointing google-cloud-storage at the emulator. `emulator_fixture(scope=...)` builds more
fixtures of the first kind.

Outside pytest:
    with Emulator() as emu:
      emu.create_bucket("data")
      os.environ["STORAGE_EMULATOR_HOST"] = emu.host
"""

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

EMULATOR_PROJECT = "yt8m-local"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port(host="127.0.0.1"):
  """A TCP port that was free a moment ago on host."""
  with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
    sock.bind((host, 0))
    return sock.getsockname()[1]


def emulator_command(port, host="127.0.0.1", python=None):
  return [python or sys.executable, "-m", "gcp_storage_emulator", "start",
          "--host=%s" % host, "--port=%d" % port, "--in-memory", "--quiet"]


class EmulatorError(RuntimeError):
  pass


class Emulator(object):
  """One emulator subprocess. start()/stop() or use as a context manager."""

  def __init__(self, host="127.0.0.1", port=None, python=None):
    self._bind_host = host
    self._port = port
    self._python = python
    self._process = None
    self._log = None
    self.host = None  # "http://127.0.0.1:PORT" once started

  @property
  def port(self):
    return self._port

  @property
  def running(self):
    return self._process is not None and self._process.poll() is None

  def start(self, timeout=START_TIMEOUT):
    if self.running:
      return self
    tries = 1 if self._port else 3  # a free port may be taken between probe and bind
    last_error = None
    for _ in range(tries):
      port = self._port or free_port(self._bind_host)
      try:
        self._spawn(port, timeout)
        return self
      except EmulatorError as error:
        last_error = error
        self.stop()
    raise last_error

  def _spawn(self, port, timeout):
    self._log = tempfile.TemporaryFile()
    env = dict(os.environ)
    env.pop("STORAGE_EMULATOR_HOST", None)
    self._process = subprocess.Popen(
        emulator_command(port, self._bind_host, self._python), stdin=subprocess.DEVNULL,
        stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
    self._port = port
    self.host = "http://%s:%d" % (self._bind_host, port)
    deadline = time.monotonic() + timeout
    while True:
      if self._process.poll() is not None:
        raise EmulatorError("the storage emulator exited with code %s before answering:\n%s"
                            % (self._process.returncode, self.log_text()))
      try:
        with urllib.request.urlopen(self.host + "/", timeout=2) as response:
          if response.status == 200:
            return
      except (urllib.error.URLError, OSError):
        pass
      if time.monotonic() > deadline:
        raise EmulatorError("the storage emulator did not answer on %s within %.0f s:\n%s"
                            % (self.host, timeout, self.log_text()))
      time.sleep(0.05)

  def log_text(self):
    if self._log is None or self._log.closed:
      return ""
    self._log.seek(0)
    return self._log.read().decode("utf-8", "replace")[-4000:]

  def stop(self, timeout=STOP_TIMEOUT):
    process, self._process = self._process, None
    if process is not None and process.poll() is None:
      process.terminate()
      try:
        process.wait(timeout=timeout)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
    if self._log is not None:
      self._log.close()
      self._log = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *unused):
    self.stop()

  # JSON API helpers (stdlib HTTP, so they do not depend on the code under test).

  def _request(self, method, path, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(self.host + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.read()

  def create_bucket(self, name=None):
    """Creates a bucket (a unique 'test-xxxxxxxx' if name is None); returns its name."""
    name = name or "test-" + uuid.uuid4().hex[:12]
    try:
      self._request("POST", "/storage/v1/b?project=%s" % EMULATOR_PROJECT, {"name": name})
    except urllib.error.HTTPError as error:
      if error.code != 409:  # already exists
        raise
    return name

  def delete_bucket(self, name):
    self._request("DELETE", "/storage/v1/b/%s" % name)

  def wipe(self, keep_buckets=False):
    self._request("GET", "/wipe" + ("?keep-buckets=true" if keep_buckets else ""))


def create_bucket(host, name=None):
  """Creates a bucket on the emulator at host ('http://127.0.0.1:PORT'); returns its name."""
  emulator = Emulator()
  emulator.host = host
  return emulator.create_bucket(name)


# ---------------------------------------------------------------------------------------
# A fault-injecting HTTP proxy in front of the emulator (for retry tests).

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "te", "trailer", "trailers", "transfer-encoding", "upgrade", "content-length"}
FAULT_KINDS = ("429", "500", "502", "503", "504", "drop", "reset", "truncate", "delay")


class FaultProxy(object):
  """An HTTP proxy on 127.0.0.1 that forwards to `upstream` (the emulator's URL) after
  injecting queued faults, one per request, in order:

    "429"/"5xx"  answer with that status (any 3-digit code is accepted) (the request is not forwarded)
    "drop"       read the request, close the connection without any response
    "reset"      read the request, abort the connection with a TCP RST
    "truncate"   forward, then send the headers and only half of the body, and close
    "delay"      wait `delay` seconds, then forward normally

  fail(kind, count, when) queues faults; `when` (a substring of "METHOD /path?query")
  restricts which requests consume them. `log` lists (method, path, action) per request.
  Point STORAGE_EMULATOR_HOST at `.host`. Use as a context manager or start()/stop().
  """

  def __init__(self, upstream, delay=1.0):
    import urllib.parse  # pylint: disable=g-import-not-at-top
    parsed = urllib.parse.urlparse(upstream)
    self._upstream = (parsed.hostname, parsed.port)
    self.delay = delay
    self._lock = threading.Lock()
    self._faults = []  # [(kind, when)]
    self.log = []
    self._server = None
    self._thread = None
    self.host = None

  def fail(self, kind, count=1, when=None):
    if kind not in FAULT_KINDS and not (kind.isdigit() and len(kind) == 3):
      raise ValueError("unknown fault %r (known: %s)" % (kind, ", ".join(FAULT_KINDS)))
    with self._lock:
      self._faults.extend([(kind, when)] * count)
    return self

  def clear(self):
    with self._lock:
      self._faults = []
      self.log = []

  @property
  def pending(self):
    with self._lock:
      return len(self._faults)

  def _take_fault(self, line):
    with self._lock:
      for i, (kind, when) in enumerate(self._faults):
        if when is None or when in line:
          del self._faults[i]
          return kind
    return None

  def start(self):
    import http.server  # pylint: disable=g-import-not-at-top
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.0"

      def log_message(self, *unused):
        pass

      def _body(self):
        length = self.headers.get("Content-Length")
        if length:
          return self.rfile.read(int(length))
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
          chunks = []
          while True:
            size = int(self.rfile.readline().strip() or b"0", 16)
            if size == 0:
              self.rfile.readline()
              break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
          return b"".join(chunks)
        return b""

      def _handle(self):
        body = self._body()
        action = proxy._take_fault("%s %s" % (self.command, self.path)) or "forward"
        with proxy._lock:
          proxy.log.append((self.command, self.path, action))
        self.close_connection = True
        if action in ("drop", "reset"):
          if action == "reset":
            import struct  # pylint: disable=g-import-not-at-top
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
          return
        if action.isdigit():
          payload = json.dumps({"error": {"code": int(action),
                                          "message": "injected by FaultProxy"}}).encode()
          self.send_response(int(action))
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(payload)))
          self.end_headers()
          self.wfile.write(payload)
          return
        if action == "delay":
          time.sleep(proxy.delay)
        import http.client  # pylint: disable=g-import-not-at-top
        upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
        try:
          headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
          if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
          upstream.request(self.command, self.path, body=body or None, headers=headers)
          response = upstream.getresponse()
          payload = response.read()
          self.send_response(response.status, response.reason)
          for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP:
              self.send_header(key, value)
          self.send_header("Content-Length", str(len(payload)))
          self.end_headers()
          if action == "truncate":
            self.wfile.write(payload[:len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
          else:
            self.wfile.write(payload)
        finally:
          upstream.close()

      do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._server.daemon_threads = True
    self.host = "http://127.0.0.1:%d" % self._server.server_address[1]
    self._thread = threading.Thread(target=self._server.serve_forever,
                                    kwargs={"poll_interval": 0.05}, daemon=True)
    self._thread.start()
    return self

  def stop(self):
    if self._server is not None:
      self._server.shutdown()
      self._server.server_close()
      self._thread.join(timeout=STOP_TIMEOUT)
      self._server = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *unused):
    self.stop()


# ---------------------------------------------------------------------------------------
# One shared emulator per process, reference-counted across fixtures.

_shared_lock = threading.Lock()
_shared = {"emulator": None, "users": 0}


def acquire_shared():
  with _shared_lock:
    if _shared["emulator"] is None or not _shared["emulator"].running:
      emulator = Emulator().start()
      _shared["emulator"] = emulator
      atexit.register(emulator.stop)
    _shared["users"] += 1
    return _shared["emulator"]


def release_shared():
  with _shared_lock:
    _shared["users"] -= 1
    if _shared["users"] <= 0 and _shared["emulator"] is not None:
      _shared["emulator"].stop()
      _shared["emulator"] = None
      _shared["users"] = 0


def emulator_fixture(scope="session", name=None):
  """A pytest fixture yielding the shared running Emulator (started on first use)."""
  import pytest  # pylint: disable=g-import-not-at-top

  @pytest.fixture(scope=scope, name=name)
  def _emulator():
    emulator = acquire_shared()
    try:
      yield emulator
    finally:
      release_shared()

  return _emulator


def bucket_fixture(emulator_fixture_name="gcs_emulator", name=None):
  """A per-test pytest fixture: a fresh bucket on the emulator, STORAGE_EMULATOR_HOST set
  (via monkeypatch) for the test; yields 'gs://BUCKET'. google-cloud-storage then uses
  anonymous credentials and needs no project."""
  import pytest  # pylint: disable=g-import-not-at-top

  @pytest.fixture(name=name)
  def _bucket(request, monkeypatch):
    emulator = request.getfixturevalue(emulator_fixture_name)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
    yield "gs://" + emulator.create_bucket()

  return _bucket


gcs_emulator = emulator_fixture(name="gcs_emulator")
gcs_bucket = bucket_fixture(name="gcs_bucket")
