"""DP-SGD's privatised gradient (Abadi et al., "Deep Learning with Differential Privacy",
2016): per-example gradients by `vmap`, each clipped to L2 norm C, summed, plus Gaussian
noise N(0, σ²C²) on every coordinate, divided by the expected batch size q·N.

The division by the expected (not the drawn) batch size is Opacus's for Poisson
sampling (`DPOptimizer` with `expected_batch_size`): the sum's sensitivity is C
whatever the batch holds, so the released gradient is the same mechanism at any
batch size. Padding rows (weight 0) have a zero gradient and add nothing.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mu_jax.errors import MuJaxError
from mu_jax.privacy import accountant


class Privacy(NamedTuple):
  """One DP-SGD run: clipping norm C, noise multiplier σ, and q·N."""
  clip: float
  noise_multiplier: float
  expected_batch: float


def check_clip(clip: float) -> None:
  if not clip > 0:
    raise MuJaxError(f'The DP clipping norm must be positive, got {clip}.')


def plan(num_examples: int, batch_size: int, epochs: int, *, epsilon: float, delta: float,
         clip: float) -> tuple[Privacy, float, int]:
  """(Privacy, sample rate q, steps) of `epochs` epochs of Poisson batches of expected size
  `batch_size`, with the σ that spends (ε, δ): Opacus's `make_private_with_epsilon`, whose
  Poisson loader takes ⌊1/q⌋ steps per epoch."""
  check_clip(clip)
  if not 0 < batch_size <= num_examples:
    raise MuJaxError(f'DP-SGD needs an expected batch size in 1..{num_examples} (the '
                     f'training rows), got {batch_size}.')
  rate = batch_size / num_examples
  steps = epochs * int(1 / rate)
  sigma = accountant.noise_multiplier(epsilon, rate, steps, delta)
  return Privacy(float(clip), sigma, float(batch_size)), rate, steps


def clip_scale(norms: jax.Array, clip: float) -> jax.Array:
  """min(1, C / ‖g_i‖) per example (Opacus: C / (‖g_i‖ + 1e-6), clamped at 1)."""
  return jnp.minimum(1.0, clip / (norms + 1e-6))


def per_example_norms(grads) -> jax.Array:
  """‖g_i‖₂ over all leaves of per-example gradients [N, ...]."""
  squares = [jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), -1) for g in jax.tree.leaves(grads)]
  return jnp.sqrt(sum(squares))


def private_gradient(example_loss: Callable, params, batch: dict, privacy: Privacy,
                     rng: jax.Array):
  """(mean loss of the real rows, privatised gradient) of `example_loss(params, row) ->
  scalar` over the rows of `batch` (weight 'w'), vmapped per example."""

  def weighted(p, row):
    loss = example_loss(p, jax.tree.map(lambda a: a[None], row))
    return loss * row['w'], loss * row['w']

  grads, losses = jax.vmap(jax.grad(weighted, has_aux=True), in_axes=(None, 0))(params, batch)
  scale = clip_scale(per_example_norms(grads), privacy.clip)
  summed = jax.tree.map(lambda g: jnp.tensordot(scale, g.astype(jnp.float32), 1), grads)
  leaves, tree = jax.tree.flatten(summed)
  keys = jax.random.split(rng, len(leaves))
  std = privacy.noise_multiplier * privacy.clip
  noisy = [(g + std * jax.random.normal(k, g.shape, jnp.float32)) / privacy.expected_batch
           for g, k in zip(leaves, keys)]
  grads = jax.tree.unflatten(tree, [n.astype(p.dtype) for n, p in
                                    zip(noisy, jax.tree.leaves(params))])
  mean_loss = jnp.sum(losses) / jnp.maximum(jnp.sum(batch['w']), 1.0)
  return mean_loss, grads


def epsilon_spent(privacy: Privacy, rate: float, steps: int, delta: float) -> float:
  return accountant.epsilon(rate, privacy.noise_multiplier, steps, delta)[0]

