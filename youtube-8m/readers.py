"""YouTube-8M TFRecord readers (2018 format) as tf.data pipelines for tf.compat.v1 graphs.

Each video becomes ``video_id``, ``video_matrix``, ``num_frames`` and ``labels`` (dense bool
[num_classes]). Frame level: video_matrix is the uint8-quantized frames [max_frames,
sum(feature_sizes)], truncated or padded with zero bytes; the model graph dequantizes them
(model_utils.dequantize_frames), so tf.data moves a quarter of the bytes. Video level:
float32 [sum(feature_sizes)]. A malformed record fails with an error naming its file and
record index (``input_error_message``): the first bad record of its batch.
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

from . import dataset_layout
from . import interrupts
from . import progress as progress_lib
from . import staging
from . import storage
from . import utils

tf1 = tf.compat.v1


class InputDataError(ValueError):
  """Malformed input data; the message names the file and record at fault."""


# What a reader dataset raises for bad input (UnknownError: a shard _StagedFiles could not
# fetch), turned into InputDataError by input_error_message.
INPUT_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError, tf.errors.UnknownError)


def holdout_validate_files(validate_pattern):
  """The 60 held-out file names built from a validate pattern (text before its first '*')."""
  stem = validate_pattern.split("*")[0]
  return [stem + code + ".tfrecord" for code in dataset_layout.HOLDOUT_VALIDATE_CODES]


def glob_files(pattern, flag_name):
  """The files a --flag_name glob matches; IOError naming the flag if none."""
  files = storage.glob(pattern)
  if not files:
    raise IOError("--%s: no file matches %r" % (flag_name, pattern))
  return files


def training_files(train_data_pattern, flag_name="train_data_pattern"):
  """Files of "TRAIN,VALIDATE" (train + validate minus the 60 held-out) or of one pattern."""
  parts = [p.strip() for p in train_data_pattern.split(",")]
  if len(parts) == 1:
    return glob_files(parts[0], flag_name)
  if len(parts) != 2 or not all(parts):
    raise ValueError("--%s must be one glob or 'TRAIN_GLOB,VALIDATE_GLOB', got %r"
                     % (flag_name, train_data_pattern))
  train, validate = parts
  holdout = set(holdout_validate_files(validate))
  validate_files = glob_files(validate, flag_name)
  held_out = len(holdout.intersection(validate_files))
  if held_out < len(holdout):
    logging.warning(
        "--%s: only %d of the %d held-out validate files (%s<CODE>.tfrecord) are among the %d "
        "files %r matches, so held-out videos may be in the training data if your files are "
        "named differently", flag_name, held_out, len(holdout), validate.split("*")[0],
        len(validate_files), validate)
  return glob_files(train, flag_name) + [f for f in validate_files if f not in holdout]


def eval_files(eval_data_pattern, holdout_only=True, flag_name="eval_data_pattern"):
  """The 60 held-out validate files of the pattern, or every file the glob matches."""
  if not eval_data_pattern:
    raise IOError("--%s is required" % flag_name)
  if not holdout_only:
    return glob_files(eval_data_pattern, flag_name)
  files = holdout_validate_files(eval_data_pattern)
  # One listing of (at least) the held-out files instead of 60 lookups.
  present = set(storage.glob(eval_data_pattern.split("*")[0] + "*.tfrecord"))
  missing = [f for f in files if f not in present]
  if len(missing) == len(files):
    raise IOError("--%s=%r: none of the 60 held-out validate files exists (e.g. %s). Pass "
                  "--noeval_holdout_only to evaluate every file the glob matches."
                  % (flag_name, eval_data_pattern, files[0]))
  if missing:
    raise IOError("--%s=%r: %d of the 60 held-out validate files are missing: %s"
                  % (flag_name, eval_data_pattern, len(missing), ", ".join(missing[:5])))
  return files


def input_error_message(error, files):
  """One line naming the file and record of a tf.errors.OpError raised by a reader dataset."""
  if isinstance(error, tf.errors.DataLossError):  # find the first record of broken framing
    for path in files:
      index, corrupt = _intact_records(storage.stage_file(path))
      if corrupt is None:
        continue
      if "truncated record" in corrupt.message:
        return "%s: record %d: truncated TFRecord file (it ends inside this record)" % (
            path, index)
      return "%s: record %d: corrupted TFRecord (%s)" % (path, index, corrupt.message)
  text = error.message
  # Assertion messages of the validation ops already start with "<file>: record <i>: ...".
  marker = "assertion failed: ["
  if marker in text:
    text = text.split(marker, 1)[1].split("\n")[0].rsplit("]", 1)[0].replace("\\'", "'")
  return utils.one_line(text)


def _intact_records(local_path):
  """(records TensorFlow reads from local_path before a broken one, the DataLossError or
  OutOfRangeError it raised there, or None if the file reads to its end)."""
  count = 0
  try:
    for _ in tf1.io.tf_record_iterator(local_path):
      count += 1
  except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as error:
    return count, error
  return count, None


def find_video(files, video_id):
  """'<file>: record <i>' of the first record whose id is video_id (bytes), or None."""
  for path in files:
    for index, record in enumerate(tf1.io.tf_record_iterator(storage.stage_file(path))):
      # A SequenceExample's context and an Example's features are both field 1 (Features).
      if video_id in record and tf.train.Example.FromString(record).features.feature[
          "id"].bytes_list.value == [video_id]:
        return "%s: record %d" % (path, index)
  return None


def one_pass(reader, files, batch_size, num_readers, scope):
  """(initializable iterator, its next batch) of one pass over files in order, on the CPU."""
  with tf.device("/cpu:0"), tf1.name_scope(scope):
    iterator = tf1.data.make_initializable_iterator(reader.dataset(
        files, batch_size, num_epochs=1, shuffle=False, num_readers=num_readers))
    return iterator, iterator.get_next()


def run_batches(sess, fetches, files, progress, limit=0, count_key="labels"):
  """Yields sess.run(fetches) batch after batch until the input ends (OutOfRangeError),
  counting fetches[count_key]'s rows in `progress` (finished at the end). A malformed record
  raises InputDataError naming its file and record. limit > 0: at most that many videos, the
  last batch cut (every fetch must then be batched). A safe point (interrupts) before each
  batch."""
  done = 0
  try:
    while not limit or done < limit:
      interrupts.check(progress.line().split(" | ")[0])
      try:
        result = sess.run(fetches)
      except tf.errors.OutOfRangeError:
        return
      except INPUT_ERRORS as error:
        raise InputDataError(input_error_message(error, files))
      count = len(result[count_key])
      if limit and done + count > limit:
        count = limit - done
        result = tf.nest.map_structure(lambda rows: rows[:count], result)
      done += count
      progress.update(count)
      yield result
  finally:
    progress.finish()


def _record_origins(filenames, indices):
  """'<file>: record <i>' of each record of a batch ([B] strings)."""
  return tf.strings.join([filenames, ": record ", tf.strings.as_string(indices)])


class _BatchChecks(object):
  """The checks of a batch of records, asserted by one op. If any fails, the error names the
  first record of the batch that fails one, with the first of its checks (in the order they
  were added) that fails: '<file>: record <i>: <what>'.

  Every batch makes each check's message for one record (a few scalar string ops), rather than
  only on failure: the branch functions of a tf.cond / tf.switch_case cost ~0.4 s to build in
  every tool that reads data."""

  def __init__(self, origins):
    self.origins = origins  # [B] '<file>: record <i>'
    self.faults = []  # ([B] bool: the record fails this check, describe(row) -> message parts)

  def records(self, bad, describe):
    """A check of each record: bad [B] bool; describe(row) the message parts of a bad one."""
    self.faults.append((bad, describe))

  def items(self, bad, rows, describe):
    """A check of each item (frame, label) of the batch: bad [N] bool, rows [N] int64 the
    record of each item; describe(at) the message parts of the record's first bad item, whose
    value in an [N] tensor is at(tensor) (0 or "" where the record has none: N may be 0)."""
    bad_records = tf.math.unsorted_segment_max(
        tf.cast(bad, tf.int32), rows, tf.size(self.origins, out_type=tf.int64)) > 0

    def describe_record(row):
      in_row = tf.concat([tf.logical_and(bad, tf.equal(rows, row)), [True]], 0)
      first = tf.argmax(tf.cast(in_row, tf.int32), output_type=tf.int64)
      return describe(lambda values: tf.gather(
          tf.concat([values, tf.zeros([1], values.dtype)], 0), first))

    self.faults.append((bad_records, describe_record))

  def passed(self):
    """A boolean scalar (True) that depends on the assertion of every check."""
    bad = tf.stack([fault for fault, _ in self.faults], 1)  # [B, checks]
    bad_records = tf.reduce_any(bad, 1)
    passed = tf.logical_not(tf.reduce_any(bad_records))
    row = tf.argmax(tf.cast(bad_records, tf.int32), output_type=tf.int64)  # a batch is not empty
    check = tf.argmax(tf.cast(bad[row], tf.int32), output_type=tf.int32)
    messages = tf.stack([tf.strings.join([self.origins[row], ": ", *describe(row)])
                         for _, describe in self.faults])
    # A string message: tf.debugging.Assert needs no tf.cond around it.
    with tf.control_dependencies([tf.debugging.Assert(passed, [messages[check]])]):
      return tf.identity(passed)


def _check_video_ids(checks, ids):
  """Each record's `id` feature ([B, None] ragged strings) holds one value."""
  counts = ids.row_lengths()
  checks.records(tf.not_equal(counts, 1), lambda row: [
      tf.strings.as_string(counts[row]), " values of feature 'id', expected 1"])


