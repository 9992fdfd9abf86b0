"""Diagonal parameter-importance estimators, as sharded, jitted reductions over batches.

`importance(kind, task, variables, ctx, source, batch_size)` returns a
params-shaped pytree, accumulated on device over the batches of `source` (a
stream of `ctx`, or host arrays a caller put in its own row order; one host
sync at the end). The model runs in eval mode; ℓ is the task's
per-example loss (cross-entropy for a classifier). Estimators, by name:

  batch        mean over batches of (∇ mean-batch ℓ)², as the official SSD
               code's `calc_importance` (Foster et al. 2024,
               github.com/if-loops/selective-synaptic-dampening, ssd.py): it
               sums squared mini-batch gradients and divides by the number of
               batches. A padded last batch takes the mean over its real rows
               (weights `w`), as PyTorch's partial last batch. Depends on how
               examples fall into batches, so the caller fixes the row order:
               the pass shuffles it by a permutation seeded with `ctx.seed`,
               or keeps it with `shuffle=False` (as the official loaders).
  per_example  the empirical Fisher: mean over examples of the squared
               per-example ℓ gradient (vmap of grad); independent of order.
               Per-example gradients are taken in chunks of rows whose
               gradients fit `memory_budget` bytes, so any batch size fits.
  label_free   LF-SSD (Foster et al. 2024, "Loss-Free Machine Unlearning",
               arXiv:2402.19308): loss = mean over the batch of ‖outputs‖²₂,
               importance = mean over batches of |∇ loss|; needs no labels.

Every estimator is one per-device function, `device_term`, whose sums are
`psum`med over the mesh's 'data' axis: `importance` runs it as a
`jax.shard_map` inside `jax.jit` over `ctx.mesh` (batch split over 'data',
params replicated), and `pmap_term` wraps the same function in `jax.pmap`.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from mu_jax import logs, sharding
from mu_jax.errors import MuJaxError
from mu_jax.models import merge_variables, split_variables, vmap_is_slow

ESTIMATORS = ('batch', 'per_example', 'label_free')
# Bytes of per-example gradients held at once: an engineering bound (no paper
# fixes it), a small share of any accelerator's memory; ResNet-18's 11M float32
# parameters take 45 MB per example, so a chunk is 5 rows, the CNN's 0.4M, 159.
MEMORY_BUDGET = 256 * 2**20


def _example_losses(kind: str, task, params, model_state, batch) -> jax.Array:
  """Per-row losses [n]: the task's ℓ, or ‖outputs‖²₂ for 'label_free'."""
  outputs, _ = task.apply(merge_variables(params, model_state), batch, False)
  if kind == 'label_free':
    outputs = outputs.astype(jnp.float32)
    return jnp.sum(jnp.square(outputs).reshape(outputs.shape[0], -1), -1)
  return task.losses(outputs, batch)


