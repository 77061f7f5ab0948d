"""The members, their storage and mixing weights of the best ensemble under a byte limit.

An option is one candidate model in one storage with its bytes and held-out predictions. A
beam search over sets (one option per candidate at most) extends every set by every option
that fits, the new member's weight found by a line search; the best `beam_width` sets go on.
Then single replacements are tried while one improves the GAP, and last the chosen set's
weights are searched on ensemble_weights' grid. Ties keep the earlier option (deterministic).
Every GAP is ensemble_weights.MixtureGap's: calculate_gap's of the mixture, to the bit.
"""

import dataclasses
from typing import List

import numpy as np

from . import ensemble_weights

# The new member's share of the mix tried when it joins; the best is refined once around.
JOIN_WEIGHTS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75)
REFINE = (-0.1, -0.05, 0.05, 0.1)


@dataclasses.dataclass
class Option:
  """One candidate in one storage."""
  candidate: int
  name: str  # the candidate's label in reports (its train_dir or checkpoint)
  storage: str
  bytes: int
  predictions: np.ndarray  # [videos, classes] on the held-out data
  gap: float = 0.0  # its own held-out GAP, filled by search()


@dataclasses.dataclass
class Result:
  options: List[Option]  # the members, in the order they joined
  weights: List[float]
  gap: float
  total_bytes: int  # base + members' bytes
  joins: List[dict]  # per member: option, gap of the ensemble once it joined
  scored: int  # GAPs computed


class BudgetTooSmall(ValueError):
  """Not even one option fits the limit."""


class _Scorer(object):
  """GAPs of mixtures of options' predictions, counted."""

  def __init__(self, labels, top_k):
    self.mixture_gap = ensemble_weights.MixtureGap(labels, top_k)
    self.count = 0

  def __call__(self, arrays, weights):
    self.count += 1
    return self.mixture_gap(arrays, weights)


def _join(scorer, members, weights, option):
  """(gap, weights) of members + option, the option's share searched, the others' ratios
  kept."""
  if not members:
    return option.gap, [1.0]
  arrays = [m.predictions for m in members] + [option.predictions]

  def score(share):
    return scorer(arrays, [w * (1 - share) for w in weights] + [share])

  shares = {share: score(share) for share in JOIN_WEIGHTS}
  best = max(shares, key=lambda s: (shares[s], -abs(s - 0.5)))
  for delta in REFINE:
    share = round(best + delta, 4)
    if 0 < share < 1 and share not in shares:
      shares[share] = score(share)
  best = max(shares, key=lambda s: (shares[s], -abs(s - 0.5)))
  return shares[best], [w * (1 - best) for w in weights] + [best]


@dataclasses.dataclass
class _State:
  members: list
  weights: list
  gap: float
  bytes: int
  joins: list

  def key(self):
    return tuple(sorted((m.candidate, m.storage) for m in self.members))


def _extensions(scorer, state, options, limit):
  taken = {m.candidate for m in state.members}
  for option in options:
    if option.candidate in taken or state.bytes + option.bytes > limit:
      continue
    gap, weights = _join(scorer, state.members, state.weights, option)
    yield _State(state.members + [option], weights, gap, state.bytes + option.bytes,
                 state.joins + [{"option": option, "gap": gap}])


def _beam(scorer, options, limit, base_bytes, beam_width):
  beam = [_State([], [], 0.0, base_bytes, [])]
  best = None
  while beam:
    grown, seen = [], set()
    for state in beam:
      for new in _extensions(scorer, state, options, limit):
        if new.key() not in seen and new.gap > state.gap:
          seen.add(new.key())
          grown.append(new)
    grown.sort(key=lambda s: -s.gap)  # stable: ties keep the earlier option
    beam = grown[:beam_width]
    if beam and (best is None or beam[0].gap > best.gap):
      best = beam[0]
  return best


def _replacements(scorer, state, options, limit):
  """The best state with one member replaced by another option that fits, or None."""
  best = None
  for index, member in enumerate(state.members):
    others = state.members[:index] + state.members[index + 1:]
    rest = [w for k, w in enumerate(state.weights) if k != index]
    total = sum(rest) or 1.0
    rest = [w / total for w in rest]
    taken = {o.candidate for o in others}
    for option in options:
      size = state.bytes - member.bytes + option.bytes
      if option is member or size > limit or option.candidate in taken:
        continue
      gap, weights = _join(scorer, others, rest, option)
      if gap > state.gap and (best is None or gap > best.gap):
        best = _State(others + [option], weights, gap, size,
                      [j for j in state.joins if j["option"] is not member]
                      + [{"option": option, "gap": gap}])
  return best


def search(options, labels, limit, base_bytes=0, top_k=20, beam_width=4, seed=0,
           restarts=5):
  """The Result of the best set of options under limit bytes (base_bytes: what the
  submission holds besides the members). labels: [videos, classes] bool."""
  scorer = _Scorer(labels, top_k)
  for option in options:
    option.gap = scorer([option.predictions], [1.0])
  fitting = [o for o in options if base_bytes + o.bytes <= limit]
  if not fitting:
    smallest = min(options, key=lambda o: o.bytes)
    raise BudgetTooSmall(
        "the limit of %d bytes holds no member: the smallest, %s in %s, needs %d bytes "
        "(%d with the rest of the submission)" % (limit, smallest.name, smallest.storage,
                                                   smallest.bytes, base_bytes + smallest.bytes))
  state = _beam(scorer, fitting, limit, base_bytes, beam_width)
  while (better := _replacements(scorer, state, fitting, limit)) is not None:
    state = better
  weights, gap = state.weights, state.gap
  if len(state.members) > 1:
    objective = ensemble_weights.GapObjective([m.predictions for m in state.members], labels,
                                              top_k, mixture_gap=scorer.mixture_gap)
    searched, searched_gap, _ = ensemble_weights.search(objective, len(state.members), seed,
                                                        restarts)
    scorer.count += len(objective.cache)
    if searched_gap > gap:
      weights, gap = searched, searched_gap
  return Result(state.members, [float(w) for w in weights], float(gap), state.bytes,
                state.joins, scorer.count)


def report_lines(result, limit):
  """The table: member, storage, bytes, own GAP, the ensemble's GAP as it joined, weight."""
  lines = ["%-3s %-40s %-8s %14s %9s %13s %7s" % (
      "#", "member", "storage", "bytes", "own GAP", "GAP once in", "weight")]
  for number, (join, weight) in enumerate(zip(result.joins, result.weights), 1):
    option = join["option"]
    lines.append("%-3d %-40s %-8s %14d %9.5f %13.5f %7.3f" % (
        number, option.name[-40:], option.storage, option.bytes, option.gap, join["gap"],
        weight))
  lines.append("ensemble GAP %.5f (weights searched), %d bytes of %d (%.1f%% of the limit), "
               "%d GAPs computed" % (result.gap, result.total_bytes, limit,
                                     100.0 * result.total_bytes / limit, result.scored))
  return lines
