"""Synthetic YouTube-8M (2018) data with a planted, learnable signal (README "Synthetic data").

Writes OUTPUT_DIR/{frame,video}/{train,validate,test}<CODE>.tfrecord atomically (a hidden
temporary name, then renamed): frame level SequenceExamples (context `id`, 4 alphanumeric
chars, and `labels`, sorted unique int64, EMPTY in test files; feature_lists `rgb` / `audio`
of one 1024 / 128 uint8 bytes entry per frame), video level Examples (`id`, `labels`,
`mean_rgb` [1024] and `mean_audio` [128]: the means of the same videos' DEQUANTIZED frames).
x is stored as q = clip(rint((x - QUANT_BIAS) / QUANT_SCALE), 0, 255). CODE is 2 chars of
[0-9A-Za-z] in sorted order, but the first 60 validate files use HOLDOUT_VALIDATE_CODES.

Labels: 1 + Poisson(2) per video (at most 20), the first by the TrainVideoCount of
vocabulary.csv, each further one with probability SAME_VERTICAL_PROB from the first label's
Vertical1. Signal: each label adds its class prototype (AMPLITUDE * sqrt(D) * a fixed random
unit direction, for rgb and audio) to one random window of active_fraction of the frames, on
top of a global offset, a per-video background and per-frame noise independent of the labels
(`difficulty_params`); class_directions(), class_prototypes() and global_offset() expose the
ground truth. Global quantities come from default_rng([seed, K]), each file from
default_rng([seed, split_index, file_index]): output bytes do not depend on --num_threads.
"""
import concurrent.futures
import contextlib
import csv
import inspect
import os
import statistics
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging

from . import interrupts
from . import storage
from .dataset_layout import (HOLDOUT_VALIDATE_CODES, NUM_CLASSES, QUANT_BIAS, QUANT_SCALE,
                             dequantize)

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALL_CODES = tuple(a + b for a in ALPHABET for b in ALPHABET)  # sorted, 3844
MAX_FILES_PER_SPLIT = len(ALL_CODES)
ID_LENGTH = 4
MAX_VIDEOS = len(ALPHABET) ** ID_LENGTH

SPLITS = ("train", "validate", "test")
LEVELS = ("frame", "video", "both")
RGB_DIM = 1024
AUDIO_DIM = 128
FEATURE_DIM = RGB_DIM + AUDIO_DIM
AMPLITUDE = 0.15
MAX_LABELS_PER_VIDEO = 20
SAME_VERTICAL_PROB = 0.5
GLOBAL_OFFSET_STD = 0.05

_SEED_PROTOTYPES = 1001
_SEED_OFFSET = 1002
_SEED_IDS = 1003

VOCABULARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabulary.csv")


def _tf():
  """TensorFlow, imported lazily so that flag errors and --help are instant."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def difficulty_params(difficulty):
  """--difficulty in [0, 1] -> the signal and noise parameters (per dim, float units)."""
  d = float(difficulty)
  return {
      "active_fraction": 0.9 - 0.5 * d,  # share of the frames carrying each label's signal
      "background_std": 0.15 + 0.3 * d,  # per-video background
      "frame_noise_std": 0.20 + 0.20 * d,  # per-frame noise
  }


def class_directions(seed, num_classes=NUM_CLASSES):
  """Unit class directions (rgb [num_classes, 1024], audio [num_classes, 128]); drawn for
  all NUM_CLASSES classes and sliced, so class c's direction does not depend on num_classes."""
  rng = np.random.default_rng([seed, _SEED_PROTOTYPES])
  rgb = rng.standard_normal((NUM_CLASSES, RGB_DIM))
  audio = rng.standard_normal((NUM_CLASSES, AUDIO_DIM))
  rgb /= np.linalg.norm(rgb, axis=1, keepdims=True)
  audio /= np.linalg.norm(audio, axis=1, keepdims=True)
  return rgb[:num_classes], audio[:num_classes]


def class_prototypes(seed, num_classes=NUM_CLASSES):
  """float32 [num_classes, 1152] (rgb then audio): per-dim RMS AMPLITUDE."""
  rgb, audio = class_directions(seed, num_classes)
  return np.concatenate([rgb * (AMPLITUDE * np.sqrt(RGB_DIM)),
                         audio * (AMPLITUDE * np.sqrt(AUDIO_DIM))], axis=1).astype(np.float32)


