"""MIA-efficacy: the SVC membership-inference attack pinned in DESIGN.md.

An RBF SVC (C=3, gamma='auto'; the SalUn / Unlearn-Sparse `SVC_MIA` settings)
is trained on the true-class confidence of retain examples (members, label 1)
versus test examples (non-members, label 0), the same number of each. The
efficacy is the fraction of forget examples it predicts to be non-members:
100% means the forget set looks like data the model never saw.
"""
import numpy as np


SVC_C = 3.0          # SalUn `evaluation/SVC_MIA.py`
SVC_GAMMA = 'auto'   # SalUn `evaluation/SVC_MIA.py`


def mia_efficacy(conf_retain: np.ndarray, conf_test: np.ndarray,
                 conf_forget: np.ndarray, *, seed: int = 0,
                 max_per_side: int = 0) -> float:
  """Percent of forget examples the attack calls non-members.

  Both shadow sides use `n = min(len(retain), len(test))` examples (capped at
  `max_per_side` when positive, to bound the SVC's quadratic cost), drawn
  without replacement by `seed`.
  """
  if len(conf_forget) == 0:
    return float('nan')
  n = min(len(conf_retain), len(conf_test))
  if max_per_side > 0:
    n = min(n, max_per_side)
  rng = np.random.default_rng(seed)
  members = rng.choice(conf_retain, n, replace=False)
  non_members = rng.choice(conf_test, n, replace=False)
  features = np.concatenate([members, non_members])[:, None]
  labels = np.concatenate([np.ones(n), np.zeros(n)])
  from sklearn.svm import SVC   # loaded only when the attack runs
  attack = SVC(C=SVC_C, gamma=SVC_GAMMA, kernel='rbf').fit(features, labels)
  return float(100.0 * np.mean(attack.predict(conf_forget[:, None]) == 0))
