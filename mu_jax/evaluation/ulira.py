"""U-LiRA: a per-example Gaussian likelihood-ratio attack, unlearned vs retrained.

Hayes et al. 2024 ("Inexact Unlearning Needs More Careful Evaluations to
Avoid a False Sense of Privacy", arXiv:2403.01218) adapt LiRA (Carlini et al.
2022) to unlearning: for each forget example, Gaussians are fitted to its
margin under shadow unlearned models and under shadow retrained models; a
target model's margin is called "unlearned" when it is more likely under the
first Gaussian. Over balanced targets from both sides the attack's accuracy
is 50% when unlearning is indistinguishable from retraining.

Here the N unlearned models and N oracles are split into `folds` folds (the
same seeded permutation on both sides when they have equal sizes); each fold
in turn is the targets and the rest are the shadows, so every model is
attacked exactly once, by Gaussians it did not help fit. Means and standard
deviations are the maximum-likelihood fits (scipy.stats.norm.fit), with
LiRA's 1e-30 added to each standard deviation. A tie (equal likelihoods) is
called "retrained". Besides the accuracy, `tpr_at_fpr` reads the attack's ROC
at a low false-positive rate, over all targets and examples pooled, as LiRA
reports it.

Shadow models: with `ulira_scores` every model shares D and D_f and differs
only by seed (the rigorous 'shared' protocol, reusing its ensembles at no
extra training), so the Gaussians are narrower and the attack usually
stronger than the paper's. Hayes et al. train each shadow with its own random
forget set, so an example's Gaussians also absorb which other rows were
trained on and forgotten; `masked_ulira_scores` fits over such models (the
'hayes' protocol), each example only over the models that forgot it.
"""
import numpy as np

from mu_jax.errors import MuJaxError

FOLDS = 2           # two halves: as many shadows as targets on each side
STD_FLOOR = 1e-30   # LiRA official plot.py: norm.logpdf(sc, mean_in, std_in + 1e-30)
MIN_SHADOWS = 2     # models per example and side a masked fit needs: 'shared' folds always have 2
# The false-positive rates whose TPR the rigorous table reports: 0.1% as LiRA's
# official plot.py (`tpr[np.where(fpr < .001)[0][-1]]`), and 1% beside it.
LOW_FPRS = (0.001, 0.01)
# Shadow models: 'shared' (one D and D_f for all, seeds differ) or 'hayes' (per-model forget sets).
PROTOCOLS = ('shared', 'hayes')


def _log_density(x, mean, std):
  std = std + STD_FLOOR
  with np.errstate(over='ignore', divide='ignore'):
    return -0.5 * np.square((x - mean) / std) - np.log(std)


