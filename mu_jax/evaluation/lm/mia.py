"""Membership-inference attacks on LM sequences: per-sequence scores, AUC and TPR at low FPR.

Scores follow open-unlearning src/evals/metrics/mia/*.py and its sign
convention (mia/__init__.py:20-21): every score is loss-like, so a LOWER
score means MORE likely a member. `auc` is open-unlearning's mia/utils.py:64-68,
roc_auc_score with members labelled 0 and non-members 1: 1.0 when every member
scores below every non-member, 0.5 for chance, ties counting one half.

Token arrays come from `tokens.token_statistics` (host or device arrays).
open-unlearning scores Min-K% and Min-K%++ on the answer tokens WITHOUT the
last one, the EOS (metrics/utils.py:129-131, `tokenwise_logprobs`), but LOSS,
zlib and reference on all of them (`evaluate_probability`); `drop_last` keeps
that split and can be turned off.
"""
import zlib

import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.evaluation.lm._checks import finite_array, same_length

# open-unlearning configs/eval/{tofu,muse}_metrics/mia_min_k*.yaml ship k: 0.4,
# as MUSE's PrivLeak MIA Min-40% (muse_bench eval.py:18).
MIN_K = 0.4
# open-unlearning mia/min_k_plus_plus.py:32 clamps sigma^2 at 1e-6; the
# mink-plus-plus run.py:109 has no floor (pass sigma_floor=0 for it).
SIGMA_FLOOR = 1e-3
# open-unlearning metrics/utils.py:129-131 leaves out the EOS prediction for Min-K%(++).
DROP_LAST = True
# 1%: the low-FPR operating point this library reports (TPR at low FPR as argued
# by Carlini et al. 2022, "Membership inference attacks from first principles").
TPR_FPR = 0.01
ATTACKS = ('loss', 'zlib', 'min_k', 'min_k++', 'ref')   # open-unlearning mia/all_attacks.py:12-19


def loss_score(nll_mean) -> np.ndarray:
  """LOSS (Yeom et al. 2018): the mean answer-token NLL (open-unlearning mia/loss.py:14-16)."""
  return finite_array('nll_mean', nll_mean, 1)


def zlib_score(nll_mean, texts) -> np.ndarray:
  """zlib (Carlini et al. 2021): mean NLL / len(zlib.compress(text.encode('utf-8'))).

  The MEAN (not total) NLL over the zlib length of the scored text in bytes:
  open-unlearning mia/zlib.py:25-29, as muse_bench metrics/privleak.py:36,40 and
  mink-plus-plus run.py:92 (there as log-likelihood, sign flipped). `texts` are
  the decoded scored tokens, special tokens skipped (metrics/utils.py:333-340).
  """
  nll = finite_array('nll_mean', nll_mean, 1)
  same_length('zlib_score', nll, texts)
  sizes = np.array([len(zlib.compress(text.encode('utf-8'))) for text in texts], np.float64)
  return nll / sizes


def _scored_mask(mask, drop_last: bool) -> np.ndarray:
  """The boolean [N, L] positions to score, less each row's last one when `drop_last`."""
  keep = np.asarray(mask) > 0
  if keep.ndim != 2 or keep.size == 0:
    raise MuJaxError(f'mask must be a non-empty [N, L] array; got shape {keep.shape}.')
  if drop_last:
    keep = keep.copy()
    last = keep.shape[1] - 1 - np.argmax(keep[:, ::-1], axis=1)
    keep[np.arange(len(keep)), last] = False
  if not np.all(keep.any(axis=1)):
    raise MuJaxError('A sequence has no tokens left to score for Min-K%.')
  return keep


def _min_k_mean(values: np.ndarray, keep: np.ndarray, k: float) -> np.ndarray:
  """Per row, minus the mean of the lowest max(1, int(k * count)) kept values.

  max(1, .) and int() truncation: open-unlearning mia/min_k.py:24-26 (muse_bench
  privleak.py:44 and mink-plus-plus run.py:104 have no max(1, .)).
  """
  if not 0 < k <= 1:
    raise MuJaxError(f'Min-K% needs k in (0, 1]; got {k}.')
  if not np.all(np.isfinite(values[keep])):
    raise MuJaxError('Min-K% got a NaN or infinite token statistic.')
  count = keep.sum(axis=1)
  num = np.maximum(1, (count * k).astype(np.int64))
  lowest = np.sort(np.where(keep, values, np.inf), axis=1)
  taken = np.arange(values.shape[1])[None, :] < num[:, None]
  return -np.sum(np.where(taken, lowest, 0.0), axis=1) / num


def min_k_score(logp, mask, *, k: float = MIN_K, drop_last: bool = DROP_LAST) -> np.ndarray:
  """Min-K% Prob (Shi et al. 2024): minus the mean of the lowest k% token log-probs."""
  keep = _scored_mask(mask, drop_last)
  return _min_k_mean(np.asarray(logp, np.float64), keep, k)


