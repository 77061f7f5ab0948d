"""The summary writer of train.py and eval.py: their event file, and the same events for
Vertex AI TensorBoard.

A Vertex AI custom job with a baseOutputDirectory gets AIP_TENSORBOARD_LOG_DIR
(<baseOutputDirectory>/logs/, a gs:// URI) in its containers, and a TensorBoard instance attached
to the job (CustomJobSpec.tensorboard; scripts/cloud/submit_*.sh --tensorboard) streams the
event files written there. When that variable is set, SummaryWriter writes every summary (and
the graph) twice: into the tool's own directory, as before, and into a second event file in
that directory. TensorFlow writes local files only (see storage.py), so a gs:// location is a
staging.SyncedDir: its local mirror is uploaded at every flush() and at close().
"""

import os

import tensorflow as tf
from absl import logging

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
    self._writers = [tf1.summary.FileWriter(logdir, graph=graph, **options)]
    self.mirror = None
    target = tensorboard_dir()
    if target:
      self.mirror = staging.SyncedDir(target)
      try:
        self._writers.append(tf1.summary.FileWriter(self.mirror.local, graph=graph, **options))
      except BaseException:
        self._writers[0].close()
        self.mirror.close()
        raise
      logging.info("Summaries also go to %s (%s, for Vertex AI TensorBoard)", target,
                   TENSORBOARD_DIR_ENV)

  def add_summary(self, summary, global_step=None):
    for writer in self._writers:
      writer.add_summary(summary, global_step)

  def flush(self):
    """Writes the pending events; uploads the mirror's new events (a gs:// location)."""
    for writer in self._writers:
      writer.flush()
    if self.mirror:
      self.mirror.push_new()

  def close(self):
    try:
      for writer in self._writers:
        writer.close()
      if self.mirror:
        self.mirror.push_new()
    finally:
      if self.mirror:
        self.mirror.close()
