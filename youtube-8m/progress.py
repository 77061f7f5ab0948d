"""Progress lines of the tools' long loops, logged at the first update, then at most every
10 s, and at finish(), e.g.
    eval: 4,800/12,000 videos (40.0%) | 52.3 videos/s | elapsed 1m32s | ETA 2m18s
    training: epoch 1.25/10 (12.5%) | 412.3 examples/s | elapsed 3m02s | ETA 21m14s
count_records(files) supplies TFRecord totals: exact from the record headers, or estimated
(flagged by a '~') from a sample's bytes per record times the files' total size.
"""

import concurrent.futures
import io
import os
import struct
import time

from absl import logging

from . import storage

LOG_INTERVAL_SECS = 10.0
_SAMPLE_BYTES = 32 << 20  # read of one gs:// file to estimate bytes per record
_SIZE_SAMPLE_FILES = 100  # gs:// files whose sizes are read for the estimate
# Local files whose record headers are all read; beyond that many, a spread sample's are (a
# header read per record would take minutes on a full copy of the 3844 training files).
_LOCAL_EXACT_FILES = 200


def format_duration(seconds):
  seconds = int(round(max(seconds, 0)))
  if seconds < 60:
    return "%ds" % seconds
  if seconds < 3600:
    return "%dm%02ds" % (seconds // 60, seconds % 60)
  return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)


class Progress(object):
  """done/total of one loop; total may be None (unknown) or approximate."""

  def __init__(self, what, total=None, unit="items", approximate=False,
               interval=LOG_INTERVAL_SECS, log=None, scale=1, clock=time.time):
    """scale: counts are divided by it for display (e.g. bytes shown as MiB: 2**20)."""
    self.what, self.total, self.unit, self.scale = what, total, unit, scale
    self.approximate, self.interval, self.clock = approximate, interval, clock
    self.done = 0
    self.start = clock()
    self._last_log = self._logged = None
    self._log = log or (lambda line: logging.info("%s", line))

  def _number(self, value):
    return "{:,}".format(value) if self.scale == 1 else "{:,.1f}".format(value / self.scale)

  def line(self):
    elapsed = self.clock() - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    text = "%s: %s" % (self.what, self._number(self.done))
    if self.total:
      text += "/%s%s %s (%.1f%%)" % ("~" if self.approximate else "", self._number(self.total),
                                     self.unit, 100.0 * self.done / self.total)
    else:
      text += " " + self.unit
    text += " | %.1f %s/s | elapsed %s" % (rate / self.scale, self.unit,
                                           format_duration(elapsed))
    if self.total and rate > 0:
      remaining = max(self.total - self.done, 0) / rate
      text += " | ETA %s%s" % ("~" if self.approximate else "", format_duration(remaining))
    return text

  def _position(self):
    return self.done

  def update(self, count=1):
    self.done += count
    self._log_if_due()

  def _log_if_due(self):
    """Logs at the first update, then at most every `interval` seconds."""
    now = self.clock()
    if self._last_log is None or now - self._last_log >= self.interval:
      self._last_log, self._logged = now, self._position()
      self._log(self.line())

  def finish(self):
    """Logs the final line (unless the last update logged it already)."""
    if self._logged != self._position():
      self._last_log, self._logged = self.clock(), self._position()
      self._log(self.line())


