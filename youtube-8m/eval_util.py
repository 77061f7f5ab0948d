"""Evaluation metrics for the YouTube-8M video-level classification task (numpy).

Inputs are dense: `predictions` float [N, C], `actuals`/`labels` [N, C] of 0/1
(bool or numeric; an entry is a true label when it is > 0). NaN scores are
rejected with ValueError.

Deterministic tie rules (the contract the tests check against brute force):
1. Ranking the classes of one video (hit@1, the top-L classes of PERR, the
   top-k classes that feed GAP and mAP): descending score, then ascending class
   index, i.e. `np.argsort(-row, kind="stable")` (and `np.argmax` for hit@1).
2. Ranking a pool of (score, label) pairs (GAP, per-class AP): descending
   score and, among equal scores, negatives before positives (pessimistic).
   The result depends only on the multiset of pairs: not on video order, batch
   size or batch order. -0.0 equals 0.0.
"""

import numbers

import numpy as np


def _prepare_dense(predictions, actuals):
  """Validates [N, C] inputs; returns (float32/float64 predictions, bool labels)."""
  predictions, actuals = np.asarray(predictions), np.asarray(actuals)
  if predictions.dtype not in (np.float32, np.float64):
    predictions = predictions.astype(np.float64)
  if actuals.dtype != np.bool_:
    actuals = actuals > 0
  if predictions.ndim != 2:
    raise ValueError("predictions must be a 2-D [num_videos, num_classes] array, got shape %s"
                     % (predictions.shape,))
  if actuals.shape != predictions.shape:
    raise ValueError("predictions and actuals must have the same shape, got %s and %s"
                     % (predictions.shape, actuals.shape))
  return predictions, actuals


def _positive_int(value, name):
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
      or value <= 0):
    raise ValueError("%s must be a positive integer, got %r" % (name, value))
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


def _pooled_average_precision(scores, labels, num_positives, class_ids=None, num_class=1):
  """float64 [num_class]: non-interpolated AP of 1-D (score, bool label) pairs per class
  (class_ids None: all are class 0) over num_positives (int [num_class] or a scalar, which
  may count positives outside the pool)."""
  denominators = np.asarray(num_positives, dtype=np.int64).reshape(num_class)
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
  if num_class > 1:
    sums = np.bincount(pos_class, weights=precision, minlength=num_class)
  else:
    sums = np.array([precision.sum()])
  np.divide(sums, denominators, out=result, where=denominators > 0)
  return result


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


class EvaluationMetrics(object):
  """Accumulates hit@1, PERR, loss, GAP and per-class AP over evaluation batches of [N, C]
  predictions (C = num_class); top_k best classes per video feed GAP and mAP."""

  def __init__(self, num_class, top_k):
    self._num_class = _positive_int(num_class, "num_class")
    self._top_k = _positive_int(top_k, "top_k")
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
    for chunks, array in zip(self._pairs, (class_ids, scores, pair_labels)):
      chunks.append(np.array(array, copy=True))  # never alias the caller's buffers
    self._num_positives += positives_per_class
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
    class_ids, scores, labels = (np.concatenate(chunks) for chunks in self._pairs)
    return {
        "avg_hit_at_one": self._sum_hit_at_one / self._num_examples,
        "avg_perr": self._sum_perr / self._num_examples,
        "avg_loss": self._sum_loss / self._num_examples,
        "aps": _pooled_average_precision(scores, labels, self._num_positives,
                                         class_ids=class_ids,
                                         num_class=self._num_class).tolist(),
        # all top-k pairs pooled across classes: the GAP
        "gap": float(_pooled_average_precision(scores, labels,
                                               int(self._num_positives.sum()))[0]),
        "num_examples": self._num_examples,
    }

  def clear(self):
    self._num_examples = 0
    self._sum_hit_at_one = 0.0
    self._sum_perr = 0.0
    self._sum_loss = 0.0
    self._pairs = ([], [], [])  # class ids, scores, labels of every video's top-k
    self._num_positives = np.zeros(self._num_class, dtype=np.int64)
