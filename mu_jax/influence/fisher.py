"""Diagonal parameter-importance estimators, as jitted reductions over batches.

`importance(kind, spec, variables, ctx, source, batch_size)` returns a
params-shaped pytree, accumulated on device over `ctx.batches(source, ...)`
(sharded over the mesh; one host sync at the end). The model runs in eval
mode. Estimators, by name:

  batch        mean over batches of (∇ mean-batch CE)², as the official SSD
               code's `calc_importance` (Foster et al. 2024,
               github.com/if-loops/selective-synaptic-dampening, ssd.py): it
               sums squared mini-batch gradients and divides by the number of
               batches. A padded last batch takes the mean over its real rows
               (weights `w`), as PyTorch's partial last batch. Depends on how
               examples fall into batches, so the pass always shuffles, seeded
               by `ctx.seed`.
  per_example  the empirical Fisher: mean over examples of the squared
               per-example CE gradient (vmap of grad); independent of order.
               Holds batch_size per-example gradients at once: pick the
               batch size by memory.
  label_free   LF-SSD (Foster et al. 2024, "Loss-Free Machine Unlearning",
               arXiv:2402.19308): loss = mean over the batch of ‖logits‖²₂,
               importance = mean over batches of |∇ loss|; needs no labels.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mu_jax.errors import MuJaxError
from mu_jax.models import merge_variables, split_variables

ESTIMATORS = ('batch', 'per_example', 'label_free')


def _logits(spec, params, model_state, x):
  logits, _ = spec.apply_fn(merge_variables(params, model_state), x, False)
  return logits.astype(jnp.float32)


def _weighted_mean(values, w):
  return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def _batch_term(kind: str, spec, params, model_state, batch) -> tuple[Any, jax.Array]:
  """One batch's contribution to the sum and to the divisor of the estimator."""
  x, y, w = batch['x'], batch['y'], batch['w']
  if kind == 'batch':
    def loss(p):
      ce = optax.softmax_cross_entropy_with_integer_labels(_logits(spec, p, model_state, x), y)
      return _weighted_mean(ce, w)
    return jax.tree.map(jnp.square, jax.grad(loss)(params)), jnp.ones(())
  if kind == 'label_free':
    def loss(p):
      return _weighted_mean(jnp.sum(jnp.square(_logits(spec, p, model_state, x)), -1), w)
    return jax.tree.map(jnp.abs, jax.grad(loss)(params)), jnp.ones(())

  def example_loss(p, xi, yi):   # 'per_example'
    logits = _logits(spec, p, model_state, xi[None])
    return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]
  grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, x, y)
  return jax.tree.map(lambda g: jnp.tensordot(w, jnp.square(g), axes=1), grads), jnp.sum(w)


@jax.jit(static_argnums=(0, 1))
def _accumulate(kind, spec, params, model_state, batch, totals, count):
  term, weight = _batch_term(kind, spec, params, model_state, batch)
  return jax.tree.map(jnp.add, totals, term), count + weight


@jax.jit
def _divide(totals, count):
  return jax.tree.map(lambda t: t / count, totals)


def importance(kind: str, spec, variables: dict, ctx, source: str,
               batch_size: int):
  """The `kind` diagonal importance of `variables['params']` on stream `source`."""
  if kind not in ESTIMATORS:
    raise MuJaxError(f'Unknown importance estimator {kind!r}; valid: {", ".join(ESTIMATORS)}.')
  params, model_state = split_variables(variables)
  totals = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  count = jnp.zeros((), jnp.float32)
  for batch in ctx.batches(source, batch_size, shuffle=True):
    totals, count = _accumulate(kind, spec, params, model_state, batch, totals, count)
  if float(count) <= 0:
    raise MuJaxError(f'The {source} set is empty, so its importance is undefined; '
                     'choose a non-empty forget set.')
  return _divide(totals, count)
