"""Evaluation metrics for the YouTube-8M video-level classification task (numpy).

Inputs are dense: `predictions` float [N, C], `actuals`/`labels` [N, C] of 0/1
(bool or numeric; an entry is a true label when it is > 0). NaN scores are
rejected with ValueError.

Deterministic tie rules (the contract the tests check against brute force):
1. Ranking the classes of one video (hit@1, the top-L classes of PERR, the
   top-k classes that feed GAP and mAP): descending score, then ascending class
   index, i.e. `np.argsort(-row, kind="stable")` (and `np.argmax` for hit@1).
2. Ranking a pool of (score, label) pairs (GAP, AP, per-class AP): descending
   score and, among equal scores, negatives before positives (pessimistic).
   The result depends only on the multiset of pairs: not on video order, batch
   size or batch order. -0.0 equals 0.0.
"""

import numbers

import numpy as np


def _as_float(array):
  array = np.asarray(array)
  return array if array.dtype in (np.float32, np.float64) else array.astype(np.float64)


def _as_bool(array):
  array = np.asarray(array)
  return array if array.dtype == np.bool_ else array > 0


def _prepare_dense(predictions, actuals):
  """Validates [N, C] inputs; returns (float predictions, bool labels)."""
  predictions, actuals = _as_float(predictions), _as_bool(actuals)
  if predictions.ndim != 2:
    raise ValueError("predictions must be a 2-D [num_videos, num_classes] array, got shape %s"
                     % (predictions.shape,))
  if actuals.shape != predictions.shape:
    raise ValueError("predictions and actuals must have the same shape, got %s and %s"
                     % (predictions.shape, actuals.shape))
  return predictions, actuals


def _prepare_flat(predictions, actuals):
  """Validates a pool of pairs; returns 1-D (float scores, bool labels)."""
  predictions, actuals = _as_float(predictions).ravel(), _as_bool(actuals).ravel()
  if predictions.size != actuals.size:
    raise ValueError("predictions and actuals must have the same number of elements, "
                     "got %d and %d" % (predictions.size, actuals.size))
  if np.isnan(predictions).any():
    raise ValueError("predictions contain NaN")
  return predictions, actuals


def _positive_int(value, name, allow_none=False):
  if value is None and allow_none:
    return None
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
      or value <= 0):
    raise ValueError("%s must be a positive integer%s, got %r"
                     % (name, " or None" if allow_none else "", value))
  return int(value)


def _top_k_indices(predictions, k):
  """intp [N, min(k, C)]: `np.argsort(-predictions, axis=1, kind="stable")[:, :k]` (tie rule
  1), through an O(N*C) partition when k is small."""
  num_videos, num_classes = predictions.shape
  k = min(int(k), num_classes)
  if num_videos == 0 or k <= 0:
    return np.empty((num_videos, max(k, 0)), dtype=np.intp)
  if 4 * k >= num_classes:
    return np.argsort(-predictions, axis=1, kind="stable")[:, :k]
  threshold = np.partition(predictions, num_classes - k, axis=1)[:, num_classes - k]
  keep = predictions >= threshold[:, None]
  num_kept = np.count_nonzero(keep, axis=1)
  if (num_kept < k).any():
    raise ValueError("predictions contain NaN")
  # Rows whose ties at the k-th score straddle the cut keep the lowest tied class ids.
  ambiguous = np.flatnonzero(num_kept > k)
  if ambiguous.size:
    sub, thr = predictions[ambiguous], threshold[ambiguous, None]
    better, tied = sub > thr, sub == thr
    needed = k - np.count_nonzero(better, axis=1)
    keep[ambiguous] = better | (tied & (np.cumsum(tied, axis=1) <= needed[:, None]))
  idx = (np.flatnonzero(keep) % num_classes).reshape(num_videos, k)  # ascending class ids
  order = np.argsort(-np.take_along_axis(predictions, idx, axis=1), axis=1, kind="stable")
  return np.take_along_axis(idx, order, axis=1)


