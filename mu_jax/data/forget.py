"""Forget-set selection by spec, and atomic saving of index arrays.

A selector returns sorted, unique int64 indices into the training split;
every selector refuses an empty forget set and one equal to the whole
training set, since neither leaves a meaningful unlearning problem.
"""
import os
import re
from typing import Callable

import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.files import atomic_write
from mu_jax.registry import Registry

SelectorFn = Callable[[str, np.ndarray, int, int], np.ndarray]
SELECTORS: Registry[SelectorFn] = Registry('forget selector')


def select_forget(spec: str, labels: np.ndarray, num_classes: int,
                  seed: int) -> np.ndarray:
  """Sorted int64 training-set indices of the forget set `spec` names.

  `spec` is 'random:<fraction>', 'class:<k>' or 'file:<path>'; `labels` are
  the training labels (or targets), `num_classes` is 0 for a data set without
  classes, and `seed` only affects 'random'.
  """
  kind, _, arg = spec.partition(':')
  labels = np.asarray(labels)
  if not len(labels):
    raise MuJaxError(
        'The training set is empty, so there is nothing to forget; load a '
        'data set with training examples.')
  indices = SELECTORS.get(kind)(arg, labels, num_classes, seed)
  if len(indices) == len(labels):
    raise MuJaxError(
        f'The forget set {spec!r} is the whole training set; nothing would be '
        'left to retain, so choose a smaller forget set.')
  return indices.astype(np.int64)


@SELECTORS.register('random')
def _random(arg: str, labels: np.ndarray, num_classes: int,
            seed: int) -> np.ndarray:
  """round(fraction * n) examples (at least one), drawn by `seed`."""
  del num_classes  # Uniform over all examples.
  try:
    fraction = float(arg)
  except ValueError:
    fraction = 0.0  # Rejected just below.
  if not 0 < fraction < 1:
    raise MuJaxError(
        f"Forget spec 'random:{arg}' needs a fraction strictly between 0 and "
        "1; write e.g. 'random:0.1'.")
  count = max(1, round(fraction * len(labels)))
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(len(labels), size=count, replace=False))


@SELECTORS.register('class')
def _class(arg: str, labels: np.ndarray, num_classes: int,
           seed: int) -> np.ndarray:
  """Every training example of class `arg`."""
  del seed  # Fully determined by the labels.
  if not num_classes:
    raise MuJaxError(f"Forget spec 'class:{arg}' needs class labels, which this data set "
                     "does not have; use 'random:<fraction>' or 'file:<path>'.")
  if not re.fullmatch(r'\d+', arg.strip()) or int(arg) >= num_classes:
    raise MuJaxError(
        f"Forget spec 'class:{arg}' needs an integer class in [0, "
        f"{num_classes - 1}]; write e.g. 'class:0'.")
  indices = np.flatnonzero(labels == int(arg))
  if not len(indices):
    raise MuJaxError(
        f'Class {int(arg)} has no training examples, so class:{arg} would '
        'forget nothing; choose another class.')
  return indices


@SELECTORS.register('file')
def _file(arg: str, labels: np.ndarray, num_classes: int,
          seed: int) -> np.ndarray:
  """Explicit indices from a .npy integer array or a text file of integers."""
  del num_classes, seed  # Fully determined by the file.
  indices = _read_index_file(arg)
  n = len(labels)
  if not len(indices):
    raise MuJaxError(
        f'Forget index file {arg} lists no indices; put at least one in it.')
  bad = indices[(indices < 0) | (indices >= n)]
  if len(bad):
    raise MuJaxError(
        f'Forget index file {arg} holds index {bad[0]}, outside the training '
        f'set range [0, {n - 1}]; fix or regenerate the file.')
  unique, counts = np.unique(indices, return_counts=True)
  if (counts > 1).any():
    raise MuJaxError(
        f'Forget index file {arg} lists index {unique[counts > 1][0]} more '
        'than once; remove the duplicates.')
  return unique


def _read_index_file(path: str) -> np.ndarray:
  """Reads a .npy integer array or integers separated by commas/whitespace."""
  if not path or not os.path.isfile(path):
    raise MuJaxError(
        f"Forget index file {path!r} does not exist; write 'file:<path>' with "
        'an existing .npy or text file.')
  if path.endswith('.npy'):
    try:
      indices = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise MuJaxError(
          f'Cannot read forget index file {path} ({e}); save it with '
          'numpy.save.') from e
    if not np.issubdtype(indices.dtype, np.integer):
      raise MuJaxError(
          f'Forget index file {path} holds {indices.dtype} values; save an '
          'integer array instead.')
    return indices.ravel().astype(np.int64)
  try:
    with open(path, encoding='utf-8') as f:
      tokens = [t for t in re.split(r'[\s,]+', f.read()) if t]
  except (OSError, UnicodeDecodeError) as e:
    raise MuJaxError(
        f'Cannot read forget index file {path} as text ({e}); write one '
        'integer per line, or save a .npy array.') from e
  for token in tokens:
    if not re.fullmatch(r'[+-]?\d+', token):
      raise MuJaxError(
          f'Forget index file {path} holds {token!r}, which is not an integer; '
          'write one integer per line or separate them with commas.')
  return np.array([int(t) for t in tokens], np.int64)


def save_indices(path: str, indices: np.ndarray) -> None:
  """Writes `indices` as an int64 .npy at exactly `path`, atomically.

  The array goes to a temporary file in the same directory first and is then
  renamed over `path`, so a reader never sees a half-written file.
  """
  indices = np.asarray(indices)
  if not np.issubdtype(indices.dtype, np.integer):
    raise MuJaxError(
        f'Indices to save at {path} are {indices.dtype}, not integers; pass '
        'an integer array.')
  atomic_write(path, lambda f: np.save(f, indices.astype(np.int64)))
