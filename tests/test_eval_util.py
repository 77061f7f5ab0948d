"""Tests for youtube-8m/eval_util.py (brute-force references are pure Python)."""

import numpy as np
import pytest

from conftest import yt8m

eval_util = yt8m("eval_util")


# ---------------------------------------------------------------------------
# Pure-Python reference implementations (documented tie rules:
#   per video: descending score, then ascending class index;
#   pooled:    descending score, then negatives before positives).
# ---------------------------------------------------------------------------

def bf_rank_row(row):
  return sorted(range(len(row)), key=lambda j: (-row[j], j))


def bf_ap(pairs, num_positives, n=None):
  """pairs: list of (score, label 0/1)."""
  if num_positives == 0:
    return 0.0
  ranked = sorted(pairs, key=lambda p: (-p[0], p[1]))
  if n is not None:
    ranked = ranked[:n]
    num_positives = min(num_positives, n)
  hits, total = 0, 0.0
  for i, (_, label) in enumerate(ranked, start=1):
    if label:
      hits += 1
      total += hits / i
  return total / num_positives


def bf_gap(preds, labels, k):
  pool, num_pos = [], 0
  for row, lab in zip(preds.tolist(), labels.tolist()):
    num_pos += sum(1 for x in lab if x > 0)
    for j in bf_rank_row(row)[:k]:
      pool.append((row[j], 1 if lab[j] > 0 else 0))
  return bf_ap(pool, num_pos)


def bf_hit_at_one(preds, labels):
  hits = 0
  for row, lab in zip(preds.tolist(), labels.tolist()):
    hits += lab[bf_rank_row(row)[0]] > 0
  return hits / len(preds)


def bf_perr(preds, labels):
  total = 0.0
  for row, lab in zip(preds.tolist(), labels.tolist()):
    num = sum(1 for x in lab if x > 0)
    if num == 0:
      continue
    top = bf_rank_row(row)[:num]
    total += sum(1 for j in top if lab[j] > 0 and row[j] > 0) / num
  return total / len(preds)


def bf_map(preds, labels, k):
  num_class = preds.shape[1]
  pools = [[] for _ in range(num_class)]
  for row, lab in zip(preds.tolist(), labels.tolist()):
    for j in bf_rank_row(row)[:k]:
      pools[j].append((row[j], 1 if lab[j] > 0 else 0))
  positives = [int(x) for x in (np.asarray(labels) > 0).sum(axis=0)]
  return [bf_ap(pools[c], positives[c]) for c in range(num_class)]


def random_data(rng, n, c, label_prob=0.1, ties=False, dtype=np.float32):
  if ties:
    preds = (rng.integers(0, 5, size=(n, c)) / 4.0).astype(dtype)
  else:
    preds = rng.random((n, c)).astype(dtype)
  labels = (rng.random((n, c)) < label_prob).astype(np.int64)
  labels[: max(1, n // 5)] = 0  # some videos without any label
  return preds, labels


CASES = [(1, 1, 1), (7, 3, 5), (13, 10, 4), (40, 25, 20), (60, 50, 3), (30, 12, 12)]


# ---------------------------------------------------------------------------
# Hand-computed examples
# ---------------------------------------------------------------------------

def test_hit_at_one_hand():
  preds = np.array([[0.5, 0.5, 0.1],   # tie -> class 0 (first index) -> miss
                    [0.1, 0.9, 0.3],   # class 1 -> hit
                    [0.2, 0.1, 0.0],   # class 0 -> miss (no labels)
                    [0.0, 0.0, 0.0]])  # all tied -> class 0 -> hit
  labels = np.array([[0, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]])
  assert eval_util.calculate_hit_at_one(preds, labels) == pytest.approx(0.5)
  assert eval_util.calculate_hit_at_one(preds, labels.astype(bool)) == pytest.approx(0.5)


def test_perr_hand():
  preds = np.array([[0.9, 0.0, 0.5, 0.2],   # L=2, top2 = {0:T, 2:F} -> 1/2
                    [0.3, 0.2, 0.1, 0.0],   # L=0 -> 0 (still counted)
                    [0.0, 0.0, 0.0, 0.0],   # L=1, top1 = class 0 (true, score 0) -> 0
                    [0.1, 0.2, 0.3, 0.4]])  # L=2, top2 = {3:T, 2:T} -> 1
  labels = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]])
  assert eval_util.calculate_precision_at_equal_recall_rate(preds, labels) == \
      pytest.approx((0.5 + 0 + 0 + 1) / 4)


