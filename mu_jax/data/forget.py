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

INT64_MAX = np.iinfo(np.int64).max   # indices are int64 (`select_forget`)
# (argument, labels, number of classes, seed, inputs or None) -> indices
SelectorFn = Callable[[str, np.ndarray, int, int, np.ndarray | None], np.ndarray]
SELECTORS: Registry[SelectorFn] = Registry('forget selector')


def select_forget(spec: str, labels: np.ndarray, num_classes: int,
                  seed: int, inputs: np.ndarray | None = None) -> np.ndarray:
  """Sorted int64 training-set indices of the forget set `spec` names.

  `spec` is 'random:<fraction>', 'class:<k>', 'cluster:<k>:<fraction>' or
  'file:<path>'; `labels` are the training labels (or targets), `num_classes`
  is 0 for a data set without classes, `seed` only affects 'random' and
  'cluster', and `inputs` (the training inputs) only 'cluster'.
  """
  kind, _, arg = spec.partition(':')
  labels = np.asarray(labels)
  if not len(labels):
    raise MuJaxError(
        'The training set is empty, so there is nothing to forget; load a '
        'data set with training examples.')
  indices = SELECTORS.get(kind)(arg, labels, num_classes, seed, inputs)
  if len(indices) == len(labels):
    raise MuJaxError(
        f'The forget set {spec!r} is the whole training set; nothing would be '
        'left to retain, so choose a smaller forget set.')
  return indices.astype(np.int64)


@SELECTORS.register('random')
def _random(arg: str, labels: np.ndarray, num_classes: int,
            seed: int, inputs: np.ndarray | None) -> np.ndarray:
  """round(fraction * n) examples (at least one), drawn by `seed`."""
  del num_classes, inputs  # Uniform over all examples.
  count = max(1, round(_fraction(arg) * len(labels)))
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(len(labels), size=count, replace=False))


@SELECTORS.register('class')
def _class(arg: str, labels: np.ndarray, num_classes: int,
           seed: int, inputs: np.ndarray | None) -> np.ndarray:
  """Every training example of class `arg`."""
  del seed, inputs  # Fully determined by the labels.
  if not num_classes:
    raise MuJaxError(f"Forget spec 'class:{arg}' needs class labels, which this data set "
                     "does not have; use 'random:<fraction>' or 'file:<path>'.")
  _class_number(arg, num_classes)
  indices = np.flatnonzero(labels == int(arg))
  if not len(indices):
    raise MuJaxError(
        f'Class {int(arg)} has no training examples, so class:{arg} would '
        'forget nothing; choose another class.')
  return indices


@SELECTORS.register('cluster')
def _cluster(arg: str, labels: np.ndarray, num_classes: int,
             seed: int, inputs: np.ndarray | None) -> np.ndarray:
  """A coherent sub-cluster of class k: its round(fraction * n) rows nearest
  (Euclidean, in the inputs) to one of its rows drawn by `seed`.

  The non-random forget sets of Georgiev et al. 2024 are sub-populations
  (data-unlearning-bench `precomputing/forget_sets.ipynb`: rows at one end of
  a principal direction); a neighbourhood inside one class is this data set's
  analogue, a share of a class rather than all of it.
  """
  spec = f"Forget spec 'cluster:{arg}'"
  if not num_classes:
    raise MuJaxError(f'{spec} needs class labels, which this data set does not have; '
                     "use 'random:<fraction>' or 'file:<path>'.")
  klass, fraction = _cluster_arg(arg, num_classes)
  if inputs is None or len(inputs) != len(labels):
    raise MuJaxError(f'{spec} needs the training inputs, one row per label, to find '
                     'the nearest rows; pass inputs= to select_forget.')
  members = np.flatnonzero(labels == klass)
  count = max(1, round(fraction * len(labels)))
  if count > len(members):
    raise MuJaxError(f'{spec} asks for {count} rows, but class {klass} has '
                     f'{len(members)}; use a fraction of at most '
                     f'{len(members) / len(labels):.3f}.')
  rows = np.asarray(inputs, np.float64).reshape(len(labels), -1)[members]
  anchor = rows[np.random.default_rng(seed).integers(len(members))]
  nearest = np.argsort(np.sum((rows - anchor) ** 2, axis=1), kind='stable')[:count]
  return np.sort(members[nearest])


