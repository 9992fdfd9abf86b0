"""MIA-efficacy: the SVC membership-inference attack pinned in DESIGN.md.

An RBF SVC (C=3, gamma='auto'; the SalUn / Unlearn-Sparse `SVC_MIA` settings)
is trained on the true-class confidence of retain examples (members, label 1)
versus test examples (non-members, label 0), the same number of each. The
efficacy is the fraction of forget examples it predicts to be non-members:
100% means the forget set looks like data the model never saw.
"""
import numpy as np

from mu_jax.errors import MuJaxError

SVC_C = 3.0          # SalUn `evaluation/SVC_MIA.py`
SVC_GAMMA = 'auto'   # SalUn `evaluation/SVC_MIA.py`
# Which n rows of each side train the attack. 'sample': drawn without
# replacement by the seed, fair whatever order a source keeps its rows in.
# 'first': the first n of each, as SalUn `main_forget.py` (the retain rows
# `range(test_len)` against the whole test set).
MEMBERS = ('sample', 'first')


def shadow_sets(conf_retain: np.ndarray, conf_test: np.ndarray, *, seed: int = 0,
                max_per_side: int = 0,
                members: str = 'sample') -> tuple[np.ndarray, np.ndarray]:
  """The (member, non-member) rows the attack trains on, n = min(|retain|, |test|) each.

  n is capped at `max_per_side` when positive (it bounds the SVC's quadratic cost).
  """
  if members not in MEMBERS:
    raise MuJaxError(f'eval.mia_members={members!r} is not a way to pick the MIA rows; '
                     f'valid: {", ".join(MEMBERS)}.')
  n = min(len(conf_retain), len(conf_test))
  if max_per_side > 0:
    n = min(n, max_per_side)
  if members == 'first':
    return conf_retain[:n], conf_test[:n]
  rng = np.random.default_rng(seed)
  return rng.choice(conf_retain, n, replace=False), rng.choice(conf_test, n, replace=False)


def mia_efficacy(conf_retain: np.ndarray, conf_test: np.ndarray,
                 conf_forget: np.ndarray, *, seed: int = 0,
                 max_per_side: int = 0, members: str = 'sample') -> float:
  """Percent of forget examples the attack calls non-members (rows: `shadow_sets`)."""
  member_rows, non_member_rows = shadow_sets(conf_retain, conf_test, seed=seed,
                                             max_per_side=max_per_side, members=members)
  if len(conf_forget) == 0:
    return float('nan')
  n = len(member_rows)
  features = np.concatenate([member_rows, non_member_rows])[:, None]
  labels = np.concatenate([np.ones(n), np.zeros(n)])
  from sklearn.svm import SVC   # loaded only when the attack runs
  attack = SVC(C=SVC_C, gamma=SVC_GAMMA, kernel='rbf').fit(features, labels)
  return float(100.0 * np.mean(attack.predict(conf_forget[:, None]) == 0))