def test_gap_hand_two_videos():
  # k=2.  Video A: top2 = (0.9, T), (0.8, F); its label at 0.1 is missed.
  #       Video B: top2 = (0.7, F), (0.6, T).
  # N_pos = 3.  Pool sorted: 0.9 T, 0.8 F, 0.7 F, 0.6 T
  # GAP = (1/1 + 2/4) / 3 = 0.5
  preds = np.array([[0.9, 0.8, 0.1], [0.7, 0.6, 0.5]])
  labels = np.array([[1, 0, 1], [0, 1, 0]])
  assert eval_util.calculate_gap(preds, labels, top_k=2) == pytest.approx(0.5)
  # k=3 adds (0.5 F) and (0.1 T): pool 0.9T 0.8F 0.7F 0.6T 0.5F 0.1T
  # GAP = (1 + 2/4 + 3/6) / 3 = 2/3
  assert eval_util.calculate_gap(preds, labels, top_k=3) == pytest.approx(2 / 3)


def test_gap_counts_positives_outside_top_k():
  # Perfect ranking but 3 labels and k=2: both top-2 pairs are true, GAP = 2/3 < 1.
  preds = np.array([[0.9, 0.8, 0.7, 0.1]])
  labels = np.array([[1, 1, 1, 0]])
  assert eval_util.calculate_gap(preds, labels, top_k=2) == pytest.approx(2 / 3)
  assert eval_util.calculate_gap(preds, labels, top_k=3) == pytest.approx(1.0)


def test_gap_tie_rules():
  # Per video: tie among 3 classes -> classes 0 and 1 are the top-2.
  preds = np.array([[0.5, 0.5, 0.5]])
  assert eval_util.calculate_gap(preds, np.array([[0, 0, 1]]), top_k=2) == 0.0
  # Pooled: (0.5, T) and (0.5, F) tie -> negative ranked first -> precision 1/2.
  assert eval_util.calculate_gap(preds, np.array([[1, 0, 0]]), top_k=2) == pytest.approx(0.5)
  # Tie across videos is independent of the video order.
  preds2 = np.array([[0.5, 0.1], [0.5, 0.1]])
  for labels in (np.array([[1, 0], [0, 0]]), np.array([[0, 0], [1, 0]])):
    assert eval_util.calculate_gap(preds2, labels, top_k=1) == pytest.approx(0.5)


def test_gap_degenerate():
  preds = np.random.default_rng(0).random((5, 4))
  assert eval_util.calculate_gap(preds, np.zeros((5, 4)), top_k=2) == 0.0
  assert eval_util.calculate_gap(np.zeros((0, 4)), np.zeros((0, 4))) == 0.0
  # k > C behaves like k = C.
  labels = (preds > 0.5).astype(int)
  assert eval_util.calculate_gap(preds, labels, top_k=100) == \
      eval_util.calculate_gap(preds, labels, top_k=4)
  with pytest.raises(ValueError):
    eval_util.calculate_gap(preds, labels[:, :3])
  with pytest.raises(ValueError):
    eval_util.calculate_gap(preds, labels, top_k=0)


