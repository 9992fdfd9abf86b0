"""Fixed-shape, padded, seed-deterministic mini-batches over NumPy arrays.

Every batch has the same number of rows (the last one is padded and carries
weight 0 in 'w'), so a jitted step compiles once and all examples are used.
`length_grouped_batches` also cuts sequences to their batch's longest, in a
few widths, so a step compiles once per width.
"""
from typing import Callable, Iterable, Iterator

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


def length_grouped_order(lengths: np.ndarray, batch_size: int, *, seed: int,
                         epoch: int) -> np.ndarray:
  """The order of the Hugging Face Trainer's `group_by_length` (LengthGroupedSampler):
  a seeded permutation cut into mega-batches of min(n // (4 batch_size), 50) batches,
  each sorted longest first, so a batch's rows have similar lengths. HF also swaps the
  longest example to the very front, to meet an out-of-memory error early; not here."""
  n = len(lengths)
  order = epoch_order(n, seed=seed, epoch=epoch, shuffle=True)
  size = max(min(n // (batch_size * 4), 50), 1) * batch_size
  return np.concatenate([chunk[np.argsort(-lengths[chunk], kind='stable')]
                         for chunk in np.split(order, range(size, n, size))])


def length_grouped_batches(arrays: dict[str, np.ndarray], batch_size: int,
                           lengths: np.ndarray, sequence_keys: tuple[str, ...], *,
                           seed: int, epoch: int, multiple: int = 8) -> Counted:
  """`epoch_batches` in `length_grouped_order`, each batch's `sequence_keys` arrays cut
  along axis 1 to its longest real row's length (`lengths`) rounded up to `multiple`."""
  n = len(lengths)
  width = next(iter(arrays.values())).shape[1]

  def cut(batch, idx, real):
    keep = min(-(-int(lengths[idx[:real]].max()) // multiple) * multiple, width)
    return {k: v[:, :keep] if k in sequence_keys else v for k, v in batch.items()}

  order = length_grouped_order(lengths, batch_size, seed=seed, epoch=epoch)
  return Counted(_batches(arrays, batch_size, order, cut), num_batches(n, batch_size))


def _batches(arrays: dict[str, np.ndarray], batch_size: int, order: np.ndarray,
             cut: Callable | None = None) -> Iterator[dict[str, np.ndarray]]:
  for b in range(num_batches(len(order), batch_size)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    real = len(idx)
    w = np.ones(batch_size, np.float32)
    if real < batch_size:
      w[real:] = 0.0
      idx = np.concatenate([idx, np.zeros(batch_size - real, idx.dtype)])
    batch = {k: v[idx] for k, v in arrays.items()}
    batch['w'] = w
    yield batch if cut is None else cut(batch, idx, real)


def poisson_batches(arrays: dict[str, np.ndarray], sample_rate: float, steps: int, *,
                    seed: int, epoch: int, multiple: int = 8,
                    lengths: np.ndarray | None = None,
                    sequence_keys: tuple[str, ...] = ()) -> Counted:
  """DP-SGD's Poisson sampling: `steps` batches, each holding every example independently
  with probability `sample_rate` (Opacus's UniformWithReplacementSampler), keyed by
  (seed, epoch). A batch is padded with weight-0 rows to a positive multiple of `multiple`
  rows, and, given `lengths`, its `sequence_keys` arrays are cut to its longest real row
  rounded up to `multiple`: a step compiles once per (rows, width)."""
  n = len(next(iter(arrays.values())))
  rng = np.random.default_rng([seed, epoch, 0x5053])   # 'PS': not epoch_order's stream
  width = next(iter(arrays.values())).shape[1] if lengths is not None else 0

  def batch(idx):
    rows = max(-(-len(idx) // multiple), 1) * multiple
    w = np.zeros(rows, np.float32)
    w[:len(idx)] = 1.0
    idx = np.concatenate([idx, np.zeros(rows - len(idx), np.int64)])
    out = {k: v[idx] for k, v in arrays.items()}
    if lengths is not None:
      longest = int(lengths[idx[w > 0]].max()) if w.any() else 1
      keep = min(-(-longest // multiple) * multiple, width)
      out = {k: v[:, :keep] if k in sequence_keys else v for k, v in out.items()}
    return {**out, 'w': w}

  return Counted((batch(np.flatnonzero(rng.random(n) < sample_rate)) for _ in range(steps)),
                 steps)