def _perr_sum(predictions, actuals, num_labels, ranked):
  """Sum over videos of PERR; `ranked` holds at least max(num_labels) columns."""
  max_labels = int(num_labels.max()) if num_labels.size else 0
  if max_labels == 0:
    return 0.0
  top = ranked[:, :max_labels]
  hits = (np.take_along_axis(actuals, top, axis=1)
          & (np.take_along_axis(predictions, top, axis=1) > 0)
          & (np.arange(max_labels) < num_labels[:, None]))
  return float((np.count_nonzero(hits, axis=1) / np.maximum(num_labels, 1)).sum())


def calculate_hit_at_one(predictions, actuals):
  """Fraction of videos whose best class (np.argmax) is a true label; 0.0 if empty."""
  predictions, actuals = _prepare_dense(predictions, actuals)
  num_videos = predictions.shape[0]
  if num_videos == 0 or predictions.shape[1] == 0:
    return 0.0
  top = np.argmax(predictions, axis=1)
  return float(np.count_nonzero(actuals[np.arange(num_videos), top]) / num_videos)


def calculate_precision_at_equal_recall_rate(predictions, actuals):
  """PERR averaged over all N videos: a video with L true labels scores (#true labels with
  score > 0 among its L best classes, tie rule 1) / L; a video without labels scores 0."""
  predictions, actuals = _prepare_dense(predictions, actuals)
  if predictions.shape[0] == 0:
    return 0.0
  num_labels = np.count_nonzero(actuals, axis=1)
  ranked = _top_k_indices(predictions, int(num_labels.max()))
  return _perr_sum(predictions, actuals, num_labels, ranked) / predictions.shape[0]


def _pooled_average_precision(scores, labels, num_positives, top_n=None,
                              class_ids=None, num_class=1):
  """float64 [num_class]: non-interpolated AP of 1-D (score, bool label) pairs per class
  (class_ids None: all are class 0) over num_positives (int [num_class] or a scalar, which
  may count positives outside the pool); with top_n only the top_n ranked pairs of a class
  count, over min(top_n, P)."""
  denominators = np.asarray(num_positives, dtype=np.int64).reshape(num_class)
  if top_n is not None:
    denominators = np.minimum(denominators, top_n)
  result = np.zeros(num_class, dtype=np.float64)
  if not labels.any():
    return result
  # One sort of packed keys: class ascending, score descending, negatives first.
  distinct, score_rank = np.unique(scores, return_inverse=True)  # -0.0 == 0.0
  shift = np.uint64(max(1, (distinct.size - 1).bit_length()) + 1)
  keys = ((np.uint64(distinct.size - 1) - score_rank.astype(np.uint64)) << np.uint64(1)
          | labels.astype(np.uint64))
  if class_ids is not None:
    keys |= np.asarray(class_ids).astype(np.uint64) << shift
  keys = np.sort(keys)
  is_pos = (keys & np.uint64(1)).astype(bool)
  key_class = (keys >> shift).astype(np.intp)
  per_class = np.bincount(key_class, minlength=num_class)
  class_start = np.cumsum(per_class) - per_class
  pos_class = key_class[is_pos]
  pos_per_class = np.bincount(pos_class, minlength=num_class)
  # 1-based rank of each positive in its class, and among the positives of its class.
  rank = (np.flatnonzero(is_pos) - class_start[pos_class] + 1)[::-1]
  rank_among_pos = (np.arange(1, pos_class.size + 1)
                    - (np.cumsum(pos_per_class) - pos_per_class)[pos_class])[::-1]
  pos_class = pos_class[::-1]  # sums run from the worst-ranked positive up
  precision = rank_among_pos / rank
  if top_n is not None:
    precision[rank > top_n] = 0.0
  if num_class > 1:
    sums = np.bincount(pos_class, weights=precision, minlength=num_class)
  else:
    sums = np.array([precision.sum()])
  np.divide(sums, denominators, out=result, where=denominators > 0)
  return result