def _check_labels(checks, labels, num_classes):
  """Label ids ([B, None] ragged int64) are within the vocabulary."""
  ids = labels.flat_values
  checks.items(tf.logical_or(ids < 0, ids >= num_classes), _value_rowids(labels), lambda at: [
      "label id ", tf.strings.as_string(at(ids)), " outside the vocabulary [0, %d)" % num_classes])


def _dense_labels(labels, num_classes):
  """[B, num_classes] bool of each record's label ids ([B, None] ragged int64, checked)."""
  ids = labels.flat_values
  positions = tf.stack([_value_rowids(labels), ids], 1)
  shape = tf.stack([labels.nrows(), num_classes])
  return tf.scatter_nd(positions, tf.ones_like(ids, tf.int32), shape) > 0


def _value_rowids(ragged):
  """ragged.value_rowids() (the row of each value, [values] int64) in a few ops: TensorFlow's
  builds ~30, a noticeable part of every tool's start-up (the reader calls it 4 times)."""
  ends = ragged.row_splits[1:]
  return tf.searchsorted(ends, tf.range(ragged.row_splits[-1]), side="right", out_type=tf.int64)


def _ragged(dtype):
  return tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64)


_ID_AND_LABELS = {"id": _ragged(tf.string), "labels": _ragged(tf.int64)}


