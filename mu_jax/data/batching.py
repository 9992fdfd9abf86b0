"""Fixed-shape, padded, seed-deterministic mini-batches over NumPy arrays.

Every batch has the same shape (the last one is padded and carries weight 0
in 'w'), so a jitted step compiles once and all examples are used.
"""
from typing import Iterable, Iterator

import numpy as np


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The example order for one epoch: a permutation keyed by (seed, epoch)."""
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([seed, epoch]).permutation(n)


def num_batches(n: int, batch_size: int) -> int:
  return -(-n // batch_size)


class Counted(Iterator):
  """An iterator that knows how many items it yields: a progress bar (`mu_jax.logs`)
  reads its length, so no caller counts batches a second time."""

  def __init__(self, items: Iterable, length: int):
    self._items = iter(items)
    self._length = length

  def __next__(self):
    return next(self._items)

  def __len__(self) -> int:
    return self._length


def epoch_batches(arrays: dict[str, np.ndarray], batch_size: int, *,
                  seed: int = 0, epoch: int = 0, shuffle: bool = True) -> Counted:
  """Dicts of equal-length batches plus a float32 weight mask 'w', one epoch's worth."""
  n = len(next(iter(arrays.values())))
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=shuffle)
  return Counted(_batches(arrays, batch_size, order), num_batches(n, batch_size))


def _batches(arrays: dict[str, np.ndarray], batch_size: int,
             order: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
  for b in range(num_batches(len(order), batch_size)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    w = np.ones(batch_size, np.float32)
    if len(idx) < batch_size:
      w[len(idx):] = 0.0
      idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
    batch = {k: v[idx] for k, v in arrays.items()}
    batch['w'] = w
    yield batch