def _num_positives(given, labels, name):
  """`given` (default: the positives in `labels`, of which it may not have fewer) as int."""
  in_pool = int(np.count_nonzero(labels))
  if given is not None and given < in_pool:
    raise ValueError("%s (%s) is smaller than the number of positives in actuals (%d)"
                     % (name, given, in_pool))
  return in_pool if given is None else int(given)


def ap_at_n(predictions, actuals, n=20, total_num_positives=None):
  """Average precision of the top n pairs of a pool (tie rule 2): AP@n = sum_{i <= n}
  precision@i * rel(i) / min(n, P), P = `total_num_positives` (default: the positives in
  `actuals`). n=None: no cut-off, denominator P. 0.0 when P == 0."""
  n = _positive_int(n, "n", allow_none=True)
  scores, labels = _prepare_flat(predictions, actuals)
  total_num_positives = _num_positives(total_num_positives, labels, "total_num_positives")
  return float(_pooled_average_precision(scores, labels, total_num_positives, top_n=n)[0])


def ap(predictions, actuals):
  """Average precision of a pool of (score, label) pairs, no cut-off."""
  return ap_at_n(predictions, actuals, n=None)


def _flat_top_k(predictions, actuals, ranked):
  """(class ids, scores, labels) of the ranked pairs, video-major, 1-D."""
  scores = np.take_along_axis(predictions, ranked, axis=1).ravel()
  if np.isnan(scores).any():
    raise ValueError("predictions contain NaN")
  return ranked.ravel(), scores, np.take_along_axis(actuals, ranked, axis=1).ravel()


def calculate_gap(predictions, actuals, top_k=20):
  """Global Average Precision: the top_k classes of each video (k capped at C, tie rule 1)
  pooled as (score, is_true) pairs; GAP = sum_i precision@i * rel(i) / N_pos (tie rule 2),
  N_pos = all true (video, class) pairs, including those outside a top_k; 0.0 if N_pos == 0.
  """
  predictions, actuals = _prepare_dense(predictions, actuals)
  top_k = _positive_int(top_k, "top_k")
  total_positives = int(np.count_nonzero(actuals))
  if total_positives == 0:
    return 0.0
  _, scores, labels = _flat_top_k(predictions, actuals, _top_k_indices(predictions, top_k))
  return float(_pooled_average_precision(scores, labels, total_positives)[0])


def top_k_by_class(predictions, labels, k=20):
  """The top-k predictions of every video (tie rule 1) split by class, for mAP: lists of C
  arrays with the scores (float) and 0/1 labels (int32) of the videos, in video order, whose
  top-k holds class c; int64 [C] with the number of videos labelled c."""
  predictions, labels = _prepare_dense(predictions, labels)
  k = _positive_int(k, "k")
  num_class = predictions.shape[1]
  class_ids, scores, pair_labels = _flat_top_k(predictions, labels,
                                               _top_k_indices(predictions, k))
  order = np.argsort(class_ids, kind="stable")
  splits = np.cumsum(np.bincount(class_ids, minlength=num_class))[:-1]
  return (np.split(scores[order], splits),
          np.split(pair_labels[order].astype(np.int32), splits),
          np.count_nonzero(labels, axis=0).astype(np.int64))


class _Pool(object):
  """Parallel 1-D arrays accumulated in chunks (copied), concatenated when read."""

  def __init__(self, num_arrays):
    self._chunks = [[] for _ in range(num_arrays)]
    self.size = 0

  def append(self, *arrays):
    for chunks, array in zip(self._chunks, arrays):
      chunks.append(np.array(array, copy=True))  # never alias the caller's buffers
    self.size += arrays[0].size

  def arrays(self):
    for chunks in self._chunks:
      chunks[:] = [np.concatenate(chunks)] if chunks else []
    return tuple(chunks[0] if chunks else np.empty(0) for chunks in self._chunks)

  def clear(self):
    self.__init__(len(self._chunks))


