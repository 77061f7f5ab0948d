"""Evaluation metrics for the YouTube-8M video-level classification task.

Pure numpy.  All metrics take dense arrays:

* ``predictions``: float array ``[N, C]`` (C = 3862 for YouTube-8M 2018, but
  any C works),
* ``actuals`` / ``labels``: array ``[N, C]`` of 0/1 (bool or numeric; an entry
  counts as a true label when it is ``> 0``).

Provided metrics

* :func:`calculate_hit_at_one` -- fraction of videos whose best class is true.
* :func:`calculate_precision_at_equal_recall_rate` (PERR).
* :func:`calculate_gap` -- Global Average Precision over the top-k
  predictions of every video (the Kaggle metric, k = 20).
* :func:`ap` / :func:`ap_at_n` and :class:`AveragePrecisionCalculator` --
  non-interpolated average precision of a pool of (score, label) pairs.
* :func:`top_k_by_class` and :class:`MeanAveragePrecisionCalculator` --
  per-class AP over the top-k predictions of every video (mAP).
* :class:`EvaluationMetrics` -- the batch accumulator used by ``eval.py``.

Deterministic tie-breaking (documented contract)
------------------------------------------------
1. *Ranking the classes of one video* (hit@1, the top-L classes of PERR and
   the top-k classes that feed GAP / mAP): classes are ordered by descending
   score and equal scores are ordered by ascending class index.  This is the
   order of ``np.argsort(-row, kind="stable")`` and agrees with
   ``np.argmax`` (first index wins).
2. *Ranking a pool of (score, label) pairs* (GAP, AP, per-class AP): pairs
   are ordered by descending score and, among pairs with exactly equal scores,
   negatives are ranked before positives ("pessimistic" tie-break).  Pairs
   with equal score and equal label are interchangeable, so the result is a
   function of the multiset of pairs only: it does not depend on video order,
   batch size or batch order, and accumulating in batches gives exactly the
   same number as a one-shot computation.  ``-0.0`` and ``0.0`` are equal.
   (The original starter code shuffled with a fixed seed before a stable sort,
   i.e. an arbitrary but fixed tie-break; the pessimistic rule is a lower
   bound of it and is independent of the pool order.)

NaN scores are not supported; AP pools reject them with ``ValueError``.

Implementation notes
--------------------
The AP of a pool is computed without any argsort of the pool: positives and
negatives are value-sorted separately (``np.sort`` on order-preserving integer
keys, which also carry the class id for per-class AP) and, for every positive,
the number of negatives ranked above it is found with ``np.searchsorted``.
A positive that is the j-th positive of its pool and has ``m`` negatives with
a score ``>=`` its own sits at rank ``j + m`` and contributes a precision of
``j / (j + m)``.  All classes of a mean-AP computation are handled in one
vectorized pass (no Python loop over classes or videos).
"""

import numbers

import numpy as np

__all__ = [
    "calculate_hit_at_one",
    "calculate_precision_at_equal_recall_rate",
    "calculate_gap",
    "top_k_by_class",
    "ap",
    "ap_at_n",
    "AveragePrecisionCalculator",
    "MeanAveragePrecisionCalculator",
    "EvaluationMetrics",
]


# ---------------------------------------------------------------------------
# Input helpers
# ---------------------------------------------------------------------------

def _as_float(array):
    """Returns `array` as a float32 / float64 numpy array (never copies if not needed)."""
    array = np.asarray(array)
    if array.dtype == np.float32 or array.dtype == np.float64:
        return array
    if np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize < 4:
        return array.astype(np.float32)
    return array.astype(np.float64)


def _as_bool(array):
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array
    return array > 0


def _prepare_dense(predictions, actuals):
    """Validates dense [N, C] inputs; returns (float predictions, bool labels)."""
    predictions = _as_float(predictions)
    actuals = _as_bool(actuals)
    if predictions.ndim != 2:
        raise ValueError("predictions must be a 2-D [num_videos, num_classes] array, "
                         "got shape %s" % (predictions.shape,))
    if actuals.shape != predictions.shape:
        raise ValueError("predictions and actuals must have the same shape, got %s and %s"
                         % (predictions.shape, actuals.shape))
    return predictions, actuals