MAX_PARSE_BATCH = 256  # records parsed at once (eval.py parses its 256-video parts whole)


class BaseReader(object):
  """Builds a tf.data.Dataset of parsed videos from a list of files."""

  def __init__(self, num_classes=dataset_layout.NUM_CLASSES, feature_names=("rgb", "audio"),
               feature_sizes=(1024, 128)):
    feature_names, feature_sizes = list(feature_names), [int(s) for s in feature_sizes]
    if len(feature_names) != len(feature_sizes):
      raise ValueError("length of feature_names (%d: %s) != length of feature_sizes (%d: %s)"
                       % (len(feature_names), feature_names, len(feature_sizes),
                          feature_sizes))
    self.num_classes = num_classes
    self.feature_names = feature_names
    self.feature_sizes = feature_sizes
    self.feature_dim = sum(feature_sizes)

  def parse(self, filenames, indices, serialized):
    """A batch of {video_id, video_matrix, labels, num_frames} from a batch ([B]) of records
    (serialized) with their file names and record indices (for error messages)."""
    raise NotImplementedError()

  def dataset(self, files, batch_size, num_epochs=1, shuffle=False, num_readers=4,
              seed=None, shuffle_buffer=None):
    """Batches of {video_id, video_matrix, labels, num_frames}.

    num_readers files are interleaved (in a fixed order unless shuffling); num_readers=1
    reads one file after the other, as the original inference pipeline. Training shuffles
    files and serialized records (before parsing, so the buffer holds compact bytes).
    Records are batched, then parsed a batch at a time (one parsing op and vectorized
    checks per batch, not ~20 ops per record). A smaller final batch is kept.
    gs:// files are read from local copies (_StagedFiles).
    """
    files = list(files)
    if not files:
      raise IOError("no input files")
    spec = tf.TensorSpec([], tf.string)
    file_names = tf.data.Dataset.from_generator(
        _StagedFiles(files, num_epochs, shuffle, seed, num_readers),
        output_signature=(spec, spec))

    # The dataset's functions are graph code as written (no Python control flow on tensors):
    # AutoGraph would only re-write them, ~4 s of every tool's start-up.
    @tf.autograph.experimental.do_not_convert
    def records_of(local_name, filename):
      # (filename, (index, record)) by zip: no function call per record.
      return tf.data.Dataset.zip((tf.data.Dataset.from_tensors(filename).repeat(),
                                  tf.data.TFRecordDataset(local_name).enumerate()))

    @tf.autograph.experimental.do_not_convert
    def parse(filenames, indexed):
      return self.parse(filenames, *indexed)

    if num_readers > 1:
      records = file_names.interleave(records_of, cycle_length=num_readers, block_length=1)
    else:
      records = file_names.flat_map(records_of)
    if shuffle:
      records = records.shuffle(shuffle_buffer or 5 * batch_size, seed=seed)
    # Parsing a batch holds a few copies of it: larger batches are parsed in parts.
    parse_size = min(batch_size, MAX_PARSE_BATCH)
    batches = records.batch(parse_size).map(parse)
    if parse_size < batch_size:
      batches = batches.rebatch(batch_size)
    # One thread reads and parses, ahead of the model: it keeps up and takes at most one
    # core from the model's step, and the sequential interleave buffers no records beyond
    # the shuffle's. Nothing is autotuned, so no autotuning thread: destroying the iterator
    # would wait for its sleep.
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return batches.prefetch(1).with_options(options)