class AveragePrecisionCalculator(object):
  """Pooled AP of (prediction, actual) pairs accumulated over batches (tie rule 2) over the
  accumulated `num_positives` P (which may count positives outside the pool). With `top_n`
  only the top_n ranked pairs count, over min(top_n, P); the pool is then pruned to its top_n
  pairs when it grows beyond 2 * top_n (which never changes the result)."""

  def __init__(self, top_n=None):
    self._top_n = _positive_int(top_n, "top_n", allow_none=True)
    self._pool = _Pool(2)
    self._total_positives = 0

  @property
  def heap_size(self):
    """Number of stored pairs."""
    return self._pool.size

  @property
  def num_accumulated_positives(self):
    return self._total_positives

  def accumulate(self, predictions, actuals, num_positives=None):
    """Adds a batch of pairs; `num_positives` (default: the positives in
    `actuals`, never fewer) is added to the denominator."""
    scores, labels = _prepare_flat(predictions, actuals)
    self._total_positives += _num_positives(num_positives, labels, "num_positives")
    self._pool.append(scores, labels)
    if self._top_n is not None and self._pool.size > 2 * self._top_n:
      scores, labels = self._pool.arrays()
      keep = np.lexsort((labels, -scores))[:self._top_n]
      self._pool.clear()
      self._pool.append(scores[keep], labels[keep])

  def clear(self):
    self._pool.clear()
    self._total_positives = 0

  def peek_ap_at_n(self):
    """AP of everything accumulated so far (0.0 without positives)."""
    scores, labels = self._pool.arrays()
    return float(_pooled_average_precision(scores, labels, self._total_positives,
                                           top_n=self._top_n)[0])

  ap = staticmethod(ap)
  ap_at_n = staticmethod(ap_at_n)


class MeanAveragePrecisionCalculator(object):
  """Per-class pooled AP accumulated over batches (tie rule 2); `top_n` applies per class:
  only the top_n ranked pairs of class c count, over min(top_n, P_c)."""

  def __init__(self, num_class, top_n=None):
    self._num_class = _positive_int(num_class, "num_class")
    self._top_n = _positive_int(top_n, "top_n", allow_none=True)
    self._pool = _Pool(3)  # class ids, scores, labels
    self._num_positives = np.zeros(self._num_class, dtype=np.int64)

  def accumulate(self, predictions_per_class, actuals_per_class, num_positives_per_class=None):
    """Adds one batch of num_class per-class lists (as from top_k_by_class); adds
    `num_positives_per_class` (default: the positives present) to the denominators."""
    if (len(predictions_per_class) != self._num_class
        or len(actuals_per_class) != self._num_class):
      raise ValueError("expected %d per-class lists, got %d predictions and %d actuals"
                       % (self._num_class, len(predictions_per_class), len(actuals_per_class)))
    predictions = [_as_float(p).ravel() for p in predictions_per_class]
    actuals = [_as_bool(a).ravel() for a in actuals_per_class]
    lengths = [p.size for p in predictions]
    if lengths != [a.size for a in actuals]:
      raise ValueError("per-class predictions and actuals have different lengths")
    class_ids = np.repeat(np.arange(self._num_class), lengths)
    scores, labels = _prepare_flat(np.concatenate(predictions), np.concatenate(actuals))
    in_batch = np.bincount(class_ids[labels], minlength=self._num_class)
    if num_positives_per_class is None:
      num_positives = in_batch
    else:
      num_positives = np.asarray(num_positives_per_class, dtype=np.int64).ravel()
      if num_positives.size != self._num_class:
        raise ValueError("num_positives_per_class must have %d entries" % self._num_class)
      if (num_positives < in_batch).any():
        raise ValueError("num_positives_per_class is smaller than the positives present "
                         "for some class")
    self._append(class_ids, scores, labels, num_positives)

  def _append(self, class_ids, scores, labels, num_positives):
    """Unchecked append of flat (class id, score, label) pairs."""
    self._num_positives += num_positives
    self._pool.append(class_ids, scores, labels)

  def clear(self):
    self._pool.clear()
    self._num_positives[:] = 0

  def is_empty(self):
    """True if no pair and no positive has been accumulated."""
    return self._pool.size == 0 and not self._num_positives.any()

  def peek_map_at_n(self):
    """List of num_class per-class APs (0.0 for classes without positives)."""
    class_ids, scores, labels = self._pool.arrays()
    return _pooled_average_precision(scores, labels, self._num_positives,
                                     top_n=self._top_n, class_ids=class_ids,
                                     num_class=self._num_class).tolist()

  def peek_global_ap(self):
    """AP of all stored pairs pooled across classes (no top_n) over all
    accumulated positives: the GAP when fed with top-k pairs."""
    _, scores, labels = self._pool.arrays()
    return float(_pooled_average_precision(scores, labels,
                                           int(self._num_positives.sum()))[0])


