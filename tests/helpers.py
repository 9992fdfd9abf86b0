"""Tiny data and configs shared by the tests."""
import os

import numpy as np

from mu_jax import config_lib
from mu_jax.data import Split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str = 'smoke=True'):
  """configs/<name>.py:get_config(arg)."""
  return config_lib.load_config_file(os.path.join(ROOT, 'configs', f'{name}.py'), arg)


def blobs(n: int = 96, num_classes: int = 3, dim: int = 6, seed: int = 0) -> Split:
  """Well-separated Gaussian blobs as (n, dim, 1, 1) images."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % num_classes
  centers = rng.normal(0, 3, (num_classes, dim))
  x = centers[y] + rng.normal(0, 0.5, (n, dim))
  return Split(x.reshape(n, dim, 1, 1).astype(np.float32), y.astype(np.int32))
