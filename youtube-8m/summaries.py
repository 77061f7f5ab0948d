"""The summary writer of train.py and eval.py: their event file, and the same events for
Vertex AI TensorBoard.

A Vertex AI custom job with a baseOutputDirectory gets AIP_TENSORBOARD_LOG_DIR
(<baseOutputDirectory>/logs/, a gs:// URI) in its containers, and a TensorBoard instance attached
to the job (CustomJobSpec.tensorboard; scripts/cloud/submit_*.sh --tensorboard) streams the
event files written there. When that variable is set, SummaryWriter writes every summary (and
the graph) twice: into the tool's own directory, as before, and into a second event file in
that directory. TensorFlow writes local files only (see storage.py), so a gs:// location is a
staging.SyncedDir: its local mirror is uploaded at every flush() and at close().

The event files are created with their first event (train's graph, eval's first summary), so
an interrupted run leaves no event file without events; until its first flush an event file
is an interrupts.temporary(), removed if a second signal stops the process at once (its
events would be lost: TensorBoard would show an empty run).
"""

import os

import tensorflow as tf
from absl import logging

from . import interrupts
from . import staging

tf1 = tf.compat.v1

TENSORBOARD_DIR_ENV = "AIP_TENSORBOARD_LOG_DIR"


def tensorboard_dir():
  """AIP_TENSORBOARD_LOG_DIR (a local path or a gs:// URL), or None when it is unset/empty."""
  return os.environ.get(TENSORBOARD_DIR_ENV, "").strip() or None


class SummaryWriter(object):
  """tf.compat.v1.summary.FileWriter's add_summary/flush/close on logdir (a local directory),
  mirrored into AIP_TENSORBOARD_LOG_DIR when Vertex AI sets it."""

  def __init__(self, logdir, graph=None, filename_suffix=None):
    self._options = {"filename_suffix": filename_suffix} if filename_suffix else {}
    self._logdirs, self._writers, self._unflushed = [logdir], [], []
    self.mirror = None
    target = tensorboard_dir()
    if target:
      self.mirror = staging.SyncedDir(target)
      self._logdirs.append(self.mirror.local)
      logging.info("Summaries also go to %s (%s, for Vertex AI TensorBoard)", target,
                   TENSORBOARD_DIR_ENV)
    if graph is not None:
      self._open(graph)

  def _open(self, graph=None):
    try:
      for logdir in self._logdirs:
        writer = tf1.summary.FileWriter(logdir, **self._options)
        self._writers.append(writer)
        # EventsWriter.FileName() creates the file (with its header) if needed.
        events = getattr(writer.event_writer, "_ev_writer", None)
        if events is not None and events.FileName():
          self._unflushed.append(interrupts.temporary(events.FileName()))
        if graph is not None:
          writer.add_graph(graph)
    except BaseException:
      self.close()
      raise

  def add_summary(self, summary, global_step=None):
    if not self._writers:
      self._open()
    for writer in self._writers:
      writer.add_summary(summary, global_step)

  def flush(self):
    """Writes the pending events; uploads the mirror's new events (a gs:// location)."""
    for writer in self._writers:
      writer.flush()
    while self._unflushed:
      interrupts.release(self._unflushed.pop())
    if self.mirror:
      self.mirror.push_new()

  def close(self):
    try:
      for writer in self._writers:
        writer.close()
      while self._unflushed:
        interrupts.release(self._unflushed.pop())
      if self.mirror:
        self.mirror.push_new()
    finally:
      if self.mirror:
        self.mirror.close()
