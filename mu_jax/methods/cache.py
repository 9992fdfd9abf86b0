"""Statistics of the original model on D, cached beside its checkpoint.

Some passes depend only on the trained model and the full training set D, not
on the forget request: SSD's I_D, ACU's ridge head on D, DMM's TRAK ensemble
and training features. `Context.cache_dir` names a folder for them; each is a
`.npz` of a nested dict of arrays, written atomically (a temporary file, then
`os.replace`), under a name keyed by everything that determines it, so a later
request loads it and a stale file is never read.

D reaches a method as the request's 'union' stream, D_f first; `canonical_order`
sorts its rows by content, so per-row statistics line up across requests.
"""
import hashlib
import os
import tempfile

import jax
import numpy as np

from mu_jax import sharding


def canonical_order(arrays: dict[str, np.ndarray]) -> np.ndarray:
  """A permutation sorting rows by content: per array (the first name in sorted
  order most significant), a random projection of each row, then its sum."""
  keys = []
  for name in sorted(arrays, reverse=True):
    flat = arrays[name].reshape(len(arrays[name]), -1).astype(np.float64)
    probe = np.random.default_rng(0).normal(size=flat.shape[1])
    keys += [flat.sum(1), flat @ probe] if flat.shape[1] > 1 else [flat[:, 0]]
  return np.lexsort(keys)   # the last key is the most significant


def fingerprint(ctx, *parts, variables=None) -> str:
  """16 hex digits of `parts`, D (in any row order) and, if given, the model's variables."""
  digest = hashlib.sha1(repr(parts).encode())
  union = {k: v for k, v in ctx.arrays('union').items() if k != 'f'}
  order = canonical_order(union)
  for name in sorted(union):
    digest.update(np.ascontiguousarray(union[name][order]).tobytes())
  for leaf in jax.tree.leaves(sharding.to_host(variables) if variables is not None else {}):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()[:16]


def _flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  out = {}
  for name, value in tree.items():
    if '/' in name:
      raise ValueError(f'Cache keys may not contain "/": {name!r}.')
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{name}/'))
    else:
      out[f'{prefix}{name}'] = np.asarray(value)
  return out


def save(path: str, tree: dict) -> None:
  """Writes a nested dict of arrays to `path` atomically."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flat = _flatten(sharding.to_host(tree))
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **flat)
    os.replace(tmp, path)
  except BaseException:
    os.remove(tmp)
    raise


def load(path: str) -> dict | None:
  """The nested dict saved at `path` (host arrays), or None if there is none."""
  if not os.path.exists(path):
    return None
  tree: dict = {}
  with np.load(path) as npz:
    for key in npz.files:
      *parents, leaf = key.split('/')
      node = tree
      for name in parents:
        node = node.setdefault(name, {})
      node[leaf] = npz[key]
  return tree


def same_shapes(tree, like) -> bool:
  """True if `tree` has `like`'s structure and leaf shapes."""
  try:
    return jax.tree.structure(tree) == jax.tree.structure(like) and all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(like)))
  except (TypeError, ValueError):
    return False