def _cluster_arg(arg: str, num_classes: int | None = None) -> tuple[int, float]:
  """(class, fraction) of 'cluster:<k>:<fraction>', the class below `num_classes` when given."""
  klass, _, share = arg.partition(':')
  try:
    fraction = float(share)
  except ValueError:
    fraction = 0.0  # Rejected just below.
  if (not re.fullmatch(r'\d+', klass.strip()) or (num_classes and int(klass) >= num_classes)
      or not 0 < fraction < 1):
    allowed = (f'an integer class in [0, {num_classes - 1}]' if num_classes
               else 'a whole-number class')
    raise MuJaxError(f"Forget spec 'cluster:{arg}' needs {allowed} and a fraction of the "
                     "training set strictly between 0 and 1; write e.g. 'cluster:0:0.05'.")
  return int(klass), fraction


@SELECTORS.register('file')
def _file(arg: str, labels: np.ndarray, num_classes: int,
          seed: int, inputs: np.ndarray | None) -> np.ndarray:
  """Explicit indices from a .npy integer array or a text file of integers."""
  del num_classes, seed, inputs  # Fully determined by the file.
  return _file_indices(arg, len(labels))


def check_spec(spec: str) -> None:
  """Refuses a forget spec whose form is wrong, before any data is loaded: an
  unknown kind, or an argument of the wrong form (`SPEC_CHECKS`). What needs
  the data (the training set's size, its classes) `select_forget` checks."""
  kind, _, arg = spec.partition(':')
  SELECTORS.get(kind)
  if kind in SPEC_CHECKS:
    SPEC_CHECKS[kind](arg)


def _fraction(arg: str) -> float:
  """The fraction of 'random:<fraction>', strictly between 0 and 1."""
  try:
    fraction = float(arg)
  except ValueError:
    fraction = 0.0  # Rejected just below.
  if not 0 < fraction < 1:
    raise MuJaxError(
        f"Forget spec 'random:{arg}' needs a fraction strictly between 0 and "
        "1; write e.g. 'random:0.1'.")
  return fraction


def _class_number(arg: str, num_classes: int | None = None) -> int:
  """The class of 'class:<k>': a whole number, below `num_classes` when given."""
  if not re.fullmatch(r'\d+', arg.strip()) or (num_classes and int(arg) >= num_classes):
    allowed = (f'an integer class in [0, {num_classes - 1}]' if num_classes
               else 'a whole-number class')
    raise MuJaxError(f"Forget spec 'class:{arg}' needs {allowed}; write e.g. 'class:0'.")
  return int(arg)


def _file_indices(path: str, n: int | None = None) -> np.ndarray:
  """The sorted indices of an index file: at least one, none twice, none negative
  (and all below `n`, the training set's size, when given)."""
  indices = _read_index_file(path)
  if not len(indices):
    raise MuJaxError(
        f'Forget index file {path} lists no indices; put at least one in it.')
  bad = indices[(indices < 0) | (indices >= (n if n is not None else INT64_MAX))]
  if len(bad):
    allowed = (f'outside the training set range [0, {n - 1}]' if n is not None
               else 'but indices count from 0')
    raise MuJaxError(
        f'Forget index file {path} holds index {bad[0]}, {allowed}; fix or '
        'regenerate the file.')
  unique, counts = np.unique(indices, return_counts=True)
  if (counts > 1).any():
    raise MuJaxError(
        f'Forget index file {path} lists index {unique[counts > 1][0]} more '
        'than once; remove the duplicates.')
  return unique


# Checks of a spec's argument that need no data, by kind (see `check_spec`).
SPEC_CHECKS: dict[str, Callable[[str], object]] = {
    'random': _fraction, 'class': _class_number, 'cluster': _cluster_arg,
    'file': _file_indices}


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
    indices = indices.ravel()
    if indices.size and indices.max() > INT64_MAX:
      raise MuJaxError(
          f'Forget index file {path} holds index {indices.max()}, beyond the largest '
          f'index numpy can hold ({INT64_MAX}); fix or regenerate the file.')
    return indices.astype(np.int64)
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
  values = [int(t) for t in tokens]
  for value in values:
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
      raise MuJaxError(
          f'Forget index file {path} holds {value}, beyond the largest index numpy '
          f'can hold ({INT64_MAX}); fix or regenerate the file.')
  return np.array(values, np.int64)


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