class YT8MFrameFeatureReader(BaseReader):
  """Frame-level SequenceExample reader (the one every command of the original uses)."""

  def __init__(self, num_classes=dataset_layout.NUM_CLASSES, feature_names=("rgb", "audio"),
               feature_sizes=(1024, 128), max_frames=dataset_layout.MAX_FRAMES):
    super(YT8MFrameFeatureReader, self).__init__(num_classes, feature_names, feature_sizes)
    self.max_frames = max_frames

  def parse(self, filenames, indices, serialized):
    origins = _record_origins(filenames, indices)
    context, sequences, _ = tf.io.parse_sequence_example(
        serialized, context_features=_ID_AND_LABELS,
        sequence_features={name: _ragged(tf.string) for name in self.feature_names},
        example_names=origins)
    checks = _BatchChecks(origins)
    _check_video_ids(checks, context["id"])
    first_name = self.feature_names[0]
    frame_counts = sequences[first_name].row_lengths()
    for name, size in zip(self.feature_names, self.feature_sizes):
      _check_frames(checks, sequences[name], name, size)
    for name in self.feature_names[1:]:
      counts = sequences[name].row_lengths()
      checks.records(tf.not_equal(counts, frame_counts), lambda row, name=name, counts=counts: [
          "feature '%s' has " % name, tf.strings.as_string(counts[row]),
          " frames but '%s' has " % first_name, tf.strings.as_string(frame_counts[row])])
    _check_labels(checks, context["labels"], self.num_classes)
    with tf.control_dependencies([checks.passed()]):
      # The reshape keeps the size when a batch has no frames at all.
      frames = tf.concat([tf.reshape(tf.io.decode_raw(sequences[name].flat_values, tf.uint8),
                                     [-1, size])
                          for name, size in zip(self.feature_names, self.feature_sizes)], 1)
      labels = _dense_labels(context["labels"], self.num_classes)
      video_ids = tf.identity(context["id"].flat_values)
    # One copy into [B, max_frames, feature_dim]: cut to max_frames, padded with zero bytes.
    video = tf.RaggedTensor.from_row_splits(
        frames, sequences[first_name].row_splits, validate=False).to_tensor(
            shape=[None, self.max_frames, self.feature_dim])
    return {"video_id": video_ids,
            "video_matrix": video,
            "labels": labels,
            "num_frames": tf.cast(tf.minimum(frame_counts, self.max_frames), tf.int32)}


def _check_frames(checks, frames, name, size):
  """Each frame of a feature ([B, frames, values] ragged strings) is one string of `size`
  bytes."""
  rows = _value_rowids(frames)
  values_per_frame = frames.values.row_lengths()
  checks.items(tf.not_equal(values_per_frame, 1), rows, lambda at: [
      "feature '%s' has a frame of " % name, tf.strings.as_string(at(values_per_frame)),
      " values, expected 1"])
  lengths = tf.strings.length(frames.flat_values)
  checks.items(tf.not_equal(lengths, size), tf.gather(rows, _value_rowids(frames.values)),
               lambda at: ["feature '%s' has a frame of " % name,
                           tf.strings.as_string(at(lengths)), " bytes, expected %d" % size])


