"""The margin φ(x) = z_y − logsumexp_{k≠y} z_k and per-example outputs of ensembles.

The margin is the statistic shared by KLoM, U-LiRA and the NeurIPS 2023
challenge score (which calls it the logit-scaled confidence,
log p_y − log(1 − p_y)). It is clipped to ±MARGIN_CLIP so that saturated
softmaxes give finite, comparable values.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import sharding
from mu_jax.data import Split
from mu_jax.data.batching import epoch_batches

MARGIN_CLIP = 100.0   # DESIGN.md; data-unlearning-bench `kl_from_margins` clip_min/clip_max ±100


def margin(logits: jax.Array, labels: jax.Array, clip: float = MARGIN_CLIP) -> jax.Array:
  """φ = z_y − logsumexp_{k≠y} z_k, clipped to ±clip; logits [..., N, C], labels [N]."""
  true = labels[:, None] == jnp.arange(logits.shape[-1])
  z_y = jnp.sum(jnp.where(true, logits, 0.0), -1)
  others = jax.nn.logsumexp(jnp.where(true, -jnp.inf, logits), -1)
  return jnp.clip(z_y - others, -clip, clip)


def entropy(logits: jax.Array) -> jax.Array:
  """Shannon entropy −Σ p log p (nats) of softmax(logits) over the last axis."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  return -jnp.sum(jnp.exp(log_p) * log_p, -1)


class Outputs(NamedTuple):
  """Per-member, per-example outputs [M, N] of an ensemble on one split."""
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
def _outputs(apply_fn, stacked, x, y):
  logits = jax.vmap(lambda v: apply_fn(v, x, False)[0])(stacked).astype(jnp.float32)
  probs = jax.nn.softmax(logits, -1)
  conf = jnp.take_along_axis(probs, jnp.broadcast_to(y[None, :, None], probs.shape[:2] + (1,)),
                             -1)[..., 0]
  return margin(logits, y), jnp.argmax(logits, -1) == y, conf, entropy(logits)


def ensemble_outputs(apply_fn: Callable, stacked, split: Split, *, batch_size: int,
                     mesh) -> Outputs:
  """Outputs of every member of `stacked` (leading axis M) on `split`, in fixed batches.

  Batches are split over the mesh's 'data' axis, the ensemble replicated; the
  padded rows of the last batch are dropped.
  """
  num_members = jax.tree.leaves(stacked)[0].shape[0]
  n = len(split.y)
  if n == 0:
    empty = np.zeros((num_members, 0), np.float32)
    return Outputs(empty, empty.astype(bool), empty, empty)
  stacked = sharding.replicate(stacked, mesh)
  batch_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(sharding.DATA_AXIS))
  parts = []
  for batch in epoch_batches({'x': split.x, 'y': split.y}, batch_size, shuffle=False):
    batch = jax.device_put({'x': batch['x'], 'y': batch['y']}, batch_sharding)
    parts.append(_outputs(apply_fn, stacked, batch['x'], batch['y']))
  host = sharding.to_host(parts)
  return Outputs(*(np.concatenate(field, axis=1)[:, :n] for field in zip(*host)))