class TrainingProgress(Progress):
  """Training's progress: the global step out of max_steps, or the epoch (this process's
  examples over its files' records) out of num_epochs when that ends the run sooner; the
  examples/sec of this run and the ETA of whichever bound comes first."""

  def __init__(self, first_step, max_steps=None, epoch_examples=None, num_epochs=None,
               approximate=False, log=None, clock=time.time):
    """first_step: the global step this run starts from; epoch_examples: the records of this
    process's training files (None: unknown), approximate if estimated."""
    super().__init__("training", approximate=approximate, log=log, clock=clock)
    self.first_step = self.step = first_step
    self.max_steps, self.epoch_examples, self.num_epochs = max_steps, epoch_examples, num_epochs
    self.examples = 0

  def _position(self):
    return self.step

  def _bounds(self, elapsed):
    """[(eta seconds or None, text)] of the bounds that apply."""
    bounds = []
    if self.max_steps:
      rate = (self.step - self.first_step) / elapsed if elapsed > 0 else 0.0
      eta = max(self.max_steps - self.step, 0) / rate if rate > 0 else None
      bounds.append((eta, "step {:,}/{:,} ({:.1f}%)".format(
          self.step, self.max_steps, 100.0 * self.step / self.max_steps), ""))
    if self.epoch_examples and self.num_epochs:
      total = self.epoch_examples * self.num_epochs
      rate = self.examples / elapsed if elapsed > 0 else 0.0
      eta = max(total - self.examples, 0) / rate if rate > 0 else None
      mark = "~" if self.approximate else ""
      bounds.append((eta, "epoch %s%.2f/%d (%s%.1f%%)" % (
          mark, float(self.examples) / self.epoch_examples, self.num_epochs, mark,
          100.0 * self.examples / total), mark))
    return bounds

  def line(self):
    elapsed = self.clock() - self.start
    bounds = self._bounds(elapsed)
    known = [bound for bound in bounds if bound[0] is not None]
    eta, where, mark = (min(known) if known else bounds[0] if bounds else
                        (None, "step {:,}".format(self.step), ""))
    text = "training: %s | %.1f examples/s | elapsed %s" % (
        where, self.examples / elapsed if elapsed > 0 else 0.0, format_duration(elapsed))
    if eta is not None:
      text += " | ETA %s%s" % (mark, format_duration(eta))
    return text

  def update(self, step, examples):  # pylint: disable=arguments-differ
    """After a training step: the global step it reached and the examples it read here."""
    self.step = step
    self.examples += examples
    self._log_if_due()


def scan_records(f, limit=None):
  """(records, bytes they use) of an open TFRecord file from its headers (uint64 length,
  uint32 crc, data, uint32 crc), counting only records that end within `limit` bytes."""
  count, offset = 0, 0
  while True:
    header = f.read(8)
    if len(header) < 8:
      return count, offset
    (length,) = struct.unpack("<Q", header)
    if limit is not None and offset + 16 + length > limit:
      return count, offset
    f.seek(length + 8, os.SEEK_CUR)
    count, offset = count + 1, offset + 16 + length


def _estimate_gcs(paths):
  """Estimated records in gs:// TFRecord files, or None."""
  sample = paths[:_SIZE_SAMPLE_FILES]
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    sizes = list(pool.map(storage.size, sample))
  total_bytes = sum(sizes) * len(paths) / float(len(sample))
  with storage.open(sample[0], "rb") as f:
    data = f.read(_SAMPLE_BYTES)
  count, used = scan_records(io.BytesIO(data), limit=len(data))
  if count == 0:
    return None
  return int(round(total_bytes / (used / float(count))))


def _count_local(paths):
  """(records, exact) of local TFRecord files: every header read, or a sample's when there
  are more than _LOCAL_EXACT_FILES files, scaled by the files' sizes."""
  sample = paths
  if len(paths) > _LOCAL_EXACT_FILES:
    stride = len(paths) / float(_LOCAL_EXACT_FILES)
    sample = [paths[int(i * stride)] for i in range(_LOCAL_EXACT_FILES)]
  records = used = 0
  for path in sample:
    with open(path, "rb") as f:
      count, size = scan_records(f)
    records, used = records + count, used + size
  if sample is paths:
    return records, True
  if records == 0:
    return 0, False
  total_bytes = sum(os.path.getsize(path) for path in paths)
  return int(round(total_bytes * records / float(used))), False


def count_records(files):
  """(total records, exact) of TFRecord files; (None, False) if it cannot be told."""
  local = [f for f in files if not storage.is_gcs(f)]
  remote = [f for f in files if storage.is_gcs(f)]
  try:
    total, exact = _count_local(local)
    if not remote:
      return total, exact
    estimate = _estimate_gcs(remote)
    return (None, False) if estimate is None else (total + estimate, False)
  except (OSError, struct.error) as error:  # progress only: the real read reports errors
    logging.warning("cannot count the records of the input files (%s): no total", error)
    return None, False


def count_inputs(what, files, max_items=0):
  """count_records (videos) with a log line; max_items > 0 caps the total."""
  start = time.time()
  total, exact = count_records(files)
  if total is not None and max_items > 0 and max_items < total:
    total, exact = max_items, True
  if total is not None:
    logging.info("%s: %s%s videos in %d file(s) (%s in %.1f s)", what, "" if exact else "~",
                 "{:,}".format(total), len(files), "counted" if exact else "estimated",
                 time.time() - start)
  return total, exact


def input_progress(what, files, max_items=0):
  """A Progress over TFRecord files (one record per video)."""
  total, exact = count_inputs(what, files, max_items)
  return Progress(what, total, "videos", approximate=not exact)