# ---------------------------------------------------------------------------
# Against brute force on random data
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n,c,k", CASES)
def test_metrics_vs_brute_force(n, c, k, ties):
  rng = np.random.default_rng(n * 1000 + c * 10 + k + ties)
  preds, labels = random_data(rng, n, c, label_prob=0.2, ties=ties)
  assert eval_util.calculate_gap(preds, labels, top_k=k) == pytest.approx(bf_gap(preds, labels, k), abs=1e-12)
  assert eval_util.calculate_hit_at_one(preds, labels) == pytest.approx(bf_hit_at_one(preds, labels), abs=1e-12)
  assert eval_util.calculate_precision_at_equal_recall_rate(preds, labels) == \
      pytest.approx(bf_perr(preds, labels), abs=1e-12)


def test_gap_k_larger_than_c_vs_brute_force():
  rng = np.random.default_rng(5)
  preds, labels = random_data(rng, 20, 6, label_prob=0.3, ties=True)
  assert eval_util.calculate_gap(preds, labels, top_k=50) == pytest.approx(bf_gap(preds, labels, 6), abs=1e-12)


def test_top_k_tie_heavy_rows_match_stable_argsort():
  rng = np.random.default_rng(1)
  preds = (rng.integers(0, 3, size=(200, 300)) / 2.0).astype(np.float32)
  preds[:50] = 0.0  # every class tied
  for k in (1, 5, 20, 100, 300):
    got = eval_util._top_k_indices(preds, k)
    want = np.argsort(-preds, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got, want)


def test_float64_scores_vs_brute_force():
  rng = np.random.default_rng(11)
  preds, labels = random_data(rng, 50, 30, label_prob=0.2, dtype=np.float64)
  preds[:, :5] = 0.5  # ties, float32-exact mixed with non-exact
  assert eval_util.calculate_gap(preds, labels, top_k=7) == pytest.approx(bf_gap(preds, labels, 7), abs=1e-12)
  aps = eval_util.EvaluationMetrics(30, 7)
  aps.accumulate(preds, labels, 0.0)
  np.testing.assert_allclose(aps.get()["aps"], bf_map(preds, labels, 7), atol=1e-12)


def test_negative_zero_equals_zero():
  preds = np.array([[-0.0, 0.0, -1.0]], dtype=np.float32)
  assert eval_util.calculate_gap(preds, np.array([[0, 1, 0]]), top_k=2) == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# Per-class AP (mAP) in batches
# ---------------------------------------------------------------------------

def test_map_in_batches_vs_brute_force():
  rng = np.random.default_rng(8)
  n, c, k = 60, 15, 4
  preds, labels = random_data(rng, n, c, label_prob=0.25, ties=True)
  metrics = eval_util.EvaluationMetrics(c, k)
  for start in range(0, n, 17):
    metrics.accumulate(preds[start:start + 17], labels[start:start + 17], 0.0)
  np.testing.assert_allclose(metrics.get()["aps"], bf_map(preds, labels, k), atol=1e-12)


# ---------------------------------------------------------------------------
# EvaluationMetrics
# ---------------------------------------------------------------------------