def _fit(shadows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return shadows.mean(0), shadows.std(0)


def _folds(num_models: int, folds: int, seed: int) -> list[np.ndarray]:
  return np.array_split(np.random.default_rng(seed).permutation(num_models), folds)


def _check_folds(folds: int, num_unlearned: int, num_oracle: int) -> None:
  if folds < 2 or min(num_unlearned, num_oracle) < 2 * folds:
    raise MuJaxError(f'U-LiRA with {folds} folds needs at least 2 models per fold and side '
                     f'(and folds >= 2); got {num_unlearned} and {num_oracle} models.')


def ulira_scores(unlearned, oracle, *, folds: int = FOLDS,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Log-likelihood ratios log N_u(x) − log N_o(x) of every target margin.

  Returns (scores of the unlearned targets [M_u, S], of the oracle targets
  [M_o, S]); positive means "unlearned". For ROC curves and `ulira_accuracy`.
  """
  unlearned, oracle = np.asarray(unlearned, np.float64), np.asarray(oracle, np.float64)
  if unlearned.ndim != 2 or oracle.ndim != 2 or unlearned.shape[1] != oracle.shape[1]:
    raise MuJaxError(f'U-LiRA needs margins [models, examples] for the same examples on both '
                     f'sides; got {unlearned.shape} and {oracle.shape}.')
  _check_folds(folds, len(unlearned), len(oracle))
  fold_u, fold_o = _folds(len(unlearned), folds, seed), _folds(len(oracle), folds, seed)
  scores_u, scores_o = np.zeros_like(unlearned), np.zeros_like(oracle)
  for targets_u, targets_o in zip(fold_u, fold_o):
    mean_u, std_u = _fit(np.delete(unlearned, targets_u, axis=0))
    mean_o, std_o = _fit(np.delete(oracle, targets_o, axis=0))
    for values, targets, out in ((unlearned, targets_u, scores_u), (oracle, targets_o, scores_o)):
      x = values[targets]
      with np.errstate(invalid='ignore'):
        ratio = _log_density(x, mean_u, std_u) - _log_density(x, mean_o, std_o)
      out[targets] = np.nan_to_num(ratio, nan=0.0)   # -inf - -inf: no evidence either way
  return scores_u, scores_o


def masked_fit(shadows: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
  """Per-example (mean, maximum-likelihood std, count) over the models with mask True.

  shadows, mask: [models, examples]; values where mask is False are ignored
  (they may be NaN). An example no model counts has a NaN mean and std.
  """
  mask = np.asarray(mask, bool)
  count = mask.sum(0)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean = np.where(mask, shadows, 0.0).sum(0) / count
    var = np.where(mask, np.square(shadows - mean), 0.0).sum(0) / count
  return mean, np.sqrt(var), count


def counted_pairs(forgotten: np.ndarray, *, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
  """[models, examples] bool: the (target model, example) pairs `masked_ulira_scores` scores.

  A pair counts when the target model forgot the example and, among the other
  folds' models, at least MIN_SHADOWS forgot it too (a Gaussian needs a spread).
  """
  forgotten = np.asarray(forgotten, bool)
  counted = np.zeros_like(forgotten)
  for targets in _folds(len(forgotten), folds, seed):
    fitted = np.delete(forgotten, targets, axis=0).sum(0) >= MIN_SHADOWS
    counted[targets] = forgotten[targets] & fitted
  return counted


def masked_ulira_scores(unlearned, oracle, forgotten, *, folds: int = FOLDS,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`ulira_scores` over models that each forgot their own subset (Hayes et al.'s shadows).

  unlearned[k], oracle[k]: margins [K, S] of the model unlearned from, and of
  the one retrained without, the examples with forgotten[k] True. Each fold
  in turn is the targets; an example's Gaussians are fitted (`masked_fit`)
  over the other folds' models that forgot it, and only `counted_pairs` are
  scored. Returns the scores of those pairs, model-major: (unlearned targets,
  oracle targets), both 1-D and of equal length.
  """
  unlearned, oracle = np.asarray(unlearned, np.float64), np.asarray(oracle, np.float64)
  forgotten = np.asarray(forgotten, bool)
  if unlearned.ndim != 2 or not unlearned.shape == oracle.shape == forgotten.shape:
    raise MuJaxError(f'Masked U-LiRA needs margins and a forgotten mask of one shape '
                     f'[models, examples]; got {unlearned.shape}, {oracle.shape} and '
                     f'{forgotten.shape}.')
  _check_folds(folds, len(unlearned), len(oracle))
  scores_u, scores_o = np.zeros_like(unlearned), np.zeros_like(oracle)
  for targets in _folds(len(unlearned), folds, seed):
    shadow_mask = np.delete(forgotten, targets, axis=0)
    mean_u, std_u, _ = masked_fit(np.delete(unlearned, targets, axis=0), shadow_mask)
    mean_o, std_o, _ = masked_fit(np.delete(oracle, targets, axis=0), shadow_mask)
    for values, out in ((unlearned, scores_u), (oracle, scores_o)):
      with np.errstate(invalid='ignore'):
        ratio = (_log_density(values[targets], mean_u, std_u)
                 - _log_density(values[targets], mean_o, std_o))
      out[targets] = np.nan_to_num(ratio, nan=0.0)
  counted = counted_pairs(forgotten, folds=folds, seed=seed)
  return scores_u[counted], scores_o[counted]


def accuracy(scores_u: np.ndarray, scores_o: np.ndarray) -> float:
  """Balanced accuracy in percent of the calls "unlearned" (score > 0) and "retrained"."""
  if scores_u.size == 0:
    return float('nan')
  return float(50.0 * (np.mean(scores_u > 0) + np.mean(scores_o <= 0)))


def ulira_accuracy(unlearned, oracle, *, folds: int = FOLDS, seed: int = 0) -> float:
  """Balanced attack accuracy in percent over all targets and examples (50 is ideal)."""
  return accuracy(*ulira_scores(unlearned, oracle, folds=folds, seed=seed))


def tpr_at_fpr(scores_u: np.ndarray, scores_o: np.ndarray, fpr: float) -> float:
  """The attack's TPR in percent at a false-positive rate strictly below `fpr`.

  Unlearned targets are the positives. Over every threshold t (calling
  score >= t "unlearned"), the largest share of unlearned targets called
  unlearned among the thresholds that call fewer than `fpr` of the oracle
  targets unlearned: LiRA plot.py's `tpr[np.where(fpr < .001)[0][-1]]`, on
  the full ROC curve (no thresholds dropped). A perfect unlearner scores about
  100 · `fpr`.
  """
  pos, neg = np.sort(np.ravel(scores_u)), np.sort(np.ravel(scores_o))
  if pos.size == 0 or neg.size == 0:
    return float('nan')
  thresholds = np.append(np.unique(np.concatenate([pos, neg])), np.inf)
  false_pos = 1.0 - np.searchsorted(neg, thresholds, side='left') / neg.size
  true_pos = 1.0 - np.searchsorted(pos, thresholds, side='left') / pos.size
  return float(100.0 * true_pos[false_pos < fpr].max())
