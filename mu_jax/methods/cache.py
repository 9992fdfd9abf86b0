"""Statistics of the original model on D, cached beside its checkpoint.

Some passes depend only on the trained model and the full training set D, not
on the forget request: SSD's I_D, ACU's ridge head on D, DMM's TRAK ensemble
and training features. `Context.cache_dir` names a folder for them; each is an
Orbax checkpoint of a pytree of arrays (`mu_jax.checkpoint.save_tree`, atomic),
under a name keyed by everything that determines it, so a later request loads
it and a stale entry is never read.

D reaches a method as the request's 'union' stream, D_f first, so its row
order depends on the request; a cached statistic must not. `canonical_union`
gives D's rows sorted by content (`canonical_order`), the same arrays for
every request on D, so per-row statistics line up across requests and an
order-dependent pass over them (SSD's batch Fisher) is request-independent.
"""
import hashlib

import jax
import numpy as np

from mu_jax import checkpoint, sharding


# Rows converted to float64 at a time by `canonical_order`, an engineering bound
# (no paper sets it): on a 2-core EPYC a whole 55k-image Fashion-MNIST set at once
# spent 0.09-0.43 s allocating; per block the keys (per-row values, the same
# bits) took ~35 ms.
KEY_ROWS = 512


def canonical_order(arrays: dict[str, np.ndarray]) -> np.ndarray:
  """A permutation sorting rows by content: per array (the first name in sorted
  order most significant), a random projection of each row, then its sum
  (float64)."""
  keys = []
  for name in sorted(arrays, reverse=True):
    flat = arrays[name].reshape(len(arrays[name]), -1)
    if flat.shape[1] == 1:
      keys.append(flat[:, 0].astype(np.float64))
      continue
    probe = np.random.default_rng(0).normal(size=flat.shape[1])
    sums, projections = np.empty(len(flat)), np.empty(len(flat))
    for start in range(0, len(flat), KEY_ROWS):
      block = flat[start:start + KEY_ROWS].astype(np.float64)
      sums[start:start + KEY_ROWS] = block.sum(1)
      projections[start:start + KEY_ROWS] = block @ probe
    keys += [sums, projections]
  return np.lexsort(keys)   # the last key is the most significant


def canonical_union(ctx) -> dict[str, np.ndarray]:
  """D's arrays (without the forget flag 'f') in `canonical_order`: the same for
  every request on D."""
  union = {k: v for k, v in ctx.arrays('union').items() if k != 'f'}
  order = canonical_order(union)
  return {k: v[order] for k, v in union.items()}


# Part of every key: raised whenever the code computes a cached statistic's bits
# differently, so an entry of older code is never read as a cold run's result
# (2: the CNN's kernel gradient as tap products).
VERSION = 2


def fingerprint(ctx, *parts, variables=None, rows=None) -> str:
  """16 hex digits of `parts`, D (in any row order), if given the model's variables,
  and if given the host arrays `rows` in their row order (for a statistic whose
  pass order depends on the request)."""
  digest = hashlib.sha1(repr((VERSION, *parts)).encode())
  for arrays in (canonical_union(ctx), rows or {}):
    for name in sorted(arrays):
      digest.update(np.ascontiguousarray(arrays[name]).data)   # the bytes, not a copy
  for leaf in jax.tree.leaves(sharding.to_host(variables) if variables is not None else {}):
    digest.update(np.ascontiguousarray(leaf).data)
  return digest.hexdigest()[:16]


def save(path: str, tree) -> None:
  """Caches a pytree of arrays at `path` (an Orbax checkpoint folder), atomically."""
  checkpoint.save_tree(path, sharding.to_host(tree))


def load(path: str):
  """The pytree cached at `path` as host arrays, or None if there is none."""
  return checkpoint.load_tree(path)


def same_shapes(tree, like) -> bool:
  """True if `tree` has `like`'s structure and leaf shapes."""
  try:
    return jax.tree.structure(tree) == jax.tree.structure(like) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(like)))
  except (TypeError, ValueError):
    return False
