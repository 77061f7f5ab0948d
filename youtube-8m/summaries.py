"""The summary writer of train.py and eval.py: their event file, and the same events for
Vertex AI TensorBoard.

A Vertex AI custom job with a baseOutputDirectory gets AIP_TENSORBOARD_LOG_DIR
(<baseOutputDirectory>/logs/, a gs:// URI) in its containers, and a TensorBoard instance attached
to the job (CustomJobSpec.tensorboard; scripts/cloud/submit_*.sh --tensorboard) streams the
event files written there. When that variable is set, SummaryWriter writes every summary (and
the graph) twice: into the tool's own directory, as before, and into a second event file in
that directory. TensorFlow writes local files only (see storage.py), so a gs:// location is a
staging.SyncedDir: its local mirror is uploaded at every flush() and at close().

An event file that holds no event at close() (an eval stopped before its first summary) is
removed, as TensorBoard would show it as an empty run; until its first summary is flushed
such a file (of a writer without a graph) is an interrupts.temporary(), removed if a second
signal stops the process at once.
"""

import contextlib

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
    options = {"filename_suffix": filename_suffix} if filename_suffix else {}
    self._writers, self._unflushed, self._written = [], [], graph is not None
    self.mirror = None
    target = tensorboard_dir()
    if target:
      self.mirror = staging.SyncedDir(target)
      logging.info("Summaries also go to %s (%s, for Vertex AI TensorBoard)", target,
                   TENSORBOARD_DIR_ENV)
    try:
      for directory in [logdir] + ([self.mirror.local] if self.mirror else []):
        # With a graph, the writer's thread writes it (and its meta graph) at once.
        writer = tf1.summary.FileWriter(directory, graph=graph, **options)
        self._writers.append(writer)
        events = getattr(writer.event_writer, "_ev_writer", None)
        if graph is None and events is not None and events.FileName():
          self._unflushed.append(interrupts.temporary(events.FileName()))
    except BaseException:
      self.close()
      raise

  def add_summary(self, summary, global_step=None):
    self._written = True
    for writer in self._writers:
      writer.add_summary(summary, global_step)

  def flush(self):
    """Writes the pending events; uploads the mirror's new events (a gs:// location)."""
    for writer in self._writers:
      writer.flush()
    while self._written and self._unflushed:
      interrupts.release(self._unflushed.pop())
    if self.mirror:
      self.mirror.push_new()

  def close(self):
    try:
      for writer in self._writers:
        writer.close()
      while self._unflushed:
        name = self._unflushed.pop()
        if not self._written:
          with contextlib.suppress(OSError):
            os.remove(name)
        interrupts.release(name)
      if self.mirror:
        self.mirror.push_new()
    finally:
      if self.mirror:
        self.mirror.close()
