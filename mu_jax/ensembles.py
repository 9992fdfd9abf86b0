"""Many models trained at once: `jax.vmap` over seeds and data-subset masks.

Member m trains with the recipe of `mu_jax.train` (the same `init_state`,
`make_train_step` and `optimizer_from_config`, vmapped) on its own subset of
the data, given as a 0/1 mask multiplied into the per-example weights `w`, so
every member sees fixed-shape batches and one compiled step trains them all.
Each member shuffles with its own seed, exactly as `train_model(seed=s)` does,
so a member on the full data equals the model that `train_model` trains alone.
A member on an α-subset takes as many steps as on all of the data, with about
αB real rows per batch of B (a batch with none of its rows takes a zero
gradient step, which momentum and weight decay still act on).
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mu_jax import sharding
from mu_jax.data import Split
from mu_jax.data.batching import epoch_batches, num_batches
from mu_jax.errors import MuJaxError
from mu_jax.models import Model, merge_variables
from mu_jax.train import init_state, make_train_step, optimizer_from_config


def subset_masks(n: int, num_models: int, fraction: float, seed: int) -> np.ndarray:
  """[M, n] bool masks, each a uniformly random subset of round(fraction·n) rows."""
  if not 0.0 < fraction <= 1.0:
    raise MuJaxError(f'Subset fraction {fraction} is outside (0, 1]; pick one in it.')
  size = max(1, round(fraction * n))
  masks = np.zeros((num_models, n), bool)
  for m in range(num_models):
    masks[m, np.random.default_rng([seed, m]).permutation(n)[:size]] = True
  return masks


def member(stacked, m: int):
  """Member m of a stacked ensemble."""
  return jax.tree.map(lambda leaf: leaf[m], stacked)


def ensemble_apply(apply_fn, stacked, x: jax.Array) -> jax.Array:
  """Eval-mode logits [M, N, C] of every member on the same inputs."""
  return jax.vmap(lambda v: apply_fn(v, x, False)[0])(stacked)


def _stacked_batches(arrays: dict, masks: np.ndarray, seeds: Sequence[int],
                     batch_size: int, epoch: int):
  """Per-member batches [M, B, ...]: member m's own order, weights times its mask."""
  arrays = dict(arrays, mask=masks.T.astype(np.float32))   # [n, M]: row i's membership
  members = [epoch_batches(arrays, batch_size, seed=int(s), epoch=epoch) for s in seeds]
  for parts in zip(*members):
    out = {k: np.stack([p[k] for p in parts]) for k in ('x', 'y')}
    out['w'] = np.stack([p['w'] * p['mask'][:, m] for m, p in enumerate(parts)])
    yield out


def train_ensemble(model: Model, train_cfg, data: Split, *, seeds: Sequence[int],
                   mesh, masks: np.ndarray | None = None) -> dict:
  """Trains len(seeds) models with `train_cfg`; member m on rows masks[m].

  Returns the stacked variables (leading axis M). Batches are split over the
  mesh's 'data' axis, the ensemble state replicated.
  """
  n = len(data.y)
  masks = np.ones((len(seeds), n), bool) if masks is None else np.asarray(masks, bool)
  if masks.shape != (len(seeds), n):
    raise MuJaxError(f'Ensemble masks have shape {masks.shape}; expected '
                     f'{(len(seeds), n)} (one row per seed, one column per example).')
  if not masks.any(axis=1).all():
    raise MuJaxError('An ensemble member has an empty training subset; raise the fraction.')
  sharding.check_batch_size(train_cfg.batch_size, mesh)
  tx = optimizer_from_config(train_cfg, num_batches(n, train_cfg.batch_size))
  init = jax.jit(jax.vmap(lambda s: init_state(model, tx, data.x, s)))
  state = sharding.replicate(init(jnp.asarray(seeds, jnp.uint32)), mesh)
  step = jax.jit(jax.vmap(make_train_step(model.apply, tx)), donate_argnums=0)
  batch_sharding = NamedSharding(mesh, P(None, sharding.DATA_AXIS))
  for epoch in range(train_cfg.epochs):
    for batch in _stacked_batches({'x': data.x, 'y': data.y}, masks, seeds,
                                  train_cfg.batch_size, epoch):
      state, _ = step(state, jax.device_put(batch, batch_sharding))
  return merge_variables(state.params, state.model_state)


def flax_default_model(apply_fn, template: dict, name: str = 'reinit') -> Model:
  """A Model that re-initializes `template`'s variables with Flax's default initializers.

  For methods that hold only an `apply_fn` and trained variables but must train
  fresh models (oracles, attribution ensembles): kernels (ndim ≥ 2) get
  LeCun-normal (Flax Dense/Conv default), 'scale' and BatchNorm 'var' get ones,
  everything else (biases, means) zeros. Models with other initializers (e.g.
  ViT position embeddings) get these defaults instead.
  """

  def init_leaf(path, leaf, key):
    last = str(getattr(path[-1], 'key', path[-1]))
    if last in ('scale', 'var'):
      return jnp.ones_like(leaf)
    if leaf.ndim >= 2 and last != 'mean':
      return jax.nn.initializers.lecun_normal()(key, leaf.shape, leaf.dtype)
    return jnp.zeros_like(leaf)

  def init(rng, sample_x):
    del sample_x
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = jax.random.split(rng, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [init_leaf(p, l, k) for (p, l), k in zip(leaves, keys)])

  def penultimate(variables, x):
    raise MuJaxError(f'Model {name!r} re-initialized from variables has no features.')

  return Model(name, init, apply_fn, penultimate)