class YT8MAggregatedFeatureReader(BaseReader):
  """Video-level Example reader (mean_rgb, mean_audio)."""

  def __init__(self, num_classes=dataset_layout.NUM_CLASSES,
               feature_names=("mean_rgb", "mean_audio"), feature_sizes=(1024, 128)):
    super(YT8MAggregatedFeatureReader, self).__init__(num_classes, feature_names,
                                                      feature_sizes)

  def parse(self, filenames, indices, serialized):
    origins = _record_origins(filenames, indices)
    spec = dict(_ID_AND_LABELS)
    for name, size in zip(self.feature_names, self.feature_sizes):
      spec[name] = tf.io.FixedLenFeature([size], tf.float32)
    examples = tf.io.parse_example(serialized, spec, example_names=origins)
    checks = _BatchChecks(origins)
    _check_video_ids(checks, examples["id"])
    _check_labels(checks, examples["labels"], self.num_classes)
    with tf.control_dependencies([checks.passed()]):
      labels = _dense_labels(examples["labels"], self.num_classes)
      video_ids = tf.identity(examples["id"].flat_values)
    video = tf.concat([examples[name] for name in self.feature_names], 1)
    video.set_shape([None, self.feature_dim])
    return {"video_id": video_ids,
            "video_matrix": video,
            "labels": labels,
            "num_frames": tf.ones(tf.shape(serialized), tf.int32)}


class _StagedFiles(object):
  """The generator of (local copy, file name) pairs of a dataset, epoch after epoch (each in a
  new seeded permutation when shuffling): gs:// shards are downloaded ahead into a bounded
  local cache (staging.ShardStager), local files pass through.

  tf.data's interleave opens up to num_readers files and prefetches more names, so a staged
  shard must outlive its yield by `keep` files, across epoch boundaries too. The stagers of
  the last epochs stay open after the generator ends (tf.data may still read their files):
  they belong to this object, which the dataset holds, and close with it or at exit.
  """

  def __init__(self, files, num_epochs, shuffle, seed, num_readers):
    self.files, self.num_epochs, self.shuffle, self.seed = files, num_epochs, shuffle, seed
    self.prefetch = max(2, num_readers)
    self.keep = 4 * max(1, num_readers) + 2
    self.open_stagers = []  # [(stager, files handed out when its epoch ended)]

  def __call__(self):
    for stager, _ in self.open_stagers:  # a previous pass's: its iterator was re-initialized
      stager.close()
    self.open_stagers = []
    rng = np.random.default_rng(self.seed)
    epoch = handed_out = 0
    while self.num_epochs is None or epoch < self.num_epochs:
      order = rng.permutation(len(self.files)) if self.shuffle else range(len(self.files))
      epoch_files = [self.files[i] for i in order]
      stager = staging.ShardStager(epoch_files, prefetch=self.prefetch, keep_yielded=self.keep)
      for name, local in zip(epoch_files, stager):
        if epoch == 0:
          _check_file_end(local, name)
        handed_out += 1
        while self.open_stagers and handed_out - self.open_stagers[0][1] >= self.keep:
          self.open_stagers.pop(0)[0].close()  # its last shard was handed out `keep` ago
        yield local, name
      self.open_stagers.append((stager, handed_out))
      epoch += 1


def _check_file_end(local_path, name):
  """Warns about an empty file; raises InputDataError for a truncated one (TFRecordDataset
  reads a file cut within a record's first 12 bytes as complete, losing it silently)."""
  size = os.path.getsize(local_path)
  if not size:
    logging.warning("%s is empty (0 bytes): no videos", name)
    return
  with open(local_path, "rb") as f:
    end = progress_lib.scan_records(f)[1]
  if end != size:  # corrupted or truncated: the dataset reports it, unless TensorFlow can't
    count, corrupt = _intact_records(local_path)
    if isinstance(corrupt, tf.errors.DataLossError):
      return
    raise InputDataError("%s: record %d: truncated TFRecord file (it ends inside this record)"
                         % (name, count))


def make_reader(frame_features, feature_names, feature_sizes,
                num_classes=dataset_layout.NUM_CLASSES):
  reader = YT8MFrameFeatureReader if frame_features else YT8MAggregatedFeatureReader
  return reader(num_classes, feature_names, feature_sizes)