def test_evaluation_metrics_batches_equal_one_shot():
  rng = np.random.default_rng(9)
  n, c, k = 230, 40, 6
  preds, labels = random_data(rng, n, c, label_prob=0.1)
  preds[::7, :10] = 0.25  # some ties
  losses = []
  metrics = eval_util.EvaluationMetrics(c, k)
  for start in range(0, n, 64):
    batch_p, batch_l = preds[start:start + 64], labels[start:start + 64]
    loss = float(rng.random())
    losses.append((loss, len(batch_p)))
    out = metrics.accumulate(batch_p, batch_l, loss)
    assert set(out) == {"hit_at_one", "perr", "loss"}
    assert out["hit_at_one"] == pytest.approx(eval_util.calculate_hit_at_one(batch_p, batch_l))
    assert out["perr"] == pytest.approx(
        eval_util.calculate_precision_at_equal_recall_rate(batch_p, batch_l))
    assert out["loss"] == loss
  res = metrics.get()
  assert res["num_examples"] == n
  assert res["gap"] == pytest.approx(eval_util.calculate_gap(preds, labels, top_k=k), rel=1e-12, abs=0)
  assert res["gap"] == pytest.approx(bf_gap(preds, labels, k), abs=1e-12)
  assert res["avg_hit_at_one"] == pytest.approx(bf_hit_at_one(preds, labels))
  assert res["avg_perr"] == pytest.approx(bf_perr(preds, labels))
  assert res["avg_loss"] == pytest.approx(sum(l * m for l, m in losses) / n)
  assert len(res["aps"]) == c
  np.testing.assert_allclose(res["aps"], bf_map(preds, labels, k), atol=1e-12)

  # Batch order / size do not matter (tie rule 2).
  other = eval_util.EvaluationMetrics(c, k)
  perm = rng.permutation(n)
  for start in range(0, n, 33):
    other.accumulate(preds[perm[start:start + 33]], labels[perm[start:start + 33]], 0.0)
  assert other.get()["gap"] == pytest.approx(res["gap"], rel=1e-12, abs=0)
  np.testing.assert_allclose(other.get()["aps"], res["aps"], rtol=1e-12)

  metrics.clear()
  with pytest.raises(ValueError):
    metrics.get()


def test_evaluation_metrics_empty_and_validation():
  metrics = eval_util.EvaluationMetrics(5, 20)
  with pytest.raises(ValueError):
    metrics.get()
  out = metrics.accumulate(np.zeros((0, 5)), np.zeros((0, 5)), 1.5)
  assert out["loss"] == 1.5
  with pytest.raises(ValueError):
    metrics.get()
  with pytest.raises(ValueError):
    metrics.accumulate(np.zeros((2, 4)), np.zeros((2, 4)), 0.0)
  # k=20 > C=5, labels that never appear -> AP 0 for those classes
  preds = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)
  metrics.accumulate(preds, np.array([[0, 0, 0, 0, 1]], dtype=bool), np.float32(0.25))
  res = metrics.get()
  assert res["aps"] == [0.0, 0.0, 0.0, 0.0, 1.0]
  assert res["gap"] == 1.0 and res["avg_hit_at_one"] == 1.0 and res["avg_perr"] == 1.0
  assert res["avg_loss"] == pytest.approx(0.25)


def test_evaluation_metrics_full_vocabulary_size():
  rng = np.random.default_rng(10)
  n, c = 64, 3862
  preds = rng.random((n, c), dtype=np.float32)
  labels = np.zeros((n, c), dtype=np.int64)
  labels[np.arange(n), rng.integers(0, c, n)] = 1
  labels[np.arange(n), rng.integers(0, c, n)] = 1
  metrics = eval_util.EvaluationMetrics(c, 20)
  metrics.accumulate(preds[:40], labels[:40], 0.1)
  metrics.accumulate(preds[40:], labels[40:], 0.2)
  res = metrics.get()
  assert res["gap"] == pytest.approx(bf_gap(preds, labels, 20), abs=1e-12)
  assert len(res["aps"]) == c


def test_nan_predictions_rejected():
  preds = np.random.default_rng(12).random((4, 30))
  preds[1, 3] = np.nan
  labels = np.zeros((4, 30))
  labels[:, 3] = 1
  with pytest.raises(ValueError):
    eval_util.calculate_gap(preds, labels, top_k=2)
  with pytest.raises(ValueError):
    eval_util.calculate_gap(preds, labels, top_k=30)
  with pytest.raises(ValueError):
    eval_util.EvaluationMetrics(30, 2).accumulate(preds, labels, 0.0)


def test_accumulators_do_not_alias_caller_buffers():
  preds = np.array([[0.9, 0.1, 0.5]], dtype=np.float32)
  labels = np.array([[1, 0, 1]])
  metrics = eval_util.EvaluationMetrics(3, 2)
  metrics.accumulate(preds, labels, 0.0)
  preds[:] = [[0.0, 1.0, 0.0]]
  labels[:] = 0
  assert metrics.get()["gap"] == pytest.approx(1.0)
