"""Examples: a task's rows as a dict of host arrays sharing a leading example axis.

Every task keeps its data this way (images and labels; features and real
targets; token ids and loss masks), so D_f, D_r and held-out rows are picked
by row index (`take`), joined (`concat`), shuffled, padded and sharded the
same way for all of them. A row's identity is its index in the training split.
"""
from typing import Iterator, Mapping

import numpy as np

from mu_jax.errors import MuJaxError


class Examples:
  """Named host arrays with one leading example axis; `len` counts rows."""

  __slots__ = ('_arrays',)

  def __init__(self, arrays: Mapping[str, np.ndarray] | None = None, /, **named: np.ndarray):
    arrays = {**(arrays or {}), **named}
    if not arrays:
      raise MuJaxError('Examples need at least one named array.')
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise MuJaxError(f'The arrays of one set of examples must have as many rows each; '
                       f'got {lengths}.')
    self._arrays = dict(arrays)

  def __getitem__(self, key: str) -> np.ndarray:
    try:
      return self._arrays[key]
    except KeyError:
      raise MuJaxError(f'These examples have no array {key!r}; they have '
                       f'{", ".join(sorted(self._arrays))}.') from None

  def __contains__(self, key: str) -> bool:
    return key in self._arrays

  def __len__(self) -> int:
    return len(next(iter(self._arrays.values())))

  def __iter__(self) -> Iterator[str]:
    return iter(self._arrays)

  def keys(self):
    return self._arrays.keys()

  def items(self):
    return self._arrays.items()

  def __repr__(self) -> str:
    fields = ', '.join(f'{k}={v.dtype}{list(v.shape)}' for k, v in self._arrays.items())
    return f'Examples({fields})'

  def take(self, rows) -> 'Examples':
    """The rows at `rows` (indices or a boolean mask), in that order."""
    return Examples({k: v[rows] for k, v in self._arrays.items()})

  def with_arrays(self, **arrays: np.ndarray) -> 'Examples':
    """These examples with arrays added or replaced (e.g. a flag per row)."""
    return Examples({**self._arrays, **arrays})

  def arrays(self) -> dict[str, np.ndarray]:
    """A plain dict of the arrays (batching and sharding take dicts)."""
    return dict(self._arrays)


def concat(*parts: Examples) -> Examples:
  """The rows of every part, in order; the parts must have the same arrays."""
  keys = set(parts[0].keys())
  if any(set(p.keys()) != keys for p in parts):
    raise MuJaxError('Only examples with the same arrays can be joined; got '
                     f'{[sorted(p.keys()) for p in parts]}.')
  return Examples({k: np.concatenate([p[k] for p in parts]) for k in parts[0].keys()})