def global_offset(seed):
  """float32 [1152]: per-dim offset shared by all videos of a dataset."""
  rng = np.random.default_rng([seed, _SEED_OFFSET])
  return (rng.standard_normal(FEATURE_DIM) * GLOBAL_OFFSET_STD).astype(np.float32)


def load_vocabulary(path=VOCABULARY_PATH):
  """(TrainVideoCount int64 [3862], Vertical1 list of str) of vocabulary.csv."""
  with open(path, newline="", encoding="utf-8") as f:
    rows = {int(row["Index"]): row for row in csv.DictReader(f)}
  if sorted(rows) != list(range(len(rows))):
    raise ValueError("vocabulary %s: Index column is not 0..N-1" % path)
  rows = [rows[i] for i in range(len(rows))]
  return (np.array([int(row["TrainVideoCount"]) for row in rows], dtype=np.int64),
          [(row.get("Vertical1") or "").strip() for row in rows])


def file_codes(split, num_files):
  """The 2-char codes of `num_files` files of `split` (validate: the held-out codes first)."""
  if split != "validate":
    return list(ALL_CODES[:num_files])
  held = list(HOLDOUT_VALIDATE_CODES[:num_files])
  others = [c for c in ALL_CODES if c not in HOLDOUT_VALIDATE_CODES]
  return held + others[:max(0, num_files - len(held))]


