"""The NeurIPS 2023 Machine Unlearning Challenge score.

Triantafillou et al. 2024 ("Are we making progress in unlearning? Findings
from the first NeurIPS unlearning competition", arXiv:2406.09073; scoring
code github.com/google-deepmind/unlearning_evaluation, metric.py and main.py).
For each forget example, the margins of N unlearned and N retrained models
are two samples; a family of threshold attacks tells them apart with false
positive / false negative rates (FPR, FNR), each giving an (ε, δ)-style
estimate ε = max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR).
The example's ε is the largest over the attacks, capped at EPSILON_CAP.
Examples are bucketed by ε in steps of 0.5 worth 1, 1/2, 1/4, ... points up
to ⌈log(N − 1)⌉; the forget quality F is the mean of the points, and

  score = F · (RA_unlearned / RA_retrained) · (TA_unlearned / TA_retrained),

accuracies being means over the N models of each side.

The attacks, exactly as the reference: "positive" is the side with the larger
median. Single thresholds t on a grid of ⌈100·range⌉ points over both samples
predict positive when φ ≥ t. Double thresholds predict positive inside [l, r]
with "positive" the narrower sample: r runs over ⌈100·(4 + range_pos −
width)⌉ points from min_pos + width − 2 to max_pos + 2, l over 400 points from
r − width − 2 to r − width + 2, width being the narrower range. A threshold
with FPR = FNR = 0 gives ε = ∞ (capped); one with exactly one of them 0 is
discarded; negative ε is clipped to 0. If the narrower range is below 1% of
the wider, ε = EPSILON_CAP outright (a far too peaky unlearned distribution).

Rates are counted exactly with sorted samples and `searchsorted`, in float64
(the reference tiles every threshold against every model on a GPU and keeps
rates in float32). The grids have data-dependent sizes, so this host NumPy
code is not jitted. One addition: two samples that are each a single point
(zero range) get ε = 0 when the points coincide, where the reference fails
an assertion.
"""
from typing import NamedTuple

import numpy as np

from mu_jax.errors import MuJaxError

DELTA = 1e-5                 # reference metric.py: DELTA = 1e-05
EPSILON_CAP = 50.0           # reference metric.py: EPSILON_CAP = 50
THRESHOLDS_PER_UNIT = 100    # reference metric.py: NUM_THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0                 # reference _get_double_threshold_rates: buffer = 2.0
PEAKY_RATIO = 0.01           # reference _get_epsilons: smallest / largest < 0.01
BUCKET_SIZE = 0.5            # reference compute_forget_score_from_confs: bucket_size = 0.5


def _count_in(sorted_values: np.ndarray, lo, hi) -> np.ndarray:
  """#{v : lo ≤ v ≤ hi} for arrays of bounds (0 where lo > hi)."""
  inside = (np.searchsorted(sorted_values, hi, side='right')
            - np.searchsorted(sorted_values, lo, side='left'))
  return np.maximum(inside, 0)


def _rates(tp: np.ndarray, num_pos: int, fp: np.ndarray, num_neg: int):
  """(TPR, FNR, FPR, TNR) from counts of predicted positives on each side."""
  return tp / num_pos, (num_pos - tp) / num_pos, fp / num_neg, (num_neg - fp) / num_neg