def _prepare_flat(predictions, actuals):
    """Validates a pool of pairs; returns 1-D (float scores, bool labels)."""
    predictions = _as_float(predictions).ravel()
    actuals = _as_bool(actuals).ravel()
    if predictions.size != actuals.size:
        raise ValueError("predictions and actuals must have the same number of elements, "
                         "got %d and %d" % (predictions.size, actuals.size))
    if predictions.size and np.isnan(predictions).any():
        raise ValueError("predictions contain NaN")
    return predictions, actuals


def _check_positive_int_or_none(value, name):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError("%s must be a positive integer or None, got %r" % (name, value))
    return int(value)


def _check_positive_int(value, name):
    if value is None:
        raise ValueError("%s must be a positive integer, got None" % name)
    return _check_positive_int_or_none(value, name)


def _class_id_dtype(num_class):
    return np.uint16 if num_class <= np.iinfo(np.uint16).max + 1 else np.int64


# ---------------------------------------------------------------------------
# Per-video ranking (tie rule 1)
# ---------------------------------------------------------------------------

def _top_k_indices(predictions, k):
    """Class indices of the k best classes of every video, best first.

    Order: descending score, ties by ascending class index (identical to
    ``np.argsort(-predictions, axis=1, kind="stable")[:, :k]`` but O(N*C)
    via a partition).  k is capped at C.  Returns an intp array [N, k].
    """
    num_videos, num_classes = predictions.shape
    k = min(int(k), num_classes)
    if num_videos == 0 or k <= 0:
        return np.empty((num_videos, max(k, 0)), dtype=np.intp)
    if 4 * k >= num_classes:
        return np.argsort(-predictions, axis=1, kind="stable")[:, :k]
    # k-th best score of every row (NaN would sort above everything here).
    threshold = np.partition(predictions, num_classes - k, axis=1)[:, num_classes - k]
    keep = predictions >= threshold[:, None]
    num_kept = np.count_nonzero(keep, axis=1)
    if (num_kept < k).any():
        raise ValueError("predictions contain NaN")
    # Rows where ties at the k-th score straddle the cut: keep the lowest
    # class indices among the tied classes.
    ambiguous = np.flatnonzero(num_kept > k)
    if ambiguous.size:
        sub = predictions[ambiguous]
        thr = threshold[ambiguous, None]
        better = sub > thr
        needed = k - np.count_nonzero(better, axis=1)
        tied = sub == thr
        keep[ambiguous] = better | (tied & (np.cumsum(tied, axis=1) <= needed[:, None]))
    # Exactly k entries per row; flat row-major positions -> ascending class ids per row.
    idx = (np.flatnonzero(keep) % num_classes).reshape(num_videos, k)
    order = np.argsort(-np.take_along_axis(predictions, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def _hit_at_one_sum(actuals, ranked):
    return int(np.count_nonzero(actuals[np.arange(actuals.shape[0]), ranked[:, 0]]))


def _perr_sum(predictions, actuals, num_labels, ranked):
    """Sum over videos of PERR; `ranked` holds at least max(num_labels) columns."""
    max_labels = int(num_labels.max()) if num_labels.size else 0
    if max_labels == 0:
        return 0.0
    top = ranked[:, :max_labels]
    hits = (np.take_along_axis(actuals, top, axis=1)
            & (np.take_along_axis(predictions, top, axis=1) > 0)
            & (np.arange(max_labels) < num_labels[:, None]))
    per_video = np.count_nonzero(hits, axis=1) / np.maximum(num_labels, 1)
    return float(per_video.sum())


def calculate_hit_at_one(predictions, actuals):
    """Fraction of videos whose top-scoring class (np.argmax, first index on ties) is a true label.

    Returns 0.0 for an empty batch.
    """
    predictions, actuals = _prepare_dense(predictions, actuals)
    num_videos = predictions.shape[0]
    if num_videos == 0 or predictions.shape[1] == 0:
        return 0.0
    top = np.argmax(predictions, axis=1)
    return float(np.count_nonzero(actuals[np.arange(num_videos), top]) / num_videos)


def calculate_precision_at_equal_recall_rate(predictions, actuals):
    """Precision at equal recall rate (PERR), averaged over all videos.

    For a video with L true labels, the L best classes (tie rule 1) are taken
    and the precision is (#true labels among them with score > 0) / L.  A video
    without labels contributes 0 but still counts in the denominator N.
    """
    predictions, actuals = _prepare_dense(predictions, actuals)
    num_videos = predictions.shape[0]
    if num_videos == 0:
        return 0.0
    num_labels = np.count_nonzero(actuals, axis=1)
    max_labels = int(num_labels.max()) if num_labels.size else 0
    if max_labels == 0:
        return 0.0
    ranked = _top_k_indices(predictions, max_labels)
    return _perr_sum(predictions, actuals, num_labels, ranked) / num_videos


# ---------------------------------------------------------------------------
# Pooled average precision (tie rule 2)
# ---------------------------------------------------------------------------

_SIGN32 = np.uint32(0x80000000)
_SIGN64 = np.uint64(0x8000000000000000)


def _order_keys(scores, compact):
    """Order-preserving unsigned integer keys for `scores`.

    Equal scores get equal keys (-0.0 == 0.0) and larger scores larger keys.
    Returns (keys, bits) with keys < 2**bits.  float32 scores (or float64
    scores that are exactly representable in float32) give 32-bit keys.  Other
    float64 scores give 64-bit keys, or, when `compact` is set (so that a
    class id can be packed above the key), dense ranks of the distinct values.
    """
    if scores.dtype == np.float64 and scores.size:
        with np.errstate(over="ignore", invalid="ignore"):
            as32 = scores.astype(np.float32)
        if np.array_equal(as32, scores):
            scores = as32
    if scores.dtype == np.float32:
        bits = (scores + np.float32(0.0)).view(np.uint32)
        keys = np.where(bits >= _SIGN32, ~bits, bits | _SIGN32)
        return keys, 32
    bits = (scores.astype(np.float64) + 0.0).view(np.uint64)
    keys = np.where(bits >= _SIGN64, ~bits, bits | _SIGN64)
    if not compact:
        return keys, 64
    # Rare path (genuine float64 scores + class ids): dense ranks.
    order = np.argsort(keys)
    sorted_keys = keys[order]
    is_new = np.empty(keys.size, dtype=bool)
    is_new[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=is_new[1:])
    ranks = np.empty(keys.size, dtype=np.uint64)
    ranks[order] = np.cumsum(is_new) - 1
    num_distinct = int(np.count_nonzero(is_new))
    return ranks, max(1, (num_distinct - 1).bit_length())


def _pooled_average_precision(scores, labels, num_positives, top_n=None,
                              class_ids=None, num_class=1):
    """Non-interpolated AP of pooled (score, label) pairs, per class.

    Args:
      scores: 1-D float array (no NaN).
      labels: 1-D bool array.
      num_positives: int array [num_class] (or scalar if num_class == 1): the
        AP denominators, i.e. all positives including those not in the pool.
      top_n: if set, only the top_n ranked pairs of each class count and the
        denominator is min(top_n, num_positives).
      class_ids: optional 1-D int array (< num_class) -> AP per class.

    Returns:
      float64 array [num_class]; 0 for classes with no positives.
    """
    denominators = np.asarray(num_positives, dtype=np.int64).reshape(num_class)
    if top_n is not None:
        denominators = np.minimum(denominators, top_n)
    result = np.zeros(num_class, dtype=np.float64)
    num_pos_in_pool = int(np.count_nonzero(labels))
    if num_pos_in_pool == 0:
        return result
    grouped = class_ids is not None and num_class > 1
    keys, bits = _order_keys(scores, compact=grouped)
    if grouped:
        keys = (class_ids.astype(np.uint64) << np.uint64(bits)) | keys.astype(np.uint64)
    pos_keys = np.sort(keys[labels])   # ascending: class, then score
    neg_keys = np.sort(keys[~labels])
    ascending_index = np.arange(num_pos_in_pool)
    if grouped:
        pos_class = (pos_keys >> np.uint64(bits)).astype(np.intp)
        pos_end = np.cumsum(np.bincount(pos_class, minlength=num_class))
        # 1-based rank of each positive among the positives of its class (best first).
        rank_among_pos = pos_end[pos_class] - ascending_index
        class_ends = np.arange(1, num_class + 1, dtype=np.uint64) << np.uint64(bits)
        neg_end = np.searchsorted(neg_keys, class_ends, side="left")
        negs_above = neg_end[pos_class] - np.searchsorted(neg_keys, pos_keys, side="left")
    else:
        pos_class = None
        rank_among_pos = num_pos_in_pool - ascending_index
        negs_above = neg_keys.size - np.searchsorted(neg_keys, pos_keys, side="left")
    rank = rank_among_pos + negs_above
    precision = rank_among_pos / rank
    if top_n is not None:
        precision[rank > top_n] = 0.0
    if grouped:
        sums = np.bincount(pos_class, weights=precision, minlength=num_class)
    else:
        sums = np.array([precision.sum()])
    np.divide(sums, denominators, out=result, where=denominators > 0)
    return result


def _top_n_keep(scores, labels, top_n):
    """Indices (in original order) of the top_n pairs under tie rule 2."""
    size = scores.size
    if size <= top_n:
        return np.arange(size)
    threshold = np.partition(scores, size - top_n)[size - top_n]  # top_n-th best score
    better = np.flatnonzero(scores > threshold)
    needed = top_n - better.size
    tied = scores == threshold
    tied_neg = np.flatnonzero(tied & ~labels)[:needed]
    tied_pos = np.flatnonzero(tied & labels)[:needed - tied_neg.size]
    return np.sort(np.concatenate([better, tied_neg, tied_pos]))


def ap_at_n(predictions, actuals, n=20, total_num_positives=None):
    """Non-interpolated average precision of the top n pairs of a pool.

    AP@n = sum_{i <= n} precision@i * rel(i) / min(n, P), where P is
    `total_num_positives` (default: the number of positives in `actuals`).
    n=None means no cut-off and denominator P.  Ties: rule 2 (module doc).
    Returns 0.0 when P == 0.
    """
    n = _check_positive_int_or_none(n, "n")
    scores, labels = _prepare_flat(predictions, actuals)
    in_pool = int(np.count_nonzero(labels))
    if total_num_positives is None:
        total_num_positives = in_pool
    elif total_num_positives < in_pool:
        raise ValueError("total_num_positives (%s) is smaller than the number of positives "
                         "in actuals (%d)" % (total_num_positives, in_pool))
    return float(_pooled_average_precision(scores, labels, int(total_num_positives), top_n=n)[0])


def ap(predictions, actuals):
    """Non-interpolated average precision of a pool of (score, label) pairs (no cut-off)."""
    return ap_at_n(predictions, actuals, n=None)


def calculate_gap(predictions, actuals, top_k=20):
    """Global Average Precision over the top_k predictions of every video.

    The top_k classes of each video (k capped at C, tie rule 1) are pooled
    as (score, is_true) pairs, ranked by descending score (tie rule 2), and
    GAP = sum_i precision@i * rel(i) / N_pos, where N_pos is the total number
    of true (video, label) pairs in `actuals`, including the positives that
    did not make a video's top_k.  Returns 0.0 if N_pos == 0.
    """
    predictions, actuals = _prepare_dense(predictions, actuals)
    top_k = _check_positive_int(top_k, "top_k")
    total_positives = int(np.count_nonzero(actuals))
    if total_positives == 0:
        return 0.0
    ranked = _top_k_indices(predictions, top_k)
    scores = np.take_along_axis(predictions, ranked, axis=1).ravel()
    labels = np.take_along_axis(actuals, ranked, axis=1).ravel()
    if np.isnan(scores).any():
        raise ValueError("predictions contain NaN")
    return float(_pooled_average_precision(scores, labels, total_positives)[0])


# ---------------------------------------------------------------------------
# Accumulators
# ---------------------------------------------------------------------------

class _ChunkList(object):
    """Lists of parallel array chunks, concatenated lazily (and then cached)."""

    def __init__(self, empty_dtypes):
        self._empty_dtypes = empty_dtypes
        self._chunks = [[] for _ in empty_dtypes]
        self.size = 0

    def append(self, *arrays):
        if arrays[0].size == 0:
            return
        for chunks, array in zip(self._chunks, arrays):
            chunks.append(np.array(array, copy=True))  # never alias caller buffers
        self.size += arrays[0].size

    def arrays(self):
        result = []
        for i, chunks in enumerate(self._chunks):
            if not chunks:
                result.append(np.empty(0, dtype=self._empty_dtypes[i]))
                continue
            if len(chunks) > 1:
                chunks[:] = [np.concatenate(chunks)]
            result.append(chunks[0])
        return tuple(result)

    def replace(self, *arrays):
        self._chunks = [[array] for array in arrays]
        self.size = arrays[0].size

    def clear(self):
        self._chunks = [[] for _ in self._empty_dtypes]
        self.size = 0


class AveragePrecisionCalculator(object):
    """Accumulates (prediction, actual) pairs over batches and computes their pooled AP.

    AP = sum_i precision@i * rel(i) / P with P = the accumulated
    `num_positives` (which may exceed the positives present in the pool, e.g.
    positives that never made a top-k list).  With `top_n`, only the top_n
    ranked pairs count, the denominator is min(top_n, P), and the stored pool
    is pruned to the top_n pairs whenever it grows beyond 2 * top_n (this
    never changes the result).  Ties: rule 2 (module doc).
    """

    def __init__(self, top_n=None):
        self._top_n = _check_positive_int_or_none(top_n, "top_n")
        self._pool = _ChunkList((np.float32, np.bool_))
        self._total_positives = 0

    @property
    def heap_size(self):
        """Number of (prediction, actual) pairs currently stored."""
        return self._pool.size

    @property
    def num_accumulated_positives(self):
        """Total number of positives accumulated (the AP denominator before top_n capping)."""
        return self._total_positives

    def accumulate(self, predictions, actuals, num_positives=None):
        """Adds a batch of pairs.

        Args:
          predictions: scores, any shape (flattened).
          actuals: 0/1 labels with the same number of elements.
          num_positives: number of positives this batch adds to the AP
            denominator; defaults to the positives in `actuals` and must not
            be smaller than that.
        """
        scores, labels = _prepare_flat(predictions, actuals)
        in_batch = int(np.count_nonzero(labels))
        if num_positives is None:
            num_positives = in_batch
        elif num_positives < in_batch:
            raise ValueError("num_positives (%s) is smaller than the number of positives in "
                             "actuals (%d)" % (num_positives, in_batch))
        self._total_positives += int(num_positives)
        self._pool.append(scores, labels)
        if self._top_n is not None and self._pool.size > 2 * self._top_n:
            scores, labels = self._pool.arrays()
            keep = _top_n_keep(scores, labels, self._top_n)
            self._pool.replace(scores[keep], labels[keep])

    def clear(self):
        self._pool.clear()
        self._total_positives = 0

    def peek_ap_at_n(self):
        """AP of everything accumulated so far (0.0 if there are no positives)."""
        scores, labels = self._pool.arrays()
        return float(_pooled_average_precision(
            scores, labels, self._total_positives, top_n=self._top_n)[0])

    ap = staticmethod(ap)
    ap_at_n = staticmethod(ap_at_n)


def _flat_top_k(predictions, actuals, ranked, num_class):
    """(class ids, scores, labels) of the ranked pairs, video-major, flattened."""
    class_ids = ranked.ravel().astype(_class_id_dtype(num_class))
    scores = np.take_along_axis(predictions, ranked, axis=1).ravel()
    labels = np.take_along_axis(actuals, ranked, axis=1).ravel()
    return class_ids, scores, labels


def top_k_by_class(predictions, labels, k=20):
    """Splits the top-k predictions of every video by class (for mAP).

    Args:
      predictions: [N, C] scores.
      labels: [N, C] 0/1 labels.
      k: number of best classes kept per video (capped at C, tie rule 1).

    Returns:
      (out_predictions, out_labels, out_true_positives):
        out_predictions: list of C float arrays; entry c holds the scores of
          the videos (in video order) whose top-k contains class c.
        out_labels: list of C int32 0/1 arrays aligned with out_predictions.
        out_true_positives: int64 array [C], number of videos labelled with
          class c (including those where c is not in the top-k).
    """
    predictions, labels = _prepare_dense(predictions, labels)
    k = _check_positive_int(k, "k")
    num_class = predictions.shape[1]
    ranked = _top_k_indices(predictions, k)
    class_ids, scores, pair_labels = _flat_top_k(predictions, labels, ranked, num_class)
    order = np.argsort(class_ids, kind="stable")
    splits = np.cumsum(np.bincount(class_ids, minlength=num_class))[:-1]
    out_predictions = np.split(scores[order], splits)
    out_labels = np.split(pair_labels[order].astype(np.int32), splits)
    out_true_positives = np.count_nonzero(labels, axis=0).astype(np.int64)
    return out_predictions, out_labels, out_true_positives


class MeanAveragePrecisionCalculator(object):
    """Per-class AP accumulated over batches (one pooled AP per class).

    Pairs are stored flat as (class id, score, label) chunks; all per-class
    APs are computed in one vectorized pass at peek time.  `top_n` applies
    per class (only the top_n ranked pairs of a class count and its
    denominator is min(top_n, P_c)); it is applied at peek time, the stored
    pool is not pruned.  Ties: rule 2 (module doc).
    """

    def __init__(self, num_class, top_n=None):
        self._num_class = _check_positive_int(num_class, "num_class")
        self._top_n = _check_positive_int_or_none(top_n, "top_n")
        self._class_dtype = _class_id_dtype(self._num_class)
        self._pool = _ChunkList((self._class_dtype, np.float32, np.bool_))
        self._num_positives = np.zeros(self._num_class, dtype=np.int64)

    @property
    def num_class(self):
        return self._num_class

    @property
    def heap_size(self):
        """Total number of stored (class, prediction, actual) triplets."""
        return self._pool.size

    @property
    def num_accumulated_positives(self):
        """int64 array [num_class] of accumulated positives per class."""
        return self._num_positives.copy()

    def accumulate(self, predictions_per_class, actuals_per_class, num_positives_per_class=None):
        """Adds one batch given as per-class lists (e.g. from :func:`top_k_by_class`).

        Args:
          predictions_per_class: list of num_class 1-D score arrays.
          actuals_per_class: list of num_class 0/1 arrays of matching lengths.
          num_positives_per_class: num_class counts added to the denominators
            (default: the positives present in actuals_per_class).
        """
        if len(predictions_per_class) != self._num_class or len(actuals_per_class) != self._num_class:
            raise ValueError("expected %d per-class lists, got %d predictions and %d actuals"
                             % (self._num_class, len(predictions_per_class), len(actuals_per_class)))
        predictions = [_as_float(p).ravel() for p in predictions_per_class]
        actuals = [_as_bool(a).ravel() for a in actuals_per_class]
        lengths = np.array([p.size for p in predictions], dtype=np.int64)
        if not np.array_equal(lengths, [a.size for a in actuals]):
            raise ValueError("per-class predictions and actuals have different lengths")
        class_ids = np.repeat(np.arange(self._num_class, dtype=self._class_dtype), lengths)
        self.accumulate_pairs(class_ids,
                              np.concatenate(predictions) if predictions else np.empty(0),
                              np.concatenate(actuals) if actuals else np.empty(0, bool),
                              num_positives_per_class)

    def accumulate_pairs(self, class_ids, predictions, actuals, num_positives_per_class=None):
        """Adds one batch given as flat parallel arrays (fast path, no per-class lists)."""
        scores, labels = _prepare_flat(predictions, actuals)
        class_ids = np.asarray(class_ids).ravel()
        if class_ids.size != scores.size:
            raise ValueError("class_ids and predictions must have the same number of elements")
        if class_ids.size:
            if not np.issubdtype(class_ids.dtype, np.integer):
                raise ValueError("class_ids must be integers")
            if class_ids.min() < 0 or class_ids.max() >= self._num_class:
                raise ValueError("class_ids must be in [0, %d)" % self._num_class)
        class_ids = class_ids.astype(self._class_dtype, copy=False)
        in_batch = np.bincount(class_ids[labels], minlength=self._num_class)
        if num_positives_per_class is None:
            num_positives = in_batch
        else:
            num_positives = np.asarray(num_positives_per_class, dtype=np.int64).ravel()
            if num_positives.size != self._num_class:
                raise ValueError("num_positives_per_class must have %d entries" % self._num_class)
            if (num_positives < in_batch).any():
                raise ValueError("num_positives_per_class is smaller than the positives "
                                 "present for some class")
        self._append(class_ids, scores, labels, num_positives)

    def _append(self, class_ids, scores, labels, num_positives):
        """Unchecked append (inputs already validated by the caller)."""
        self._num_positives += num_positives
        self._pool.append(class_ids, scores, labels)

    def clear(self):
        self._pool.clear()
        self._num_positives[:] = 0

    def is_empty(self):
        """True if nothing (no pair and no positive) has been accumulated."""
        return self._pool.size == 0 and not self._num_positives.any()

    def peek_map_at_n(self):
        """List of num_class per-class APs (0.0 for classes without positives)."""
        class_ids, scores, labels = self._pool.arrays()
        aps = _pooled_average_precision(scores, labels, self._num_positives, top_n=self._top_n,
                                        class_ids=class_ids, num_class=self._num_class)
        return aps.tolist()

    def peek_global_ap(self):
        """AP of all stored pairs pooled across classes (no top_n); denominator
        = total accumulated positives.  Fed with top-k pairs this is the GAP."""
        _, scores, labels = self._pool.arrays()
        return float(_pooled_average_precision(scores, labels, int(self._num_positives.sum()))[0])


class EvaluationMetrics(object):
    """Accumulates hit@1, PERR, loss, GAP and per-class AP over evaluation batches."""

    def __init__(self, num_class, top_k, top_n=None):
        """
        Args:
          num_class: number of classes C (predictions must be [N, C]).
          top_k: number of best classes per video used for GAP and mAP.
          top_n: optional per-class cut-off for the mAP (None = all pairs).
        """
        self._num_class = _check_positive_int(num_class, "num_class")
        self._top_k = _check_positive_int(top_k, "top_k")
        self._map_calculator = MeanAveragePrecisionCalculator(self._num_class, top_n=top_n)
        self.clear()

    @property
    def num_examples(self):
        return self._num_examples

    def accumulate(self, predictions, labels, loss):
        """Accumulates one batch.

        Args:
          predictions: [N, num_class] scores.
          labels: [N, num_class] 0/1 labels.
          loss: the batch-mean loss (anything float() accepts).

        Returns:
          dict with the batch values 'hit_at_one', 'perr' and 'loss'.
        """
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
        hit_sum = _hit_at_one_sum(labels, ranked)
        perr_sum = _perr_sum(predictions, labels, num_labels, ranked)

        class_ids, scores, pair_labels = _flat_top_k(predictions, labels, ranked[:, :top_k],
                                                     num_class)
        if np.isnan(scores).any():
            raise ValueError("predictions contain NaN")
        self._map_calculator._append(class_ids, scores, pair_labels, positives_per_class)

        self._num_examples += num_videos
        self._sum_hit_at_one += hit_sum
        self._sum_perr += perr_sum
        self._sum_loss += loss * num_videos
        return {"hit_at_one": hit_sum / num_videos,
                "perr": perr_sum / num_videos,
                "loss": loss}

    def get(self):
        """Returns the aggregated metrics.

        Keys: 'avg_hit_at_one', 'avg_perr', 'avg_loss' (example-weighted
        means), 'aps' (list of num_class per-class APs; mAP = their mean over
        all classes), 'gap' and 'num_examples'.

        Raises:
          ValueError: if no example was accumulated.
        """
        if self._num_examples == 0:
            raise ValueError("EvaluationMetrics.get() called before any examples were "
                             "accumulated")
        return {
            "avg_hit_at_one": self._sum_hit_at_one / self._num_examples,
            "avg_perr": self._sum_perr / self._num_examples,
            "avg_loss": self._sum_loss / self._num_examples,
            "aps": self._map_calculator.peek_map_at_n(),
            "gap": self._map_calculator.peek_global_ap(),
            "num_examples": self._num_examples,
        }

    def clear(self):
        """Resets all accumulated state."""
        self._num_examples = 0
        self._sum_hit_at_one = 0.0
        self._sum_perr = 0.0
        self._sum_loss = 0.0
        self._map_calculator.clear()
