"""ensemble_budget.search on hand-built predictions whose best answer is known."""

import importlib
import itertools

import numpy as np
import pytest

ensemble_budget = importlib.import_module("youtube-8m.ensemble_budget")
eval_util = importlib.import_module("youtube-8m.eval_util")
ensemble_weights = importlib.import_module("youtube-8m.ensemble_weights")

VIDEOS, CLASSES = 200, 50


def labels_and_noise(seed=0):
  rng = np.random.default_rng(seed)
  labels = np.zeros((VIDEOS, CLASSES), bool)
  labels[np.arange(VIDEOS), rng.integers(0, CLASSES, VIDEOS)] = True
  return labels, rng


def predictions(labels, rng, good_rows, noise):
  """Scores that rank the true class first on good_rows (up to noise); elsewhere low random
  scores (a model unsure of those videos)."""
  scores = rng.uniform(0, 0.2, labels.shape)
  rows = np.zeros(VIDEOS, bool)
  rows[good_rows] = True
  scores[rows] = (rng.uniform(0, 1, (int(rows.sum()), CLASSES)) + labels[rows]
                  + rng.uniform(0, noise, (int(rows.sum()), CLASSES)))
  return (scores / scores.max()).astype(np.float32)


def option(candidate, storage, size, values):
  return ensemble_budget.Option(candidate, "model%d" % candidate, storage, size, values)


def test_two_small_complementary_members_beat_the_one_big_one():
  labels, rng = labels_and_noise()
  half = VIDEOS // 2
  big = predictions(labels, rng, slice(0, int(VIDEOS * 0.8)), 0.3)  # good on 80%
  first = predictions(labels, rng, slice(0, half), 0.3)
  second = predictions(labels, rng, slice(half, VIDEOS), 0.3)
  options = [option(0, "float32", 10, big), option(1, "float32", 5, first),
             option(2, "float32", 5, second)]
  result = ensemble_budget.search(options, labels, limit=10)
  assert sorted(o.candidate for o in result.options) == [1, 2]
  assert result.total_bytes == 10
  # The known best: every subset that fits, its weights searched on a fine grid.
  best = 0.0
  for share in np.linspace(0.05, 0.95, 19):
    best = max(best, eval_util.calculate_gap(
        share * first + (1 - share) * second, labels))
  assert result.gap >= best - 1e-9
  assert result.gap > options[0].gap


def test_the_limit_is_never_exceeded_and_one_byte_less_changes_the_choice():
  labels, rng = labels_and_noise(1)
  values = [predictions(labels, rng, slice(k * 40, k * 40 + 80), 0.5) for k in range(4)]
  options = []
  for candidate, value in enumerate(values):
    options.append(option(candidate, "float32", 400 + 10 * candidate, value))
    options.append(option(candidate, "float16", 200 + 5 * candidate, value))
    noisy = np.clip(value + rng.normal(0, 0.02, value.shape), 0, 1).astype(np.float32)
    options.append(option(candidate, "uint8", 100 + 3 * candidate, noisy))
  base = 50
  for limit in (160, 420, 700, 1300):
    result = ensemble_budget.search(options, labels, limit=limit, base_bytes=base)
    assert result.total_bytes == base + sum(o.bytes for o in result.options) <= limit
    assert len({o.candidate for o in result.options}) == len(result.options)
    tighter = ensemble_budget.search(options, labels, limit=result.total_bytes - 1,
                                     base_bytes=base)
    assert tighter.total_bytes <= result.total_bytes - 1
    assert ([(o.candidate, o.storage) for o in tighter.options]
            != [(o.candidate, o.storage) for o in result.options])
  # Deterministic: the same inputs give the same answer.
  again = ensemble_budget.search(options, labels, limit=700, base_bytes=base)
  first = ensemble_budget.search(options, labels, limit=700, base_bytes=base)
  assert [(o.candidate, o.storage) for o in again.options] == [
      (o.candidate, o.storage) for o in first.options]
  assert again.weights == first.weights and again.gap == first.gap


def test_matches_exhaustive_search_on_a_small_case():
  labels, rng = labels_and_noise(2)
  values = [predictions(labels, rng, slice(k * 50, k * 50 + 70), 0.4) for k in range(4)]
  options = [option(k, "float32", size, v) for k, (size, v) in enumerate(
      zip((30, 20, 20, 10), values))]
  limit = 50
  result = ensemble_budget.search(options, labels, limit=limit)
  grid = [w / 20.0 for w in range(21)]
  best = 0.0
  for count in range(1, 5):
    for subset in itertools.combinations(options, count):
      if sum(o.bytes for o in subset) > limit:
        continue
      for weights in itertools.product(grid, repeat=count):
        if abs(sum(weights) - 1) < 1e-9:
          mixed = sum(w * o.predictions for w, o in zip(weights, subset))
          best = max(best, eval_util.calculate_gap(mixed, labels))
  assert result.gap >= best - 0.002


def test_a_budget_too_small_for_any_member_is_one_clear_error():
  labels, rng = labels_and_noise()
  options = [option(0, "uint8", 100, predictions(labels, rng, slice(0, 10), 0.1))]
  with pytest.raises(ensemble_budget.BudgetTooSmall,
                     match=r"limit of 120 bytes holds no member: the smallest, model0 in "
                           r"uint8, needs 100 bytes \(130 with the rest"):
    ensemble_budget.search(options, labels, limit=120, base_bytes=30)
  lines = ensemble_budget.report_lines(
      ensemble_budget.search(options, labels, limit=130, base_bytes=30), 130)
  assert "model0" in lines[1] and "uint8" in lines[1] and "130 bytes of 130" in lines[-1]


def test_every_gap_is_calculate_gap_of_the_mixture_to_the_bit(monkeypatch):
  created = []

  class RecordedMixtureGap(ensemble_weights.MixtureGap):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      created.append(self)

  monkeypatch.setattr(ensemble_weights, "MixtureGap", RecordedMixtureGap)
  labels, rng = labels_and_noise(3)
  values = [predictions(labels, rng, slice(k * 50, k * 50 + 70), 0.4) for k in range(4)]
  options = [option(k, "float32", 10, v) for k, v in enumerate(values)]
  result = ensemble_budget.search(options, labels, limit=30, top_k=5)
  assert len(result.options) == 3
  for entry in options:
    assert entry.gap == eval_util.calculate_gap(entry.predictions, labels, 5)
  mixed = ensemble_weights.mix([o.predictions for o in result.options], result.weights)
  assert result.gap == eval_util.calculate_gap(mixed, labels, 5)
  # one MixtureGap scored the beam search and the weight search, from candidates
  assert len(created) == 1 and created[0].full_calls == 0
  assert created[0].rows_scored == result.scored * VIDEOS