def _double_threshold_rates(pos: np.ndarray, neg: np.ndarray):
  """(TPR, FNR, FPR, TNR) of the window rules [l, r], positive = the narrower sample."""
  if np.ptp(pos) >= np.ptp(neg):
    pos, neg = neg, pos
  width = np.ptp(pos)
  low, high = pos.min() + width - BUFFER, pos.max() + BUFFER
  right = np.linspace(low, high, int(np.ceil((high - low) * THRESHOLDS_PER_UNIT)))
  num_left = int(np.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
  left = np.linspace(right - width - BUFFER, right - width + BUFFER, num_left, axis=-1)
  right = np.broadcast_to(right[:, None], left.shape)
  return _rates(_count_in(np.sort(pos), left, right).ravel(), len(pos),
                _count_in(np.sort(neg), left, right).ravel(), len(neg))


def _single_threshold_rates(pos: np.ndarray, neg: np.ndarray):
  """(TPR, FNR, FPR, TNR) of the rules φ ≥ t, positive = the larger-median sample."""
  both = np.concatenate([pos, neg])
  lo, hi = both.min(), both.max()
  t = np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
  return _rates(len(pos) - np.searchsorted(np.sort(pos), t, side='left'), len(pos),
                len(neg) - np.searchsorted(np.sort(neg), t, side='left'), len(neg))


def example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float = DELTA) -> float:
  """ε of one example from its margins under the two sides (`pos` has the larger median)."""
  largest, smallest = max(np.ptp(pos), np.ptp(neg)), min(np.ptp(pos), np.ptp(neg))
  if largest == 0:
    return 0.0 if pos[0] == neg[0] else EPSILON_CAP
  if smallest / largest < PEAKY_RATIO:
    return EPSILON_CAP
  rates = [np.concatenate(r) for r in zip(_double_threshold_rates(pos, neg),
                                         _single_threshold_rates(pos, neg))]
  tpr, fnr, fpr, tnr = rates
  if np.any((fpr + fnr == 0) & (tpr + tnr == 2)):
    return EPSILON_CAP   # a perfectly separating threshold: ε = ∞, capped
  keep = fpr * fnr != 0
  fpr, fnr = fpr[keep], fnr[keep]
  with np.errstate(divide='ignore', invalid='ignore'):
    eps = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
  eps = eps[~np.isnan(eps)]
  if eps.size == 0:
    raise MuJaxError('No threshold attack gave a finite epsilon for an example; the two '
                     'margin samples are degenerate (check for NaN margins).')
  return float(np.clip(eps.max(), 0.0, EPSILON_CAP))


def epsilons(unlearned, retrained, delta: float = DELTA) -> np.ndarray:
  """Per-example ε [S] from margins [N, S] of unlearned and of retrained models."""
  unlearned, retrained = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
  if unlearned.shape != retrained.shape or unlearned.ndim != 2:
    raise MuJaxError(f'The challenge score needs margins [models, examples] of equal shape '
                     f'on both sides; got {unlearned.shape} and {retrained.shape}.')
  if not (np.isfinite(unlearned).all() and np.isfinite(retrained).all()):
    raise MuJaxError('The challenge score got non-finite margins; clip the margins first.')
  retrained_positive = np.median(retrained, 0) > np.median(unlearned, 0)
  pos = np.where(retrained_positive, retrained, unlearned)
  neg = np.where(retrained_positive, unlearned, retrained)
  return np.array([example_epsilon(pos[:, s], neg[:, s], delta) for s in range(pos.shape[1])])


def bucket_points(num_models: int) -> list[tuple[float, float]]:
  """(bucket start, points) pairs: 0.5-wide ε buckets worth 1, 1/2, ... up to ⌈log(N − 1)⌉."""
  if num_models < 3:
    raise MuJaxError(f'The challenge score needs at least 3 models per side, got {num_models}.')
  top = np.ceil(np.log(num_models - 1))
  out, start, points = [], 0.0, 1.0
  while start + BUCKET_SIZE <= top:
    out.append((start, points))
    start, points = start + BUCKET_SIZE, points / 2
  return out


def forget_quality(eps: np.ndarray, num_models: int) -> float:
  """F: mean over examples of the points of the first bucket with ε < its end (else 0)."""
  buckets = bucket_points(num_models)
  total = 0.0
  for e in eps:
    total += next((points for start, points in buckets if e < start + BUCKET_SIZE), 0.0)
  return total / len(eps) if len(eps) else float('nan')


class ChallengeScore(NamedTuple):
  score: float            # F · RA ratio · TA ratio
  forget_quality: float   # F in [0, 1]
  ra_ratio: float
  ta_ratio: float
  epsilons: np.ndarray    # per forget example


def challenge_score(unlearned, retrained, *, retain_acc_unlearned: float,
                    retain_acc_retrained: float, test_acc_unlearned: float,
                    test_acc_retrained: float, delta: float = DELTA) -> ChallengeScore:
  """The challenge's final score from forget-set margins and mean accuracies."""
  eps = epsilons(unlearned, retrained, delta)
  quality = forget_quality(eps, np.shape(unlearned)[0])
  ra = retain_acc_unlearned / retain_acc_retrained
  ta = test_acc_unlearned / test_acc_retrained
  return ChallengeScore(quality * ra * ta, quality, ra, ta, eps)
