"""Input checks shared by the LM metric modules: each refuses bad input in one sentence."""
import numpy as np

from mu_jax.errors import MuJaxError


def finite_array(name: str, values, ndim: int) -> np.ndarray:
  """`values` as a non-empty, finite float64 array of `ndim` dimensions."""
  array = np.asarray(values, np.float64)
  if array.ndim != ndim or array.size == 0:
    raise MuJaxError(f'{name} must be a non-empty {ndim}-D array; got shape {array.shape}.')
  if not np.all(np.isfinite(array)):
    raise MuJaxError(f'{name} has a NaN or infinite value.')
  return array


def same_length(name: str, first, second) -> None:
  """Refuse two per-item sequences of different or zero length."""
  if len(first) != len(second) or len(first) == 0:
    raise MuJaxError(f'{name} needs two non-empty sequences of one length; '
                     f'got {len(first)} and {len(second)}.')
