"""The entropy membership-inference attack of the SSD repository.

Foster et al. 2024 (github.com/if-loops/selective-synaptic-dampening,
`metrics.py: get_membership_attack_prob`, after Chundawat et al. 2023,
arXiv:2205.08096): a logistic regression with balanced class weights is fit
on the softmax entropy of every retain example (members, label 1) and every
test example (non-members, label 0); the result is the fraction of forget
examples it predicts to be members. Lower means the forget set looks less
like training data; the oracle's value is the target.
"""
import numpy as np


# The reference fits LogisticRegression(class_weight="balanced", solver="lbfgs",
# multi_class="multinomial") with the default C=1. scikit-learn >= 1.8 has no
# multi_class and fits two classes as one binomial model; a two-class
# multinomial model with C=1 splits its weight w as +w/2 and -w/2, which halves
# the L2 penalty, and is the binomial model with C=2 (intercepts are unpenalised).
C = 2.0


def entropy_mia(entropy_retain: np.ndarray, entropy_test: np.ndarray,
                entropy_forget: np.ndarray) -> float:
  """Percent of forget examples the entropy attack predicts to be members."""
  if len(entropy_forget) == 0:
    return float('nan')
  features = np.concatenate([entropy_retain, entropy_test]).astype(np.float64)[:, None]
  labels = np.concatenate([np.ones(len(entropy_retain)), np.zeros(len(entropy_test))])
  from sklearn.linear_model import LogisticRegression   # loaded only when the attack runs
  attack = LogisticRegression(C=C, class_weight='balanced', solver='lbfgs')
  attack.fit(features, labels)
  return float(100.0 * np.mean(attack.predict(np.asarray(entropy_forget, np.float64)[:, None])))