def make_video_ids(seed, count):
  """`count` unique 4-char alphanumeric ids, deterministic from the seed."""
  rng = np.random.default_rng([seed, _SEED_IDS])
  base = len(ALPHABET)  # n's base-62 digits, least significant first
  return ["".join(ALPHABET[n // base ** i % base] for i in range(ID_LENGTH))
          for n in rng.choice(MAX_VIDEOS, size=count, replace=False).tolist()]


class _LabelSampler(object):
  """Samples sorted label sets with the real long-tail frequencies."""

  def __init__(self, num_classes):
    counts, verticals = load_vocabulary()  # generate() checks num_classes <= NUM_CLASSES
    self.num_classes = num_classes
    w = counts[:num_classes].astype(np.float64)
    self.weights = w / w.sum()
    verticals = np.array(verticals[:num_classes])
    self.groups = [np.flatnonzero(verticals == v).astype(np.int64)
                   for v in sorted(set(verticals) - {"", "(Unknown)"})]
    self.group_of = np.full(num_classes, -1, dtype=np.int64)
    for gi, members in enumerate(self.groups):
      self.group_of[members] = gi
    self.max_labels = min(MAX_LABELS_PER_VIDEO, num_classes)

  @staticmethod
  def _pick(rng, candidates, weights):
    if weights.sum() <= 0:
      return None
    cum = np.cumsum(weights)
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(candidates[min(i, len(candidates) - 1)])

  def sample(self, rng):
    k = min(1 + int(rng.poisson(2.0)), self.max_labels)
    chosen, mask, group = [], np.ones(self.num_classes, dtype=bool), -1
    while len(chosen) < k:
      pick = None
      if group >= 0 and rng.random() < SAME_VERTICAL_PROB:
        members = self.groups[group]
        pick = self._pick(rng, members, self.weights[members] * mask[members])
      if pick is None:
        pick = self._pick(rng, np.arange(self.num_classes), self.weights * mask)
      if pick is None:  # no class left
        break
      if not chosen:  # further labels come from the first one's vertical
        group = self.group_of[pick]
      chosen.append(pick)
      mask[pick] = False
    return sorted(chosen)


def _varint(n):
  out = bytearray()
  while n > 0x7F:
    out.append(n & 0x7F | 0x80)
    n >>= 7
  return bytes(out + bytes([n]))


def encode_bytes_feature_list(q):
  """Serialized tf.train.FeatureList with one bytes Feature per row of uint8 q [T, D]: the
  protos' bytes, built in one numpy copy (the generator's hot path)."""
  q = np.asarray(q, dtype=np.uint8)
  num_rows, length = q.shape
  # The wire-format prefix of one Feature{bytes_list{value}} (field 1 everywhere).
  value = b"\x0a" + _varint(length)
  bytes_list = b"\x0a" + _varint(len(value) + length)
  header = np.frombuffer(b"\x0a" + _varint(len(bytes_list) + len(value) + length) + bytes_list
                         + value, np.uint8)
  buf = np.empty((num_rows, len(header) + length), dtype=np.uint8)
  buf[:, :len(header)] = header
  buf[:, len(header):] = q
  return buf.tobytes()


def _frame_record(vid, labels, q):
  """Serialized SequenceExample of quantized frames q [T, 1152] uint8."""
  ex = _tf().train.SequenceExample()
  ex.context.feature["id"].bytes_list.value.append(vid.encode("ascii"))
  ex.context.feature["labels"].int64_list.value.extend(labels)
  feature_lists = ex.feature_lists.feature_list
  feature_lists["rgb"].MergeFromString(encode_bytes_feature_list(q[:, :RGB_DIM]))
  feature_lists["audio"].MergeFromString(encode_bytes_feature_list(q[:, RGB_DIM:]))
  return ex.SerializeToString(deterministic=True)


def _video_record(vid, labels, mean_rgb, mean_audio):
  """Serialized Example of one video's mean features (float32 [1024], [128])."""
  ex = _tf().train.Example()
  ex.features.feature["id"].bytes_list.value.append(vid.encode("ascii"))
  ex.features.feature["labels"].int64_list.value.extend(labels)
  ex.features.feature["mean_rgb"].float_list.value.extend(mean_rgb)
  ex.features.feature["mean_audio"].float_list.value.extend(mean_audio)
  return ex.SerializeToString(deterministic=True)


def gaussian_noise_table(std):
  """int16 [256]: equiprobable levels of N(0, std^2) in quantization units; per-frame noise
  is table[uniform uint8] (truncated at ~2.7 sigma), ~3x cheaper than float normals."""
  nd = statistics.NormalDist()
  z = np.array([nd.inv_cdf((i + 0.5) / 256.0) for i in range(256)])
  return np.rint(z * (std / QUANT_SCALE)).astype(np.int16)


def _generate_video(rng, sampler, prototypes_q, offset_q, params, noise_table, min_frames,
                    max_frames):
  """(labels, quantized frames uint8 [T, 1152]), in quantization units. The noise-free part
  (offset + background + active prototypes) is constant between window bounds: computed per
  segment, then repeated."""
  num_frames = int(rng.integers(min_frames, max_frames + 1))
  labels = sampler.sample(rng)
  background = rng.standard_normal(FEATURE_DIM, dtype=np.float32)
  background *= np.float32(params["background_std"] / QUANT_SCALE)
  background += offset_q
  window = max(1, int(round(params["active_fraction"] * num_frames)))
  starts = rng.integers(0, num_frames - window + 1, size=len(labels)).tolist()
  bounds = sorted(set([0, num_frames] + starts + [s + window for s in starts]))
  segments = np.empty((len(bounds) - 1, FEATURE_DIM), dtype=np.float32)
  for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
    segments[i] = background
    for label, s in zip(labels, starts):
      if s <= a and b <= s + window:
        segments[i] += prototypes_q[label]
  np.rint(segments, out=segments)
  np.clip(segments, -512, 767, out=segments)
  clean = np.repeat(segments.astype(np.int16), np.diff(bounds), axis=0)
  clean += noise_table[rng.integers(0, 256, size=(num_frames, FEATURE_DIM), dtype=np.uint8)]
  np.clip(clean, 0, 255, out=clean)
  return labels, clean.astype(np.uint8)


def _generate_file(seed, model, task):
  """Writes one file per level of `task` = (split_index, file_index, split, ids, {level: path})
  (storage.local_output: renamed when complete); returns (frames, bytes) written. `model`:
  the keyword arguments of _generate_video but rng."""
  split_index, file_index, split, ids, paths = task
  rng = np.random.default_rng([seed, split_index, file_index])
  levels = sorted(paths)
  num_frames = 0
  with contextlib.ExitStack() as stack:  # each writer closes before its file is renamed
    writers = {level: stack.enter_context(_tf().io.TFRecordWriter(
        stack.enter_context(storage.local_output(paths[level])))) for level in levels}
    for vid in ids:
      interrupts.check("writing %s" % paths[levels[0]])
      labels, q = _generate_video(rng, **model)
      stored_labels = [] if split == "test" else labels
      num_frames += q.shape[0]
      if "frame" in writers:
        writers["frame"].write(_frame_record(vid, stored_labels, q))
      if "video" in writers:
        means = dequantize(q.sum(axis=0, dtype=np.int64) / float(q.shape[0])).astype(
            np.float32)
        writers["video"].write(
            _video_record(vid, stored_labels, means[:RGB_DIM], means[RGB_DIM:]))
  return num_frames, sum(os.path.getsize(paths[level]) for level in levels)


def _write_files(tasks, seed, model, num_threads):
  """({split: frames}, bytes) of the files of tasks, written by num_threads threads; after an
  error or a signal (interrupts), the files not started are not."""
  num_frames = dict.fromkeys(SPLITS, 0)
  num_bytes = 0
  with concurrent.futures.ThreadPoolExecutor(num_threads or min(4, os.cpu_count() or 1)) as ex:
    futures = [ex.submit(_generate_file, seed, model, task) for task in tasks]
    try:
      for done, (task, future) in enumerate(zip(tasks, futures)):
        frames, size = future.result()
        num_frames[task[2]] += frames
        num_bytes += size
        interrupts.kept("%d of %d files" % (done + 1, len(tasks)), key="files")
    finally:
      for future in futures:
        future.cancel()
  return num_frames, num_bytes


def _check(cond, flag, message):
  if not cond:
    raise ValueError("--%s: %s" % (flag, message))


def _plan_files(output_dir, out_levels, codes, per_file, ids):
  """(tasks of _generate_file, {level: {split: [paths]}}): each file's videos are the next
  per_file[split] of ids. Creates the level directories and warns about other .tfrecord files
  there (glob patterns would match them too)."""
  tasks, pos = [], 0
  for split_index, split in enumerate(SPLITS):
    for file_index, code in enumerate(codes[split]):
      paths = {level: os.path.join(output_dir, level, "%s%s.tfrecord" % (split, code))
               for level in out_levels}
      tasks.append((split_index, file_index, split, ids[pos:pos + per_file[split]], paths))
      pos += per_file[split]
  files = {level: {split: [task[4][level] for task in tasks if task[2] == split]
                   for split in SPLITS} for level in out_levels}
  for level in out_levels:
    os.makedirs(os.path.join(output_dir, level), exist_ok=True)
    expected = set(os.path.basename(p) for v in files[level].values() for p in v)
    stale = sorted(n for n in os.listdir(os.path.join(output_dir, level))
                   if n.endswith(".tfrecord") and n not in expected)
    if stale:
      logging.warning("%s/%s already holds %d other .tfrecord files (e.g. %s) that glob "
                      "patterns will also match.", output_dir, level, len(stale), stale[0])
  return tasks, files


def generate(output_dir, num_train_files=20, num_validate_files=60, num_test_files=2,
             videos_per_file=50, validate_videos_per_file=None, test_videos_per_file=None,
             num_classes=NUM_CLASSES, seed=0, difficulty=0.5, min_frames=60, max_frames=360,
             levels="both", num_threads=None):
  """Writes a synthetic dataset under `output_dir` (arguments as the flags); returns
  {"output_dir", "files": {level: {split: [paths]}}, "codes": {split: [codes]},
  "num_videos": {split: int}}."""
  num_files = dict(zip(SPLITS, (num_train_files, num_validate_files, num_test_files)))
  for split in SPLITS:
    _check(0 <= num_files[split] <= MAX_FILES_PER_SPLIT, "num_%s_files" % split,
           "must be in [0, %d], got %r" % (MAX_FILES_PER_SPLIT, num_files[split]))
  _check(videos_per_file >= 1, "videos_per_file", "must be >= 1, got %r" % videos_per_file)
  for name, value in (("validate_videos_per_file", validate_videos_per_file),
                      ("test_videos_per_file", test_videos_per_file)):
    _check(value is None or value >= 1, name, "must be >= 1 (or unset), got %r" % value)
  _check(1 <= num_classes <= NUM_CLASSES, "num_classes",
         "must be in [1, %d], got %r" % (NUM_CLASSES, num_classes))
  _check(0.0 <= difficulty <= 1.0, "difficulty", "must be in [0, 1], got %r" % difficulty)
  _check(min_frames >= 1, "min_frames", "must be >= 1, got %r" % min_frames)
  _check(max_frames >= min_frames, "max_frames",
         "must be >= --min_frames (%r), got %r" % (min_frames, max_frames))
  _check(max_frames <= 100000, "max_frames", "must be <= 100000, got %r" % max_frames)
  _check(levels in LEVELS, "levels", "must be one of %s, got %r" % ("/".join(LEVELS), levels))
  _check(num_threads is None or num_threads >= 1, "num_threads",
         "must be >= 1, got %r" % num_threads)
  per_file = dict(zip(SPLITS, (videos_per_file, validate_videos_per_file or videos_per_file,
                               test_videos_per_file or videos_per_file)))
  num_videos = {s: num_files[s] * per_file[s] for s in SPLITS}
  total_videos = sum(num_videos.values())
  _check(total_videos <= MAX_VIDEOS // 2, "videos_per_file",
         "too many videos in total (%d > %d)" % (total_videos, MAX_VIDEOS // 2))
  out_levels = ("frame", "video") if levels == "both" else (levels,)

  _tf()  # import once in the main thread, before the worker threads start
  start_time = time.time()  # generation time, without the TF import
  params = difficulty_params(difficulty)
  model = {
      "sampler": _LabelSampler(num_classes), "params": params,
      "prototypes_q": class_prototypes(seed, num_classes) / np.float32(QUANT_SCALE),
      "offset_q": (global_offset(seed) - np.float32(QUANT_BIAS)) / np.float32(QUANT_SCALE),
      "noise_table": gaussian_noise_table(params["frame_noise_std"]),
      "min_frames": min_frames, "max_frames": max_frames}
  codes = {split: file_codes(split, num_files[split]) for split in SPLITS}
  tasks, files = _plan_files(output_dir, out_levels, codes, per_file,
                             make_video_ids(seed, total_videos))
  num_frames, num_bytes = _write_files(tasks, seed, model, num_threads)
  seconds = time.time() - start_time
  logging.info(
      "Wrote %d files (%s level) to %s: %d videos (train=%d, validate=%d, test=%d), "
      "%d frames, %.1f MB in %.1fs (%.0f videos/s).",
      sum(len(v) for lv in files.values() for v in lv.values()), "+".join(out_levels),
      os.path.abspath(output_dir), total_videos, num_videos["train"], num_videos["validate"],
      num_videos["test"], sum(num_frames.values()), num_bytes / 1e6, seconds,
      total_videos / max(seconds, 1e-9))
  return {"output_dir": output_dir, "files": files, "codes": codes, "num_videos": num_videos}


FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined only when run as a program); generate() checks them."""
  flags.DEFINE_string("output_dir", None,
                      "Output directory; files go to OUTPUT_DIR/frame/ and OUTPUT_DIR/video/.")
  flags.DEFINE_integer("num_train_files", 20, "Number of train files.")
  flags.DEFINE_integer("num_validate_files", 60, "Number of validate files; the first 60 use "
                       "the held-out codes (HOLDOUT_VALIDATE_CODES) in order, others after.")
  flags.DEFINE_integer("num_test_files", 2, "Number of test files.")
  flags.DEFINE_integer("videos_per_file", 50, "Videos per file.")
  flags.DEFINE_integer("validate_videos_per_file", None,
                       "Videos per validate file (default: videos_per_file).")
  flags.DEFINE_integer("test_videos_per_file", None,
                       "Videos per test file (default: videos_per_file).")
  flags.DEFINE_integer("num_classes", NUM_CLASSES, "Number of classes in [1, 3862]; labels "
                       "are drawn from the first num_classes vocabulary entries.")
  flags.DEFINE_integer("seed", 0, "Random seed (same seed -> same bytes).")
  flags.DEFINE_float("difficulty", 0.5,
                     "Noise-to-signal knob in [0, 1]: 0 = easy (each label's signal on 90% of "
                     "the frames), 1 = hard (on 40%, strong per-video background noise).")
  flags.DEFINE_integer("min_frames", 60, "Minimum frames (seconds) per video.")
  flags.DEFINE_integer("max_frames", 360, "Maximum frames (seconds) per video.")
  flags.DEFINE_enum("levels", "both", list(LEVELS), "Which levels to write: frame, video or both.")
  flags.DEFINE_integer("num_threads", None,
                       "Worker threads (default min(4, cpus)); does not affect the output bytes.")
  flags.mark_flag_as_required("output_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Unexpected positional arguments: %r" % (argv[1:],))
  names = list(inspect.signature(generate).parameters)[1:]  # a flag for each but output_dir
  try:
    with interrupts.handling("synthetic_data"):  # SIGTERM/SIGINT: exit status 143/130
      generate(FLAGS.output_dir, **{name: FLAGS[name].value for name in names})
  except (ValueError, OSError) as e:  # a bad flag, an unwritable --output_dir: one line
    raise SystemExit("ERROR: %s" % e)


if __name__ == "__main__":
  define_flags()
  app.run(main)
