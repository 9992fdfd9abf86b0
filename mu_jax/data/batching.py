"""Fixed-shape, padded, seed-deterministic mini-batches over NumPy arrays.

Every batch has the same shape (the last one is padded and carries weight 0
in 'w'), so a jitted step compiles once and all examples are used.
"""
from typing import Iterator

import numpy as np


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The example order for one epoch: a permutation keyed by (seed, epoch)."""
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([seed, epoch]).permutation(n)


def num_batches(n: int, batch_size: int) -> int:
  return -(-n // batch_size)


def epoch_batches(arrays: dict[str, np.ndarray], batch_size: int, *,
                  seed: int = 0, epoch: int = 0,
                  shuffle: bool = True) -> Iterator[dict[str, np.ndarray]]:
  """Yields dicts of equal-length batches plus a float32 weight mask 'w'."""
  n = len(next(iter(arrays.values())))
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
  for b in range(num_batches(n, batch_size)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    w = np.ones(batch_size, np.float32)
    if len(idx) < batch_size:
      w[len(idx):] = 0.0
      idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
    batch = {k: v[idx] for k, v in arrays.items()}
    batch['w'] = w
    yield batch
