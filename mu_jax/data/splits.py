"""Loads a data set as normalised train/val/test splits, deterministically.

The validation split (and, for a source without one, the test split) is carved
from the source's training examples by a seeded permutation; each part keeps
the source order, so the same spec and seed give bit-identical arrays.
"""
from typing import NamedTuple

import numpy as np

from mu_jax.data import sources
from mu_jax.errors import MuJaxError


class Split(NamedTuple):
  """One split's normalised images and their labels."""
  x: np.ndarray  # float32, NHWC, already normalised
  y: np.ndarray  # int32 labels in [0, num_classes)


class Dataset(NamedTuple):
  """A loaded data set: three normalised splits and the number of classes."""
  name: str            # the spec string it was loaded from
  train: Split
  val: Split           # may have 0 examples when val_fraction == 0
  test: Split
  num_classes: int


def load_dataset(spec: str, *, data_dir: str | None = None, seed: int = 0,
                 val_fraction: float = 0.1,
                 test_fraction: float = 0.2) -> Dataset:
  """Loads `spec` ('digits', 'idx:<dir>' or 'tfds:<name>') as a Dataset.

  Both fractions are of the source's training examples; `test_fraction` only
  applies to a source without its own test split. Images are scaled to [0, 1]
  and standardised per channel with the final train split's mean and std.
  """
  _check_fractions(val_fraction, test_fraction)
  raw = sources.read_source(spec, data_dir)
  has_test = raw.test_x is not None
  train, val, test = carve(len(raw.train_y), val_fraction=val_fraction,
                           test_fraction=0.0 if has_test else test_fraction,
                           seed=seed)
  if not len(train):
    raise MuJaxError(
        f'{spec} leaves no training examples after holding out val and test; '
        'lower val_fraction or test_fraction.')
  test_x, test_y = ((raw.test_x, raw.test_y) if has_test else
                    (raw.train_x[test], raw.train_y[test]))
  scale = np.float32(1.0 / raw.max_value)
  mean, std = channel_stats(raw.train_x[train] * scale)

  def split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(((x * scale - mean) / std).astype(np.float32),
                 y.astype(np.int32))

  return Dataset(spec, split(raw.train_x[train], raw.train_y[train]),
                 split(raw.train_x[val], raw.train_y[val]),
                 split(test_x, test_y), raw.num_classes)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
  if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and
          val_fraction + test_fraction < 1):
    raise MuJaxError(
        f'val_fraction={val_fraction} and test_fraction={test_fraction} must '
        'each lie in [0, 1) and sum to less than 1; change them.')


def carve(n: int, *, val_fraction: float, test_fraction: float,
          seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Disjoint, sorted train/val/test indices covering range(n), by seed."""
  order = np.random.default_rng(seed).permutation(n)
  n_test, n_val = round(test_fraction * n), round(val_fraction * n)
  return (np.sort(order[n_test + n_val:]),
          np.sort(order[n_test:n_test + n_val]), np.sort(order[:n_test]))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel float32 mean and std of NHWC `x`, accumulated in float64.

  A (near-)constant channel gets std 1, so it is centred, not blown up.
  """
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axis=axes, dtype=np.float64)
  var = np.square(x).mean(axis=axes, dtype=np.float64) - np.square(mean)
  std = np.sqrt(np.maximum(var, 0.0))
  return (mean.astype(np.float32),
          np.where(std > 1e-6, std, 1.0).astype(np.float32))
