"""ensemble_weights.MixtureGap and GapObjective against eval_util.calculate_gap of mix():
the same float, bit for bit, whichever of the candidate and full paths scores a video."""

import numpy as np
import pytest

from conftest import yt8m

eval_util = yt8m("eval_util")
weights_lib = yt8m("ensemble_weights")

VIDEOS, CLASSES = 150, 200


def full_gap(members, labels, weights, top_k):
  return eval_util.calculate_gap(weights_lib.mix(members, weights), labels, top_k)


def outcome(function, *args):
  """function(*args), or the type of the exception it raised."""
  try:
    return function(*args)
  except Exception as error:  # pylint: disable=broad-except
    return type(error)


def random_labels(rng, videos=VIDEOS, classes=CLASSES):
  labels = rng.random((videos, classes)) < 0.03
  labels[np.arange(videos), rng.integers(0, classes, videos)] = True
  return labels


def related_members(rng, count, videos=VIDEOS, classes=CLASSES, dtype=np.float32):
  """Members that mostly agree on each video's best classes (as trained models do)."""
  shared = rng.random((videos, classes)) ** 4
  return [(0.7 * shared + 0.3 * rng.random((videos, classes))).astype(dtype)
          for _ in range(count)]


def random_weights(rng, count):
  weights = rng.dirichlet(np.ones(count))
  weights[rng.random(count) < 0.25] = 0.0
  return [float(w) for w in weights]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_equals_calculate_gap_of_the_mix(dtype):
  rng = np.random.default_rng(0)
  labels = random_labels(rng)
  members = related_members(rng, 4, dtype=dtype)
  gap = weights_lib.MixtureGap(labels, top_k=5, candidates_per_member=12)
  for count in range(1, 5):
    for weights in [[1.0] * count, [0.0] * count, [0.0] + [1.0] * (count - 1)] + [
        random_weights(rng, count) for _ in range(8)]:
      assert gap(members[:count], weights) == full_gap(members[:count], labels, weights, 5)
  assert gap.full_calls == 0 and gap.rows_scored == 4 * 11 * VIDEOS
  assert gap.fallback_rows < gap.rows_scored / 2  # most videos ranked from candidates
  # members are scored in the order given (float32 sums are not associative)
  assert gap(members[::-1], [0.2, 0.3, 0.1, 0.4]) == full_gap(members[::-1], labels,
                                                             [0.2, 0.3, 0.1, 0.4], 5)


def test_gap_objective_scores_with_mixture_gap():
  rng = np.random.default_rng(1)
  labels = random_labels(rng)
  members = related_members(rng, 3)
  objective = weights_lib.GapObjective(members, labels, top_k=20)
  for weights in ([0.34, 0.33, 0.33], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]):
    assert objective(weights) == full_gap(members, labels, weights, 20)
  assert objective.mixture_gap.rows_scored == 3 * VIDEOS and len(objective.cache) == 3
  shared = weights_lib.MixtureGap(labels, 20)
  assert weights_lib.GapObjective(members, labels, 20, mixture_gap=shared).mixture_gap is shared


def tied_members(rng):
  """Members whose rows fail the bound: few distinct values (many ties at the k-th score and
  at each member's bound), constant rows, and a member unrelated to the others."""
  coarse = [(rng.integers(0, 4, (VIDEOS, CLASSES)) / 3.0).astype(np.float32) for _ in range(2)]
  coarse[0][:20] = 0.5  # constant rows
  coarse[1][10:30] = 0.25
  unrelated = rng.random((VIDEOS, CLASSES)).astype(np.float32)
  return coarse + [unrelated] + related_members(rng, 1)


