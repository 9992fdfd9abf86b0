"""Loads a data set as normalised train/val/test `Examples`, deterministically.

The validation split (and, for a source without one, the test split) is carved
from the source's training examples by a seeded permutation; each part keeps
the source order, so the same spec and seed give bit-identical arrays.
"""
from typing import NamedTuple

import numpy as np

from mu_jax.data import sources
from mu_jax.data.examples import Examples
from mu_jax.errors import MuJaxError


class Dataset(NamedTuple):
  """A loaded data set: three normalised splits and the task they pose."""
  name: str            # the spec string it was loaded from
  train: Examples      # 'x' and 'y'
  val: Examples        # may have 0 examples when val_fraction == 0
  test: Examples
  outputs: int         # classes of a classification set, targets of a regression set
  task: str            # 'classification' or 'regression'


def load_dataset(spec: str, *, data_dir: str | None = None, seed: int = 0,
                 val_fraction: float = 0.1,
                 test_fraction: float = 0.2) -> Dataset:
  """Loads `spec` (e.g. 'digits', 'idx:<dir>', 'tfds:<name>', 'diabetes') as a Dataset.

  Both fractions are of the source's training examples; `test_fraction` only
  applies to a source without its own test split. Inputs are scaled to
  [0, 1] by the source's maximum and standardised per channel (per feature
  for feature rows) with the final train split's mean and std; regression
  targets are standardised the same way, so errors are in units of the
  training targets' standard deviation.
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
  if not has_test and not len(test):
    raise MuJaxError(
        f'test_fraction={test_fraction} of the {len(raw.train_y)} rows of {spec} holds out '
        f'no test rows, and the evaluation needs some; set it to at least '
        f'{1 / len(raw.train_y):.2g}.')
  test_x, test_y = ((raw.test_x, raw.test_y) if has_test else
                    (raw.train_x[test], raw.train_y[test]))
  scale = np.float32(1.0 / raw.max_value)
  mean, std = channel_stats(raw.train_x[train] * scale)
  regression = raw.task == 'regression'
  y_mean, y_std = channel_stats(raw.train_y[train]) if regression else (0, 1)

  def split(x: np.ndarray, y: np.ndarray) -> Examples:
    targets = ((y - y_mean) / y_std).astype(np.float32) if regression else y.astype(np.int32)
    return Examples(x=((x * scale - mean) / std).astype(np.float32), y=targets)

  return Dataset(spec, split(raw.train_x[train], raw.train_y[train]),
                 split(raw.train_x[val], raw.train_y[val]),
                 split(test_x, test_y), raw.outputs, raw.task)


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
  """Per-channel (last axis) float32 mean and std of `x`, accumulated in float64.

  A (near-)constant channel gets std 1, so it is centred, not blown up.
  """
  axes = tuple(range(x.ndim - 1))
  mean = x.mean(axis=axes, dtype=np.float64)
  var = np.square(x).mean(axis=axes, dtype=np.float64) - np.square(mean)
  std = np.sqrt(np.maximum(var, 0.0))
  return (mean.astype(np.float32),
          np.where(std > 1e-6, std, 1.0).astype(np.float32))
