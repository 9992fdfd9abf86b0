"""The relearning attack on a language model: does a little fine-tuning on part of the forget
set bring the rest back?

Hu, Fu, Wu & Smith (ICLR 2025, arXiv:2406.13356, "Unlearning or Obfuscating?
Jogging the Memory of Unlearned LLMs via Benign Relearning") and Fan et al.
(ICML 2025, arXiv:2502.05374, Unlearn-Smooth) fine-tune an unlearned model
for a few steps on a small part of the forget data and measure how much of
the forget knowledge returns. Here the forget QA is split by question: every
`RELEARN_EVERY`-th question of the forget set is the relearning data, the
others are the probe. The model takes `lm.relearn_steps` AdamW steps (the
fine-tuning rate, `lm.relearn_batch` rows per step, cycling through the
relearning rows) and is scored on the probe: ROUGE-L recall of its greedy
answers, and forget quality (KS test of its probe truth ratios against the
retain model's, unrelearned). The retain model relearned the same way shows
what the relearning rows alone teach about the other questions.
"""
from typing import NamedTuple

import ml_collections
import numpy as np

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.evaluation.lm import tofu
from mu_jax.experiments.lm import suite
from mu_jax.experiments.lm.data import QASet
from mu_jax.train import sharded_training, zero_stats

RELEARN_EVERY = 4   # this library's choice: a quarter of the forget questions relearn the rest
COLUMNS = ('relearn F-ROUGE', 'relearn FQ')


class RelearnSplit(NamedTuple):
  rows: Examples   # the relearning QA rows (training format)
  probe: QASet     # the other forget questions, with their answer forms
  probe_idx: np.ndarray   # the probe's questions in the forget QA set


def split_forget(forget: QASet) -> RelearnSplit:
  """Every RELEARN_EVERY-th forget question relearns; the rest is the probe."""
  n = len(forget.answer)
  chosen = np.arange(n) % RELEARN_EVERY == 0
  probe_idx = np.flatnonzero(~chosen)
  k = len(forget.perturbed) // max(n, 1)
  perturbed_rows = (probe_idx[:, None] * k + np.arange(k)).ravel()
  probe = QASet(forget.answer.take(probe_idx), forget.paraphrased.take(probe_idx),
                forget.perturbed.take(perturbed_rows),
                tuple(forget.answers[i] for i in probe_idx))
  return RelearnSplit(forget.answer.take(np.flatnonzero(chosen)), probe, probe_idx)


def relearn(task, variables: dict, rows: Examples, *, steps: int, batch_size: int,
            learning_rate: float, seed: int, mesh) -> dict:
  """`variables` after `steps` AdamW steps on batches of `rows` (cycled, shuffled per pass)."""
  recipe = ml_collections.ConfigDict(dict(
      optimizer='adamw', learning_rate=learning_rate, momentum=0.0, weight_decay=0.0,
      schedule='constant', batch_size=batch_size, epochs=1))
  state, step = sharded_training(task, recipe, steps, seed=seed, mesh=mesh, start=variables)
  totals, taken, epoch = zero_stats(mesh), 0, 0
  arrays = {'x': rows['x'], 'm': rows['m'], 'w': np.ones(len(rows), np.float32)}
  while taken < steps:
    for batch in epoch_batches(arrays, batch_size, seed=seed, epoch=epoch):
      if taken == steps:
        break
      state, totals, _ = step(state, totals, sharding.shard_batch(batch, mesh))
      taken += 1
    epoch += 1
  return {'params': state.params, **state.model_state}


def relearn_scores(task, variables: dict, split: RelearnSplit, oracle: suite.Measured,
                   tokenizer, sets, *, config, mesh) -> dict[str, float]:
  """The relearning attack's columns for the model `variables`."""
  lm = config.lm
  relearned = relearn(task, variables, split.rows, steps=lm.relearn_steps,
                      batch_size=lm.relearn_batch, learning_rate=config.train.learning_rate,
                      seed=config.seed, mesh=mesh)
  measured, _ = suite.qa_set_pass(task, sharding.replicate(relearned, mesh), split.probe,
                                  tokenizer, batch_size=config.eval.batch_size, mesh=mesh,
                                  paraphrased=True, shape=suite.generation_shape(sets))
  ratios = tofu.truth_ratio(measured['paraphrased_nll'], measured['perturbed_nll'])
  return {
      'relearn F-ROUGE': float(np.mean(tofu.rouge_l(measured['answers'],
                                                    split.probe.answers)['recall'])),
      'relearn FQ': tofu.forget_quality(
          ratios, suite.truth_ratios(oracle, 'forget')[split.probe_idx]),
  }

