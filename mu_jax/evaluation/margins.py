"""Per-member, per-example statistics of an ensemble, for the N-vs-N metrics.

The margin φ(x) = z_y − logsumexp_{k≠y} z_k (the classification task's
statistic, `mu_jax.tasks.margin`, clipped to ±100) is shared by KLoM, U-LiRA
and the NeurIPS 2023 challenge score (which calls it the logit-scaled
confidence, log p_y − log(1 − p_y)).
"""
from typing import NamedTuple

import jax
import numpy as np

from mu_jax import logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.ensembles import ensemble_apply


class Outputs(NamedTuple):
  """Per-member, per-example statistics [M, N] of an ensemble on one split."""
  margin: np.ndarray       # clipped φ
  correct: np.ndarray      # bool: argmax == label
  confidence: np.ndarray   # softmax probability of the true class (SVC MIA feature)
  entropy: np.ndarray      # softmax entropy (entropy MIA feature)

  def accuracy(self) -> np.ndarray:
    """Per-member accuracy in percent [M] (NaN on an empty split)."""
    if self.correct.shape[1] == 0:
      return np.full(self.correct.shape[0], np.nan)
    return 100.0 * self.correct.mean(1)


@jax.jit(static_argnums=0)
def _statistics(task, stacked, batch):
  outputs = ensemble_apply(task, stacked, batch)
  stats = jax.vmap(lambda o: task.statistics(o, batch))(outputs)
  return (stats['margin'], stats['correct'] > 0, stats['confidence'], stats['entropy'])


def ensemble_outputs(task, stacked, split: Examples, *, batch_size: int, mesh) -> Outputs:
  """Statistics of every member of `stacked` (leading axis M) on `split`, in fixed batches.

  Batches are split over the mesh's 'data' axis, the ensemble replicated; the
  padded rows of the last batch are dropped.
  """
  num_members = jax.tree.leaves(stacked)[0].shape[0]
  n = len(split)
  if n == 0:
    empty = np.zeros((num_members, 0), np.float32)
    return Outputs(empty, empty.astype(bool), empty, empty)
  stacked = sharding.replicate(stacked, mesh)
  batches = epoch_batches({k: split[k] for k in task.keys}, batch_size, shuffle=False)
  parts = [_statistics(task, stacked, sharding.shard_batch(batch, mesh))
           for batch in logs.progress(batches, unit='batch',
                                      desc=f'ensemble of {num_members} statistics')]
  host = sharding.to_host(parts)
  return Outputs(*(np.concatenate(field, axis=1)[:, :n] for field in zip(*host)))
