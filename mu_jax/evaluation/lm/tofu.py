"""TOFU metrics (Maini et al. 2024) on per-item statistics and generated answers.

Every function follows open-unlearning's shipped default and TOFU's own code;
where the two differ the difference is stated beside the code. Losses are the
length-normalised answer NLLs, `nll_mean` of `tokens.token_statistics`.
"""
import functools

import numpy as np
from scipy import stats

from mu_jax.errors import MuJaxError
from mu_jax.evaluation.lm._checks import finite_array, same_length

# TOFU evaluate_util.py:349 and open-unlearning metrics/utils.py:255 both stem.
ROUGE_STEMMER = True
# The nine values the TOFU model utility is the harmonic mean of
# (aggregate_eval_stat.py:28-78; open-unlearning configs/eval/tofu_metrics/model_utility.yaml).
UTILITY_KEYS = tuple(f'{split}_{metric}'
                     for split in ('retain', 'known_people', 'world_facts')
                     for metric in ('probability', 'rouge_l_recall', 'truth_ratio'))


def probability(nll_mean) -> np.ndarray:
  """Per-item exp(-mean answer-token NLL), the length-normalised answer probability.

  TOFU aggregate_eval_stat.py:47; open-unlearning metrics/utils.py:95 (`evaluate_probability`).
  """
  return np.exp(-finite_array('nll_mean', nll_mean, 1))


def normalized_probability(correct_nll_mean, option_nll_mean) -> np.ndarray:
  """Per-item P(correct) / (P(correct) + sum_k P(option_k)), P = exp(-mean NLL).

  The probability score of the known-people and world-facts sets: TOFU
  aggregate_eval_stat.py:50-53 and open-unlearning memorization.py:62-69
  (`probability_w_options`) both use length-normalised probabilities
  (`avg_gt_loss`, `average_perturb_loss`), not total-loss ones. open-unlearning
  adds 1e-10 to the denominator; it is strictly positive here, so none is added.
  """
  correct = finite_array('correct_nll_mean', correct_nll_mean, 1)
  options = finite_array('option_nll_mean', option_nll_mean, 2)
  if len(options) != len(correct):
    raise MuJaxError(f'option_nll_mean has {len(options)} rows for {len(correct)} items.')
  # Shift by the row's smallest loss so that no probability underflows to 0/0.
  losses = np.concatenate([correct[:, None], options], axis=1)
  probs = np.exp(losses.min(axis=1, keepdims=True) - losses)
  return probs[:, 0] / probs.sum(axis=1)


def truth_ratio(paraphrased_nll_mean, perturbed_nll_mean) -> np.ndarray:
  """Per-item R = P(perturbed) / P(paraphrased): exp(para_nll - mean_k pert_nll_k).

  The perturbed answers combine by the GEOMETRIC mean of their length-normalised
  probabilities: TOFU evaluate_util.py:59 (the arithmetic mean is the
  commented-out line 58) and aggregate_eval_stat.py:16,22; open-unlearning
  memorization.py:156-164 (mean of `avg_loss` over the perturbed answers, then
  exp). On the known-people and world-facts sets the original answer plays the
  paraphrase (TOFU config/eval_everything.yaml `base_answer_key`). Computed in
  log space; open-unlearning's 1e-10 guard on the denominator is not needed.
  """
  para = finite_array('paraphrased_nll_mean', paraphrased_nll_mean, 1)
  pert = finite_array('perturbed_nll_mean', perturbed_nll_mean, 2)
  if len(pert) != len(para):
    raise MuJaxError(f'perturbed_nll_mean has {len(pert)} rows for {len(para)} items.')
  return np.exp(para - pert.mean(axis=1))


def truth_ratio_score(tr, forget: bool) -> float:
  """The truth-ratio aggregate: mean(min(R, 1/R)) on the forget set, else mean(max(0, 1 - R)).

  open-unlearning memorization.py:114-120 ('closer_to_1_better' for forget,
  'true_better' elsewhere; configs/eval/tofu_metrics/*_Truth_Ratio.yaml).
  TOFU aggregate_eval_stat.py:66-71 stores 1/R and takes min(1/R, R) and
  max(0, 1 - 1/(1/R)): the same two numbers.
  """
  ratio = np.asarray(tr, np.float64)
  if ratio.ndim != 1 or ratio.size == 0 or np.any(np.isnan(ratio)) or np.any(ratio < 0):
    raise MuJaxError('tr must be a non-empty 1-D array of non-negative truth ratios.')
  if forget:
    with np.errstate(divide='ignore'):
      return float(np.mean(np.minimum(ratio, 1.0 / ratio)))
  return float(np.mean(np.maximum(0.0, 1.0 - ratio)))


def forget_quality(tr_unlearned, tr_retain) -> float:
  """p-value of the two-sample KS test between the forget-set truth ratios of the two models.

  open-unlearning privacy.py:10-26 (`ks_test` on R = P(pert)/P(para)); TOFU
  aggregate_eval_stat.py:22-25 tests 1/R instead, and so does open-unlearning
  utils.py:40. 1/x is decreasing, which leaves max |F1 - F2| of the two ECDFs
  unchanged, so all give one p-value. scipy's default method ('auto': exact
  for small samples), as both codes use.
  """
  unlearned = finite_array('tr_unlearned', tr_unlearned, 1)
  retain = finite_array('tr_retain', tr_retain, 1)
  return float(stats.ks_2samp(unlearned, retain).pvalue)


def rouge_l(predictions, references, *, use_stemmer: bool = ROUGE_STEMMER
            ) -> dict[str, np.ndarray]:
  """Per-item ROUGE-L 'recall', 'precision' and 'fmeasure' of predictions against references.

  One `rouge_score.RougeScorer(['rougeL'])`, scored as `score(reference,
  prediction)`: TOFU evaluate_util.py:348-355, open-unlearning metrics/utils.py:254-266.
  TOFU reports the recall of greedy answers (`rougeL_recall`).
  """
  same_length('rouge_l', predictions, references)
  scorer = _scorer(use_stemmer)
  scores = [scorer.score(ref, pred)['rougeL'] for pred, ref in zip(predictions, references)]
  return {name: np.array([getattr(s, name) for s in scores])
          for name in ('recall', 'precision', 'fmeasure')}


@functools.cache
def _scorer(use_stemmer: bool):
  """One scorer per stemming choice (building one logs a line and loads the stemmer)."""
  from rouge_score import rouge_scorer   # loaded only when texts are scored
  return rouge_scorer.RougeScorer(['rougeL'], use_stemmer=use_stemmer)


def model_utility(values: dict[str, float]) -> float:
  """Harmonic mean of the utility values (normally the nine of `UTILITY_KEYS`); 0 if one is 0.

  TOFU aggregate_eval_stat.py:74-78 and open-unlearning utility.py:13-16 (`scipy.stats.hmean`).
  """
  array = np.asarray(list(values.values()), np.float64)
  if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
    raise MuJaxError('model_utility needs at least one finite, non-negative value.')
  if np.any(array == 0):
    return 0.0
  return float(array.size / np.sum(1.0 / array))