def min_k_plus_plus_score(logp, mu, sigma, mask, *, k: float = MIN_K,
                          drop_last: bool = DROP_LAST,
                          sigma_floor: float = SIGMA_FLOOR) -> np.ndarray:
  """Min-K%++ (Zhang et al. 2024): Min-K% of (log p(x_t) - mu_t) / max(sigma_t, floor).

  mu_t = E_z[log p(z)], sigma_t^2 = E_z[log p(z)^2] - mu_t^2 under the model's
  next-token distribution: mink-plus-plus run.py:99-113, open-unlearning
  mia/min_k_plus_plus.py:26-39.
  """
  keep = _scored_mask(mask, drop_last)
  scale = np.maximum(np.asarray(sigma, np.float64), sigma_floor)
  with np.errstate(divide='ignore', invalid='ignore'):
    z = (np.asarray(logp, np.float64) - np.asarray(mu, np.float64)) / scale
  return _min_k_mean(z, keep, k)


def reference_score(nll_mean, reference_nll_mean) -> np.ndarray:
  """Reference attack: NLL_target - NLL_reference of the mean answer-token NLLs.

  A difference, not a ratio: open-unlearning mia/reference.py:23-25.
  """
  target = finite_array('nll_mean', nll_mean, 1)
  reference = finite_array('reference_nll_mean', reference_nll_mean, 1)
  same_length('reference_score', target, reference)
  return target - reference


def _labelled(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
  """Pooled scores and labels, members 0 and non-members 1 (open-unlearning mia/utils.py:64-67)."""
  member = finite_array('member_scores', member_scores, 1)
  nonmember = finite_array('nonmember_scores', nonmember_scores, 1)
  labels = np.concatenate([np.zeros(len(member)), np.ones(len(nonmember))])
  return np.concatenate([member, nonmember]), labels


def auc(member_scores, nonmember_scores) -> float:
  """P(member score < non-member score) + P(tie) / 2: open-unlearning's roc_auc_score."""
  scores, labels = _labelled(member_scores, nonmember_scores)
  from sklearn.metrics import roc_auc_score   # loaded only when an attack is scored
  return float(roc_auc_score(labels, scores))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = TPR_FPR) -> float:
  """The largest TPR of a threshold rule 'member iff score <= t' whose FPR is at most `fpr`.

  No interpolation: the TPR of the last ROC point with FPR <= fpr, as
  mink-plus-plus run.py:118-121 (`tpr_list[np.where(fpr_list <= 0.05)[0][-1]]`),
  on sklearn's roc_curve. 0 when no threshold reaches a member at that FPR.
  """
  if not 0 <= fpr <= 1:
    raise MuJaxError(f'tpr_at_fpr needs fpr in [0, 1]; got {fpr}.')
  scores, labels = _labelled(member_scores, nonmember_scores)
  from sklearn.metrics import roc_curve   # loaded only when an attack is scored
  fprs, tprs, _ = roc_curve(1 - labels, -scores)
  return float(tprs[np.flatnonzero(fprs <= fpr)[-1]])


def attack_scores(stats: dict, *, texts=None, reference: dict | None = None,
                  k: float = MIN_K) -> dict[str, np.ndarray]:
  """Every attack's per-sequence scores from `token_statistics` output.

  zlib needs the scored `texts`, the reference attack the reference model's
  statistics on the same batch; each is left out without them.
  """
  nll = np.asarray(stats['nll_mean'])
  scores = {'loss': loss_score(nll),
            'min_k': min_k_score(stats['logp'], stats['mask'], k=k),
            'min_k++': min_k_plus_plus_score(stats['logp'], stats['mu'], stats['sigma'],
                                             stats['mask'], k=k)}
  if texts is not None:
    scores['zlib'] = zlib_score(nll, texts)
  if reference is not None:
    scores['ref'] = reference_score(nll, np.asarray(reference['nll_mean']))
  return {name: scores[name] for name in ATTACKS if name in scores}


def evaluate_attacks(member: dict, nonmember: dict, *, member_texts=None, nonmember_texts=None,
                     member_reference: dict | None = None,
                     nonmember_reference: dict | None = None, k: float = MIN_K,
                     fpr: float = TPR_FPR) -> dict[str, dict[str, float]]:
  """{attack: {'auc', 'tpr_at_fpr'}} of members (forget) against non-members (holdout).

  zlib runs when both sides' texts are given, the reference attack when both
  sides' reference statistics are.
  """
  with_texts = member_texts is not None and nonmember_texts is not None
  with_reference = member_reference is not None and nonmember_reference is not None
  members = attack_scores(member, texts=member_texts if with_texts else None,
                          reference=member_reference if with_reference else None, k=k)
  nonmembers = attack_scores(nonmember, texts=nonmember_texts if with_texts else None,
                             reference=nonmember_reference if with_reference else None, k=k)
  return {name: {'auc': auc(members[name], nonmembers[name]),
                 'tpr_at_fpr': tpr_at_fpr(members[name], nonmembers[name], fpr)}
          for name in members}