def test_rows_that_fail_the_bound_are_ranked_in_full():
  rng = np.random.default_rng(2)
  labels = random_labels(rng)
  members = tied_members(rng)
  gap = weights_lib.MixtureGap(labels, top_k=6, candidates_per_member=10)
  fallback_before = 0
  for subset in ([0], [1], [0, 1], [2, 3], [0, 2, 3], [3, 0, 1, 2]):
    chosen = [members[i] for i in subset]
    for weights in [[1.0] * len(subset)] + [random_weights(rng, len(subset)) for _ in range(4)]:
      assert gap(chosen, weights) == full_gap(chosen, labels, weights, 6), (subset, weights)
    assert gap.fallback_rows > fallback_before, subset  # every subset has such rows
    fallback_before = gap.fallback_rows
  assert gap.full_calls == 0 and gap.fallback_rows < gap.rows_scored


def test_k_larger_than_the_candidates_or_the_classes():
  rng = np.random.default_rng(3)
  labels = random_labels(rng)
  members = related_members(rng, 3) + [related_members(rng, 1)[0][:, :7]]
  for top_k, count in ((9, 1), (9, 2), (9, 3), (30, 3), (CLASSES, 2), (CLASSES + 5, 3)):
    gap = weights_lib.MixtureGap(labels, top_k=top_k, candidates_per_member=8)
    for weights in ([1.0] * count, random_weights(rng, count)):
      assert gap(members[:count], weights) == full_gap(members[:count], labels, weights, top_k)
    # k above all candidates (count x 8) or all classes: every mixture scored in full
    assert (gap.full_calls > 0) == (min(top_k, CLASSES) > 8 * count), (top_k, count)
  # k above one member's candidates but not the union's: too few distinct candidates
  gap = weights_lib.MixtureGap(labels, top_k=9, candidates_per_member=8)
  assert gap([members[0], members[0]], [0.5, 0.5]) == full_gap([members[0]] * 2, labels,
                                                                [0.5, 0.5], 9)
  assert gap.fallback_rows == VIDEOS and gap.full_calls == 0
  # few classes (candidates_per_member >= classes), labels of another shape: as calculate_gap
  few = random_labels(rng, classes=7)
  assert (weights_lib.MixtureGap(few, 3, 8)([members[3]], [1.0])
          == full_gap([members[3]], few, [1.0], 3))
  assert outcome(weights_lib.MixtureGap(few, 3, 4), members[:1], [1.0]) is ValueError


def test_negative_or_nan_weights_and_nan_predictions_behave_as_the_full_path():
  rng = np.random.default_rng(4)
  labels = random_labels(rng)
  members = related_members(rng, 2)
  with_nan = members[1].copy()
  with_nan[5, 3] = np.nan
  with_inf = members[1].copy()
  with_inf[7, :] = np.inf
  cases = [(members, [0.5, -0.5]), (members, [-1.0, 0.0]), (members, [0.5, np.nan]),
           (members, [np.inf, 0.5]), (members, [1e39, 1.0]), (members, [3e38, 3e38]),
           ([members[0], with_nan], [0.5, 0.5]), ([members[0], with_nan], [1.0, 0.0]),
           ([members[0], with_inf], [0.5, 0.5]), ([members[0], with_inf], [1.0, 0.0])]
  for top_k in (5, 60):
    gap = weights_lib.MixtureGap(labels, top_k=top_k, candidates_per_member=10)
    with np.errstate(all="ignore"):
      for chosen, weights in cases:
        expected = outcome(full_gap, chosen, labels, weights, top_k)
        assert outcome(gap, chosen, weights) == expected, (weights, expected)
    assert gap.full_calls == len(cases) and gap.rows_scored == 0
  # the NaN is found whichever path would have ranked its video
  with pytest.raises(ValueError, match="NaN"):
    weights_lib.MixtureGap(labels, top_k=5)([members[0], with_nan], [0.5, 0.5])
  # without true labels calculate_gap returns 0.0 before looking at the scores
  none = np.zeros_like(labels)
  assert weights_lib.MixtureGap(none, 5)(members, [0.5, 0.5]) == 0.0
  assert weights_lib.MixtureGap(none, 5)([with_nan], [1.0]) == 0.0