class EvaluationMetrics(object):
  """Accumulates hit@1, PERR, loss, GAP and per-class AP over evaluation batches of [N, C]
  predictions (C = num_class); top_k best classes per video feed GAP and mAP; top_n: optional
  per-class cut-off of the mAP."""

  def __init__(self, num_class, top_k, top_n=None):
    self._num_class = _positive_int(num_class, "num_class")
    self._top_k = _positive_int(top_k, "top_k")
    self._map_calculator = MeanAveragePrecisionCalculator(self._num_class, top_n=top_n)
    self.clear()

  def accumulate(self, predictions, labels, loss):
    """Adds one batch ([N, C] predictions and 0/1 labels, the batch-mean loss);
    returns its 'hit_at_one', 'perr' and 'loss'."""
    predictions, labels = _prepare_dense(predictions, labels)
    num_videos, num_class = predictions.shape
    if num_class != self._num_class:
      raise ValueError("expected predictions with %d classes, got %d"
                       % (self._num_class, num_class))
    loss = float(loss)
    if num_videos == 0:
      return {"hit_at_one": 0.0, "perr": 0.0, "loss": loss}
    positive_positions = np.flatnonzero(labels)  # labels are sparse
    num_labels = np.bincount(positive_positions // num_class, minlength=num_videos)
    positives_per_class = np.bincount(positive_positions % num_class, minlength=num_class)
    top_k = min(self._top_k, num_class)
    ranked = _top_k_indices(predictions, max(top_k, int(num_labels.max())))
    hit_sum = int(np.count_nonzero(labels[np.arange(num_videos), ranked[:, 0]]))
    perr_sum = _perr_sum(predictions, labels, num_labels, ranked)
    class_ids, scores, pair_labels = _flat_top_k(predictions, labels, ranked[:, :top_k])
    self._map_calculator._append(class_ids, scores, pair_labels, positives_per_class)
    self._num_examples += num_videos
    self._sum_hit_at_one += hit_sum
    self._sum_perr += perr_sum
    self._sum_loss += loss * num_videos
    return {"hit_at_one": hit_sum / num_videos, "perr": perr_sum / num_videos, "loss": loss}

  def get(self):
    """'avg_hit_at_one', 'avg_perr', 'avg_loss' (example-weighted means), 'aps' (num_class
    per-class APs; mAP is their mean), 'gap', 'num_examples'; ValueError before any example."""
    if self._num_examples == 0:
      raise ValueError("EvaluationMetrics.get() called before any examples were accumulated")
    return {
        "avg_hit_at_one": self._sum_hit_at_one / self._num_examples,
        "avg_perr": self._sum_perr / self._num_examples,
        "avg_loss": self._sum_loss / self._num_examples,
        "aps": self._map_calculator.peek_map_at_n(),
        "gap": self._map_calculator.peek_global_ap(),
        "num_examples": self._num_examples,
    }

  def clear(self):
    self._num_examples = 0
    self._sum_hit_at_one = 0.0
    self._sum_perr = 0.0
    self._sum_loss = 0.0
    self._map_calculator.clear()