def chunk_rows(params, rows: int, memory_budget: int) -> int:
  """The largest divisor of `rows` whose per-example gradients fit `memory_budget`."""
  per_row = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))
  limit = max(1, memory_budget // max(per_row, 1))
  return max(d for d in range(1, rows + 1) if rows % d == 0 and d <= limit)


def device_term(kind: str, task, chunk: int, params, model_state, batch) -> tuple[Any, jax.Array]:
  """One batch's contribution to the estimator's sum and to its divisor.

  Runs on one device's rows of the batch inside a mapped 'data' axis (shard_map
  or pmap) and sums across it with psum, so every device returns the whole
  batch's (term, weight).
  """
  w = batch['w']
  if kind != 'per_example':
    def weighted_sum(p):
      return jnp.sum(w * _example_losses(kind, task, p, model_state, batch))
    grads, total = jax.lax.psum((jax.grad(weighted_sum)(params), jnp.sum(w)), sharding.DATA_AXIS)
    mean = jax.tree.map(lambda g: g / jnp.maximum(total, 1.0), grads)
    return jax.tree.map(jnp.square if kind == 'batch' else jnp.abs, mean), jnp.ones(())

  def example_loss(p, row):
    return _example_losses(kind, task, p, model_state,
                           jax.tree.map(lambda a: a[None], row))[0]

  def add_chunk(acc, rows):
    grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0))(params, rows)
    return jax.tree.map(lambda a, g: a + jnp.tensordot(rows['w'], jnp.square(g), axes=1),
                        acc, grads), None

  split = lambda a: a.reshape(a.shape[0] // chunk, chunk, *a.shape[1:])
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  sums, _ = jax.lax.scan(add_chunk, zeros, jax.tree.map(split, batch))
  return jax.lax.psum((sums, jnp.sum(w)), sharding.DATA_AXIS)


@functools.partial(jax.jit, static_argnames=('kind', 'task', 'mesh', 'chunk'),
                   donate_argnames=('totals', 'count'))
def _accumulate(totals, count, params, model_state, batch, *, kind, task, mesh, chunk):
  term, weight = jax.shard_map(
      functools.partial(device_term, kind, task, chunk), mesh=mesh,
      in_specs=(P(), P(), P(sharding.DATA_AXIS)), out_specs=P(),
      axis_names={sharding.DATA_AXIS}, check_vma=False)(params, model_state, batch)
  return jax.tree.map(jnp.add, totals, term), count + weight


@jax.jit
def _divide(totals, count):
  return jax.tree.map(lambda t: t / count, totals)


def pmap_term(kind: str, task, chunk: int = 1):
  """`device_term` as a `jax.pmap` over axis 'data', for pmap-style drivers.

  Call it as f(params, model_state, batch) with every batch leaf reshaped to
  [devices, rows per device, ...]; params and model_state are broadcast. Each
  device returns the whole batch's (term, weight).
  """
  return jax.pmap(functools.partial(device_term, kind, task, chunk),
                  axis_name=sharding.DATA_AXIS, in_axes=(None, None, 0))


def importance(kind: str, task, variables: dict, ctx, source: str | dict[str, np.ndarray],
               batch_size: int, *, shuffle: bool = True,
               memory_budget: int = MEMORY_BUDGET, rowwise: bool | None = None):
  """The `kind` diagonal importance of `variables['params']` on `source`.

  `source` is a stream name of `ctx` or host arrays; their rows are batched in
  order, permuted first by `ctx.seed` when `shuffle` ('batch' and 'label_free'
  depend on the order; 'per_example' does not). 'per_example' vmaps over as
  many rows as `memory_budget` allows, or with `rowwise` takes one row at a
  time (None: where `vmap_is_slow`; a CNN on a 2-core CPU runs 2.3x faster
  so, benchmarks/perf.py section fisher).
  """
  if kind not in ESTIMATORS:
    raise MuJaxError(f'Unknown importance estimator {kind!r}; valid: {", ".join(ESTIMATORS)}.')
  sharding.check_batch_size(batch_size, ctx.mesh)
  params, model_state = split_variables(variables)
  chunk = 1
  if rowwise is None:
    rowwise = vmap_is_slow(params)
  if kind == 'per_example' and not rowwise:
    chunk = chunk_rows(params, batch_size // sharding.data_size(ctx.mesh), memory_budget)
  totals = sharding.replicate(
      jax.tree.map(lambda p: np.zeros(p.shape, np.float32), params), ctx.mesh)
  count = sharding.replicate(np.zeros((), np.float32), ctx.mesh)
  name = source if isinstance(source, str) else 'given'
  arrays = ctx.arrays(source) if isinstance(source, str) else source
  batches = ctx.batches_of(arrays, batch_size, shuffle=shuffle)
  for batch in logs.progress(batches, unit='batch', desc=f'{kind} importance on {name}'):
    totals, count = sharding.pace(_accumulate(totals, count, params, model_state, batch,
                                              kind=kind, task=task, mesh=ctx.mesh,
                                              chunk=chunk), ctx.mesh)
  if float(jax.device_get(count)) <= 0:
    raise MuJaxError(f'The {name} set is empty, so its importance is undefined; '
                     'choose a non-empty forget set.')
  return _divide(totals, count)
