"""Synthetic YouTube-8M (2018) data with a planted, learnable signal.

Writes TFRecord files in exactly the layout and record format of the real
YouTube-8M 2018 release, so that the readers / training / evaluation code of
this project can be exercised end to end without the real data:

  OUTPUT_DIR/frame/{train,validate,test}<CODE>.tfrecord   (SequenceExample)
  OUTPUT_DIR/video/{train,validate,test}<CODE>.tfrecord   (Example)

Record format
-------------
Frame level (`tf.train.SequenceExample`):
  context  `id`      bytes_list, one 4-char alphanumeric video id
  context  `labels`  int64_list, sorted unique class ids (EMPTY for test files)
  feature_lists `rgb`   one bytes entry per frame, 1024 raw uint8 bytes each
  feature_lists `audio` one bytes entry per frame, 128 raw uint8 bytes each
Video level (`tf.train.Example`):
  `id`, `labels` as above, `mean_rgb` (1024 floats), `mean_audio` (128 floats).

Quantization follows the real data: a float x in [-2, 2] is stored as the
uint8 q = clip(round((x + 2 - 4/512) * 255/4), 0, 255) and readers dequantize
with x = q * 4/255 + 4/512 - 2.  `mean_rgb` / `mean_audio` are the means over
frames of the DEQUANTIZED frame values, so both levels describe the same
videos (same ids, same labels) consistently.

File names
----------
CODE is a 2-char code over [0-9A-Za-z] (62**2 = 3844 possible codes per
split, the size of the real splits).  Train and test files use the codes in
sorted order (00, 01, ..., 0z, 10, ...).  The first 60 validate files use
exactly `HOLDOUT_VALIDATE_CODES` (the held-out validation files of the
original solution's evaluation code); if fewer than 60 validate files are
requested only the first N of those codes are used.  Further validate files
use the remaining codes in sorted order.  Every file is written to a hidden
temporary name in the same directory and atomically renamed.

Labels
------
The number of labels per video is 1 + Poisson(2) (capped at 20 and at
num_classes), i.e. ~3 on average as in the real data.  The first label is
drawn proportionally to `TrainVideoCount` of `vocabulary.csv` (restricted to
the first num_classes classes), so class frequencies follow the real long
tail.  Each further label is, with probability 1/2, drawn (again by
frequency) from the same `Vertical1` as the first label, otherwise from the
global distribution, which makes labels mildly correlated.  Labels are unique.

Planted signal
--------------
Every class c has a fixed random direction (a unit vector u_c, drawn from the
seed for all 3862 classes, independent of --num_classes) in rgb space and in
audio space; its prototype is p_c = AMPLITUDE * sqrt(D) * u_c, i.e. per-dim
RMS AMPLITUDE (0.15).  For every video, each label's prototype is added to
one random contiguous window of frames covering a fraction `active_fraction`
of the video (windows of different labels overlap at random).  All frames
additionally carry a small fixed global per-dim offset N(0, 0.05^2), a
per-video random background vector N(0, background_std^2) and per-frame
noise (a 256-level discretized N(0, frame_noise_std^2), for speed); values
are clipped to [-2, 2] by the uint8 quantization.  The background and noise
are independent of the labels, so the frame features and their means are
informative about the labels (linear in the mean features; at frame level
the active frames form class-specific clusters - learnable by NetVLAD and by
MoE/logistic on the means), while a per-class constant (label-frequency
prior) gains nothing.  Test videos carry the signal of their (hidden) labels
too, but their `labels` field is empty.  `class_directions()`,
`class_prototypes()` and `global_offset()` expose the ground truth, e.g. the
oracle score of class c for a video is (mean_features - offset) . u_c.

--difficulty d in [0, 1] (default 0.5) scales the noise-to-signal ratio:
  active_fraction  = 0.9 - 0.5 d      (0.9 .. 0.4 of the frames per label)
  background_std   = 0.15 + 0.30 d    (per-video background, per dim)
  frame_noise_std  = 0.20 + 0.20 d    (per-frame noise, per dim)
Per-dim frame feature std is ~0.35 (d=0), ~0.47 (d=0.5), ~0.62 (d=1).  The
SNR of the oracle score on mean rgb features is roughly
active_fraction * 0.15 * 32 / background_std: ~29 / ~10 / ~4.3.  Measured on
1000 train / 1000 validate videos with 3862 classes, a ridge regression on
the video-level means reaches GAP ~0.81 / ~0.61 / ~0.30 against ~0.04 for
the label-frequency prior.

Determinism
-----------
Global quantities (prototypes, offset, video ids) come from
`np.random.default_rng([seed, K])` for fixed K; each file's content comes from
`np.random.default_rng([seed, split_index, file_index])`.  Protos are
serialized deterministically, so the same flags + seed give byte-identical
files, independent of --num_threads.

Flags (defaults)
----------------
  --output_dir (required)      --levels=both (frame | video | both)
  --num_train_files=20         --num_validate_files=60   --num_test_files=2
  --videos_per_file=50         --validate_videos_per_file, --test_videos_per_file
                               (default: --videos_per_file)
  --num_classes=3862 (1..3862) --seed=0                  --difficulty=0.5
  --min_frames=60 --max_frames=360 (uniform per video; ~20% have > 300)
  --num_threads (default min(4, cpus); output does not depend on it)
`generate(output_dir, ...)` takes the same arguments and returns a summary
dict (file lists per level/split, codes, videos/frames per split, bytes).

Usage:
  python -m youtube-8m.synthetic_data --output_dir=/tmp/yt8m_synth \
      --num_train_files=10 --num_validate_files=60 --videos_per_file=50
"""

