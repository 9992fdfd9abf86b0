"""MUSE metrics (Shi et al. 2024): VerbMem, KnowMem and PrivLeak.

VerbMem and KnowMem are the mean ROUGE-L F1 (not recall) of greedy outputs:
muse_bench metrics/logger.py:23 (`score['rougeL'].fmeasure`) aggregated as
'mean_rougeL' (eval.py:19,21), as open-unlearning
configs/eval/muse_metrics/*_ROUGE.yaml (`rouge_type: rougeL_f1`). They are
returned in [0, 1]; muse_bench reports them x 100 (eval.py:65,95).
The two codes differ on stemming: muse_bench logger.py:12 has
use_stemmer=False, open-unlearning metrics/utils.py:255 use_stemmer=True.
open-unlearning's is the default; pass use_stemmer=False for muse_bench's.
"""
import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.evaluation.lm import tofu

# KnowMem cuts an answer at the first of these: muse_bench metrics/knowmem.py:50.
KNOWMEM_STOPWORDS = ('\n\n', '\nQuestion', 'Question:')


def verbmem(predictions, references, *, use_stemmer: bool = tofu.ROUGE_STEMMER) -> float:
  """Mean ROUGE-L F1 of greedy continuations of a 32-token prefix against the true ones.

  The reference is the true continuation cut to the generation budget, 128
  tokens, and decoded (muse_bench eval.py:20, metrics/verbmem.py:22,35-38).
  """
  return float(np.mean(tofu.rouge_l(predictions, references,
                                    use_stemmer=use_stemmer)['fmeasure']))


def knowmem(predictions, references, *, use_stemmer: bool = tofu.ROUGE_STEMMER) -> float:
  """Mean ROUGE-L F1 of greedy answers (cut at `KNOWMEM_STOPWORDS`) against the true answers.

  The answers are at most 32 new tokens (muse_bench eval.py:22) after the
  in-context examples (metrics/knowmem.py:25-29).
  """
  cut = []
  for text in predictions:
    for word in KNOWMEM_STOPWORDS:
      text = text.split(word)[0]
    cut.append(text)
  return float(np.mean(tofu.rouge_l(cut, references, use_stemmer=use_stemmer)['fmeasure']))


def privleak(auc_unlearned: float, auc_retrain: float, *, muse_orientation: bool = False
             ) -> float:
  """MUSE PrivLeak in percent: (AUC_unlearned - AUC_retrain) / AUC_retrain x 100.

  muse_bench eval.py:78, with its AUC oriented forget = label 0 and holdout =
  label 1 (metrics/privleak.py:58-61,85-90), i.e. 1 - the usual member AUC.
  By default the inputs are member AUCs as `mia.auc` returns (forget = members,
  1 = perfectly told apart) and are turned into MUSE's as 1 - AUC, as
  open-unlearning privacy.py:50-52; pass muse_orientation=True for AUCs already
  in MUSE's orientation (e.g. muse_bench constants.py `AUC_RETRAIN`). The MIA is
  Min-40% (eval.py:18 `forget_holdout_Min-40%`). open-unlearning adds 1e-10 to
  the denominator; here an AUC_retrain of 0 is refused instead.
  """
  aucs = np.array([auc_unlearned, auc_retrain], np.float64)
  if not np.all((aucs >= 0) & (aucs <= 1)):
    raise MuJaxError(f'privleak needs two AUCs in [0, 1]; got {auc_unlearned} and {auc_retrain}.')
  unlearned, retrain = aucs if muse_orientation else 1.0 - aucs
  if retrain == 0:
    raise MuJaxError('privleak is undefined when the retrained model\'s MUSE-oriented AUC is 0.')
  return float((unlearned - retrain) / retrain * 100.0)