import concurrent.futures
import csv
import os
import statistics
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging

from .dataset_layout import HOLDOUT_VALIDATE_CODES, NUM_CLASSES

ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
ALL_CODES = tuple(a + b for a in ALPHABET for b in ALPHABET)  # sorted, 3844
MAX_FILES_PER_SPLIT = len(ALL_CODES)
ID_LENGTH = 4
MAX_VIDEOS = len(ALPHABET) ** ID_LENGTH

SPLITS = ('train', 'validate', 'test')
LEVELS = ('frame', 'video', 'both')
TOTAL_CLASSES = NUM_CLASSES
RGB_DIM = 1024
AUDIO_DIM = 128
FEATURE_DIM = RGB_DIM + AUDIO_DIM
AMPLITUDE = 0.15
MAX_LABELS_PER_VIDEO = 20
SAME_VERTICAL_PROB = 0.5
GLOBAL_OFFSET_STD = 0.05

QUANT_SCALE = 4.0 / 255.0
QUANT_BIAS = 4.0 / 512.0 - 2.0

_SEED_PROTOTYPES = 1001
_SEED_OFFSET = 1002
_SEED_IDS = 1003

VOCABULARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'vocabulary.csv')


# ---------------------------------------------------------------------------
# Helpers (public so tests / other tools can use them).
# ---------------------------------------------------------------------------
def _tf():
  """TensorFlow, imported lazily so that flag errors / --help are instant."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def quantize(x):
  """Float array in [-2, 2] -> uint8 array (real YouTube-8M convention)."""
  q = (np.asarray(x, dtype=np.float32) - np.float32(QUANT_BIAS)) * np.float32(
      1.0 / QUANT_SCALE)
  np.rint(q, out=q)
  np.clip(q, 0, 255, out=q)
  return q.astype(np.uint8)


def dequantize(q):
  """uint8 array -> float32 array: q * 4/255 + 4/512 - 2."""
  return (np.asarray(q, dtype=np.float64) * QUANT_SCALE + QUANT_BIAS).astype(
      np.float32)


def difficulty_params(difficulty):
  """Maps --difficulty in [0, 1] to the noise / signal parameters."""
  d = float(difficulty)
  return {
      'active_fraction': 0.9 - 0.5 * d,
      'background_std': 0.15 + 0.3 * d,
      'frame_noise_std': 0.20 + 0.20 * d,
      'amplitude': AMPLITUDE,
  }


def class_directions(seed, num_classes=TOTAL_CLASSES):
  """Unit class directions: (rgb [num_classes, 1024], audio [num_classes, 128]).

  Drawn for all 3862 classes from the seed and then sliced, so class c has
  the same direction whatever num_classes is.
  """
  rng = np.random.default_rng([seed, _SEED_PROTOTYPES])
  rgb = rng.standard_normal((TOTAL_CLASSES, RGB_DIM))
  audio = rng.standard_normal((TOTAL_CLASSES, AUDIO_DIM))
  rgb /= np.linalg.norm(rgb, axis=1, keepdims=True)
  audio /= np.linalg.norm(audio, axis=1, keepdims=True)
  return rgb[:num_classes], audio[:num_classes]


def class_prototypes(seed, num_classes=TOTAL_CLASSES):
  """Per-class additive prototypes [num_classes, 1152] (rgb then audio), f32."""
  rgb, audio = class_directions(seed, num_classes)
  return np.concatenate(
      [rgb * (AMPLITUDE * np.sqrt(RGB_DIM)),
       audio * (AMPLITUDE * np.sqrt(AUDIO_DIM))], axis=1).astype(np.float32)


def global_offset(seed):
  """Fixed per-dim offset [1152] shared by all videos of a dataset (float32)."""
  rng = np.random.default_rng([seed, _SEED_OFFSET])
  return (rng.standard_normal(FEATURE_DIM) * GLOBAL_OFFSET_STD).astype(
      np.float32)


def load_vocabulary(path=VOCABULARY_PATH):
  """Returns (train_video_counts int64 [3862], vertical1 list of str)."""
  counts = {}
  verticals = {}
  with open(path, newline='', encoding='utf-8') as f:
    for row in csv.DictReader(f):
      idx = int(row['Index'])
      counts[idx] = int(row['TrainVideoCount'])
      verticals[idx] = (row.get('Vertical1') or '').strip()
  n = max(counts) + 1
  if sorted(counts) != list(range(n)):
    raise ValueError('vocabulary %s: Index column is not 0..N-1' % path)
  return (np.array([counts[i] for i in range(n)], dtype=np.int64),
          [verticals[i] for i in range(n)])


def file_codes(split, num_files):
  """The 2-char file codes used for `num_files` files of `split`."""
  if split == 'validate':
    held = list(HOLDOUT_VALIDATE_CODES[:num_files])
    if num_files <= len(HOLDOUT_VALIDATE_CODES):
      return held
    held_set = set(HOLDOUT_VALIDATE_CODES)
    others = [c for c in ALL_CODES if c not in held_set]
    return held + others[:num_files - len(held)]
  return list(ALL_CODES[:num_files])


def make_video_ids(seed, count):
  """`count` unique 4-char alphanumeric ids, deterministic from the seed."""
  rng = np.random.default_rng([seed, _SEED_IDS])
  nums = rng.choice(MAX_VIDEOS, size=count, replace=False)
  base = len(ALPHABET)
  ids = []
  for n in nums.tolist():
    chars = []
    for _ in range(ID_LENGTH):
      n, r = divmod(n, base)
      chars.append(ALPHABET[r])
    ids.append(''.join(chars))
  return ids


class _LabelSampler(object):
  """Samples label sets with the real long-tail frequencies."""

  def __init__(self, num_classes, vocab_path=VOCABULARY_PATH):
    counts, verticals = load_vocabulary(vocab_path)
    if num_classes > len(counts):
      raise ValueError('num_classes=%d exceeds the vocabulary size %d'
                       % (num_classes, len(counts)))
    self.num_classes = num_classes
    w = counts[:num_classes].astype(np.float64)
    self.weights = w / w.sum()
    self.cum = np.cumsum(self.weights)
    verticals = verticals[:num_classes]
    groups = {}
    for i, v in enumerate(verticals):
      if v and v != '(Unknown)':
        groups.setdefault(v, []).append(i)
    self.group_of = np.full(num_classes, -1, dtype=np.int64)
    self.groups = []
    for gi, v in enumerate(sorted(groups)):
      members = np.array(groups[v], dtype=np.int64)
      self.group_of[members] = gi
      self.groups.append(members)
    self.max_labels = min(MAX_LABELS_PER_VIDEO, num_classes)

  @staticmethod
  def _pick(rng, candidates, weights):
    total = weights.sum()
    if total <= 0:
      return None
    cum = np.cumsum(weights)
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side='right'))
    return int(candidates[min(i, len(candidates) - 1)])

  def sample(self, rng):
    k = min(1 + int(rng.poisson(2.0)), self.max_labels)
    first = int(np.searchsorted(self.cum, rng.random() * self.cum[-1],
                                side='right'))
    first = min(first, self.num_classes - 1)
    chosen = [first]
    mask = np.ones(self.num_classes, dtype=bool)
    mask[first] = False
    group = self.group_of[first]
    while len(chosen) < k:
      pick = None
      if group >= 0 and rng.random() < SAME_VERTICAL_PROB:
        members = self.groups[group]
        pick = self._pick(rng, members, self.weights[members] * mask[members])
      if pick is None:
        pick = self._pick(rng, np.arange(self.num_classes),
                          self.weights * mask)
      if pick is None:  # no class left
        break
      chosen.append(pick)
      mask[pick] = False
    return sorted(chosen)


# ---------------------------------------------------------------------------
# Generation.
# ---------------------------------------------------------------------------
def _bytes_feature(values):
  train = _tf().train
  return train.Feature(bytes_list=train.BytesList(value=values))


def _int64_feature(values):
  train = _tf().train
  return train.Feature(int64_list=train.Int64List(value=values))


def _float_feature(values):
  train = _tf().train
  return train.Feature(float_list=train.FloatList(value=values))


def _varint(n):
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _bytes_feature_list_header(length):
  """Wire-format prefix of one `Feature{bytes_list{value: <length bytes>}}`
  entry of a FeatureList (field 1 everywhere)."""
  value = b'\x0a' + _varint(length)
  bytes_list_size = len(value) + length
  bytes_list = b'\x0a' + _varint(bytes_list_size)
  feature_size = len(bytes_list) + bytes_list_size
  return np.frombuffer(b'\x0a' + _varint(feature_size) + bytes_list + value,
                       dtype=np.uint8)


_HEADERS = {}


def encode_bytes_feature_list(q):
  """Serialized `tf.train.FeatureList` with one bytes entry per row of q.

  Equivalent to building the FeatureList with one
  `Feature(bytes_list=BytesList(value=[row.tobytes()]))` per row, but done
  with one numpy copy (this is the hot path of the generator).
  """
  q = np.asarray(q, dtype=np.uint8)
  num_rows, length = q.shape
  header = _HEADERS.get(length)
  if header is None:
    header = _HEADERS.setdefault(length, _bytes_feature_list_header(length))
  buf = np.empty((num_rows, len(header) + length), dtype=np.uint8)
  buf[:, :len(header)] = header
  buf[:, len(header):] = q
  return buf.tobytes()


def _frame_record(vid, labels, q):
  """Serialized SequenceExample for quantized frames q [T, 1152] uint8."""
  ex = _tf().train.SequenceExample()
  ctx = ex.context.feature
  ctx['id'].bytes_list.value.append(vid.encode('ascii'))
  ctx['labels'].int64_list.value.extend(labels)
  fl = ex.feature_lists.feature_list
  fl['rgb'].MergeFromString(encode_bytes_feature_list(q[:, :RGB_DIM]))
  fl['audio'].MergeFromString(encode_bytes_feature_list(q[:, RGB_DIM:]))
  return ex.SerializeToString(deterministic=True)


def _video_record(vid, labels, mean_rgb, mean_audio):
  train = _tf().train
  ex = train.Example(features=train.Features(feature={
      'id': _bytes_feature([vid.encode('ascii')]),
      'labels': _int64_feature(labels),
      'mean_rgb': _float_feature(mean_rgb),
      'mean_audio': _float_feature(mean_audio),
  }))
  return ex.SerializeToString(deterministic=True)


def gaussian_noise_table(std):
  """256 equiprobable levels of N(0, std^2) in quantization units (int16).

  Per-frame noise is drawn as table[uniform uint8]: a 256-level discretized
  Gaussian (truncated at ~2.7 sigma), ~3x cheaper than float normals.
  """
  nd = statistics.NormalDist()
  z = np.array([nd.inv_cdf((i + 0.5) / 256.0) for i in range(256)])
  return np.rint(z * (std / QUANT_SCALE)).astype(np.int16)


def _generate_video(rng, sampler, prototypes_q, offset_q, params, noise_table,
                    min_frames, max_frames):
  """Returns (labels, quantized frames uint8 [T, 1152]).

  Works in quantization units: value = (x - QUANT_BIAS) / QUANT_SCALE.  The
  noise-free part (offset + background + active prototypes) is piecewise
  constant in time, so it is computed per segment and then repeated.
  """
  num_frames = int(rng.integers(min_frames, max_frames + 1))
  labels = sampler.sample(rng)
  background = rng.standard_normal(FEATURE_DIM, dtype=np.float32)
  background *= np.float32(params['background_std'] / QUANT_SCALE)
  background += offset_q
  window = max(1, int(round(params['active_fraction'] * num_frames)))
  starts = rng.integers(0, num_frames - window + 1, size=len(labels)).tolist()
  bounds = sorted(set([0, num_frames] + starts +
                      [s + window for s in starts]))
  segments = np.empty((len(bounds) - 1, FEATURE_DIM), dtype=np.float32)
  for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
    segments[i] = background
    for label, s in zip(labels, starts):
      if s <= a and b <= s + window:
        segments[i] += prototypes_q[label]
  np.rint(segments, out=segments)
  np.clip(segments, -512, 767, out=segments)
  clean = np.repeat(segments.astype(np.int16), np.diff(bounds), axis=0)
  clean += noise_table[rng.integers(0, 256, size=(num_frames, FEATURE_DIM),
                                    dtype=np.uint8)]
  np.clip(clean, 0, 255, out=clean)
  return labels, clean.astype(np.uint8)


def _temp_path(final_path):
  """Hidden temporary name in the same directory (not matched by *.tfrecord)."""
  d, name = os.path.split(final_path)
  return os.path.join(d, '.%s.partial-%d' % (name, os.getpid()))


def _generate_file(task):
  """Generates one file per requested level; returns stats.

  Records are streamed to hidden temporary files which are renamed to their
  final names (os.replace, atomic) only once complete.
  """
  (seed, split_index, file_index, split, ids, paths, sampler, prototypes_q,
   offset_q, params, noise_table, min_frames, max_frames) = task
  rng = np.random.default_rng([seed, split_index, file_index])
  levels = sorted(paths)
  temps = {level: _temp_path(paths[level]) for level in levels}
  writers = {}
  num_frames = 0
  try:
    for level in levels:
      writers[level] = _tf().io.TFRecordWriter(temps[level])
    for vid in ids:
      labels, q = _generate_video(rng, sampler, prototypes_q, offset_q,
                                  params, noise_table, min_frames, max_frames)
      stored_labels = [] if split == 'test' else labels
      num_frames += q.shape[0]
      if 'frame' in writers:
        writers['frame'].write(_frame_record(vid, stored_labels, q))
      if 'video' in writers:
        means = (q.sum(axis=0, dtype=np.int64) / float(q.shape[0]) *
                 QUANT_SCALE + QUANT_BIAS).astype(np.float32)
        writers['video'].write(_video_record(
            vid, stored_labels, means[:RGB_DIM], means[RGB_DIM:]))
    for level in levels:
      writers.pop(level).close()
      os.replace(temps[level], paths[level])
  finally:
    for writer in writers.values():
      writer.close()
    for level in levels:
      if os.path.exists(temps[level]):
        os.remove(temps[level])
  num_bytes = sum(os.path.getsize(paths[level]) for level in levels)
  return {'num_videos': len(ids), 'num_frames': num_frames,
          'num_bytes': num_bytes}


def _check(cond, flag, message):
  if not cond:
    raise ValueError('--%s: %s' % (flag, message))


def validate_args(num_train_files, num_validate_files, num_test_files,
                  videos_per_file, validate_videos_per_file,
                  test_videos_per_file, num_classes, difficulty, min_frames,
                  max_frames, levels, num_threads):
  """Raises ValueError naming the offending flag."""
  for name, value in (('num_train_files', num_train_files),
                      ('num_validate_files', num_validate_files),
                      ('num_test_files', num_test_files)):
    _check(0 <= value <= MAX_FILES_PER_SPLIT, name,
           'must be in [0, %d], got %r' % (MAX_FILES_PER_SPLIT, value))
  _check(videos_per_file >= 1, 'videos_per_file',
         'must be >= 1, got %r' % videos_per_file)
  for name, value in (('validate_videos_per_file', validate_videos_per_file),
                      ('test_videos_per_file', test_videos_per_file)):
    _check(value is None or value >= 1, name,
           'must be >= 1 (or unset), got %r' % value)
  _check(1 <= num_classes <= TOTAL_CLASSES, 'num_classes',
         'must be in [1, %d], got %r' % (TOTAL_CLASSES, num_classes))
  _check(0.0 <= difficulty <= 1.0, 'difficulty',
         'must be in [0, 1], got %r' % difficulty)
  _check(min_frames >= 1, 'min_frames', 'must be >= 1, got %r' % min_frames)
  _check(max_frames >= min_frames, 'max_frames',
         'must be >= --min_frames (%r), got %r' % (min_frames, max_frames))
  _check(max_frames <= 100000, 'max_frames',
         'must be <= 100000, got %r' % max_frames)
  _check(levels in LEVELS, 'levels',
         'must be one of %s, got %r' % ('/'.join(LEVELS), levels))
  _check(num_threads is None or num_threads >= 1, 'num_threads',
         'must be >= 1, got %r' % num_threads)


def generate(output_dir, num_train_files=20, num_validate_files=60,
             num_test_files=2, videos_per_file=50,
             validate_videos_per_file=None, test_videos_per_file=None,
             num_classes=TOTAL_CLASSES, seed=0, difficulty=0.5,
             min_frames=60, max_frames=360, levels='both', num_threads=None):
  """Generates a synthetic YouTube-8M dataset under `output_dir`.

  Returns a dict with keys:
    output_dir, levels, seed, num_classes, difficulty,
    files:      {level: {split: [paths]}} for the written levels,
    codes:      {split: [2-char codes]},
    num_videos: {split: int}, num_frames: {split: int},
    num_bytes (total bytes written), seconds (wall time).
  """
  validate_args(num_train_files, num_validate_files, num_test_files,
                videos_per_file, validate_videos_per_file,
                test_videos_per_file, num_classes, difficulty, min_frames,
                max_frames, levels, num_threads)
  per_file = {
      'train': videos_per_file,
      'validate': (videos_per_file if validate_videos_per_file is None
                   else validate_videos_per_file),
      'test': (videos_per_file if test_videos_per_file is None
               else test_videos_per_file),
  }
  num_files = {'train': num_train_files, 'validate': num_validate_files,
               'test': num_test_files}
  total_videos = sum(num_files[s] * per_file[s] for s in SPLITS)
  _check(total_videos <= MAX_VIDEOS // 2, 'videos_per_file',
         'too many videos in total (%d > %d)' % (total_videos,
                                                 MAX_VIDEOS // 2))
  out_levels = ('frame', 'video') if levels == 'both' else (levels,)
  for level in out_levels:
    os.makedirs(os.path.join(output_dir, level), exist_ok=True)

  _tf()  # import once in the main thread, before the worker threads start
  start_time = time.time()  # generation time, excluding the TF import
  sampler = _LabelSampler(num_classes)
  params = difficulty_params(difficulty)
  prototypes_q = class_prototypes(seed, num_classes) / np.float32(QUANT_SCALE)
  offset_q = (global_offset(seed) - np.float32(QUANT_BIAS)) / np.float32(
      QUANT_SCALE)
  noise_table = gaussian_noise_table(params['frame_noise_std'])
  ids = make_video_ids(seed, total_videos)

  tasks = []
  files = {level: {s: [] for s in SPLITS} for level in out_levels}
  codes = {}
  pos = 0
  for split_index, split in enumerate(SPLITS):
    codes[split] = file_codes(split, num_files[split])
    for file_index, code in enumerate(codes[split]):
      name = '%s%s.tfrecord' % (split, code)
      paths = {}
      for level in out_levels:
        paths[level] = os.path.join(output_dir, level, name)
        files[level][split].append(paths[level])
      file_ids = ids[pos:pos + per_file[split]]
      pos += per_file[split]
      tasks.append((seed, split_index, file_index, split, file_ids, paths,
                    sampler, prototypes_q, offset_q, params, noise_table,
                    min_frames, max_frames))

  for level in out_levels:
    expected = set(os.path.basename(p) for v in files[level].values()
                   for p in v)
    stale = sorted(n for n in os.listdir(os.path.join(output_dir, level))
                   if n.endswith('.tfrecord') and n not in expected)
    if stale:
      logging.warning('%s/%s already holds %d other .tfrecord files (e.g. %s) '
                      'that glob patterns will also match.', output_dir,
                      level, len(stale), stale[0])

  if num_threads is None:
    num_threads = min(4, os.cpu_count() or 1)
  num_videos = {s: 0 for s in SPLITS}
  num_frames_by_split = {s: 0 for s in SPLITS}
  num_bytes = 0
  with concurrent.futures.ThreadPoolExecutor(max_workers=num_threads) as ex:
    for task, stats in zip(tasks, ex.map(_generate_file, tasks)):
      split = task[3]
      num_videos[split] += stats['num_videos']
      num_frames_by_split[split] += stats['num_frames']
      num_bytes += stats['num_bytes']
  seconds = time.time() - start_time
  summary = {
      'output_dir': output_dir,
      'levels': list(out_levels),
      'seed': seed,
      'num_classes': num_classes,
      'difficulty': difficulty,
      'params': params,
      'files': files,
      'codes': codes,
      'num_videos': num_videos,
      'num_frames': num_frames_by_split,
      'num_bytes': num_bytes,
      'seconds': seconds,
  }
  total_videos = sum(num_videos.values())
  logging.info(
      'Wrote %d files (%s level) to %s: %d videos (train=%d, validate=%d, '
      'test=%d), %d frames, %.1f MB in %.1fs (%.0f videos/s).',
      sum(len(v) for lv in files.values() for v in lv.values()),
      '+'.join(out_levels), os.path.abspath(output_dir), total_videos,
      num_videos['train'], num_videos['validate'], num_videos['test'],
      sum(num_frames_by_split.values()), num_bytes / 1e6, seconds,
      total_videos / max(seconds, 1e-9))
  return summary


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------
FLAGS = flags.FLAGS


def define_flags():
  """Defines the CLI flags (only when run as a program, to avoid clashes)."""
  flags.DEFINE_string('output_dir', None,
                      'Output directory; files go to OUTPUT_DIR/frame/ and '
                      'OUTPUT_DIR/video/.')
  flags.DEFINE_integer('num_train_files', 20, 'Number of train files.')
  flags.DEFINE_integer('num_validate_files', 60,
                       'Number of validate files. The first min(N, 60) use '
                       'the 60 held-out codes (HOLDOUT_VALIDATE_CODES), in '
                       'order; extra files use other codes.')
  flags.DEFINE_integer('num_test_files', 2, 'Number of test files.')
  flags.DEFINE_integer('videos_per_file', 50, 'Videos per file.')
  flags.DEFINE_integer('validate_videos_per_file', None,
                       'Videos per validate file (default: videos_per_file).')
  flags.DEFINE_integer('test_videos_per_file', None,
                       'Videos per test file (default: videos_per_file).')
  flags.DEFINE_integer('num_classes', TOTAL_CLASSES,
                       'Number of classes in [1, 3862]; labels are drawn from '
                       'the first num_classes vocabulary entries.')
  flags.DEFINE_integer('seed', 0, 'Random seed (same seed -> same bytes).')
  flags.DEFINE_float('difficulty', 0.5,
                     'Noise-to-signal knob in [0, 1]: 0 = easy (each label\'s '
                     'signal on 90% of the frames, little noise), 1 = hard '
                     '(signal on 40% of the frames, strong per-video '
                     'background noise). See the module docstring.')
  flags.DEFINE_integer('min_frames', 60, 'Minimum frames (seconds) per video.')
  flags.DEFINE_integer('max_frames', 360, 'Maximum frames (seconds) per video.')
  flags.DEFINE_enum('levels', 'both', list(LEVELS),
                    'Which levels to write: frame, video or both.')
  flags.DEFINE_integer('num_threads', None,
                       'Worker threads (default min(4, cpus)); does not '
                       'affect the output bytes.')
  flags.mark_flag_as_required('output_dir')

  def _range(name, lo, hi):
    flags.register_validator(
        name, lambda v: v is not None and lo <= v <= hi,
        message='--%s must be in [%s, %s]' % (name, lo, hi))

  _range('num_train_files', 0, MAX_FILES_PER_SPLIT)
  _range('num_validate_files', 0, MAX_FILES_PER_SPLIT)
  _range('num_test_files', 0, MAX_FILES_PER_SPLIT)
  _range('videos_per_file', 1, MAX_VIDEOS)
  _range('num_classes', 1, TOTAL_CLASSES)
  _range('difficulty', 0.0, 1.0)
  _range('min_frames', 1, 100000)
  _range('max_frames', 1, 100000)
  for name in ('validate_videos_per_file', 'test_videos_per_file',
               'num_threads'):
    flags.register_validator(
        name, lambda v: v is None or v >= 1,
        message='--%s must be >= 1' % name)
  flags.register_multi_flags_validator(
      ['min_frames', 'max_frames'],
      lambda d: d['min_frames'] is None or d['max_frames'] is None or
      d['min_frames'] <= d['max_frames'],
      message='--max_frames must be >= --min_frames')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Unexpected positional arguments: %r' % (argv[1:],))
  try:
    generate(
        FLAGS.output_dir,
        num_train_files=FLAGS.num_train_files,
        num_validate_files=FLAGS.num_validate_files,
        num_test_files=FLAGS.num_test_files,
        videos_per_file=FLAGS.videos_per_file,
        validate_videos_per_file=FLAGS.validate_videos_per_file,
        test_videos_per_file=FLAGS.test_videos_per_file,
        num_classes=FLAGS.num_classes,
        seed=FLAGS.seed,
        difficulty=FLAGS.difficulty,
        min_frames=FLAGS.min_frames,
        max_frames=FLAGS.max_frames,
        levels=FLAGS.levels,
        num_threads=FLAGS.num_threads)
  except ValueError as e:
    raise app.UsageError(str(e))


if __name__ == '__main__':
  define_flags()
  app.run(main)
