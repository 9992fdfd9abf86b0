r"""Times one ACU forget request (Woodbury downdate) against refitting the ridge head.

Random penultimate features stand in for a backbone's; both paths start from
them, project through the same random buffer, and run float64, jitted,
compiled before timing, with block_until_ready; each time is the fastest of
--repeats runs, as other load on the machine only ever adds time. Run:

  python benchmarks/acu_forget_vs_refit.py --widths=1024,2048,4096,8192
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.scipy.linalg import cho_factor, cho_solve

from mu_jax.analytic import ridge
from mu_jax.methods import acu

_WIDTHS = flags.DEFINE_list('widths', ['1024', '2048', '4096', '8192'], 'Buffer widths.')
_ROWS = flags.DEFINE_integer('rows', 20_000, 'Rows of D.')
_FEATURES = flags.DEFINE_integer('features', 128, 'Penultimate feature dimension.')
_FORGET = flags.DEFINE_integer('forget', 500, 'Rows in the forget request.')
_CLASSES = flags.DEFINE_integer('classes', 10, 'Number of classes.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per path; the fastest is kept.')


@jax.jit
def _refit(features, targets, buffer):
  return ridge.closed_form(jax.nn.relu(features @ buffer), targets, ridge.GAMMA)


@jax.jit
def _fit_with_inverse(X, Y):
  """The state (R, W) on D, set up once per width (untimed)."""
  A = X.T @ X + ridge.GAMMA * jnp.eye(X.shape[1], dtype=X.dtype)
  R = cho_solve(cho_factor(A, lower=True), jnp.eye(X.shape[1], dtype=X.dtype))
  return ridge.RidgeState(R, R @ (X.T @ Y))


def _timed(fn):
  """(result, fastest wall time of --repeats runs), compiled and warmed first."""
  out = jax.block_until_ready(fn())
  seconds = []
  for _ in range(_REPEATS.value):
    began = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - began)
  return out, min(seconds)


def _forget(state, features, labels, buffer):
  return acu.forget_chunk(state, features, labels, buffer, chunk_size=_FORGET.value).W


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  n, f = _ROWS.value, _FORGET.value
  features = rng.normal(size=(n, _FEATURES.value))
  labels = rng.integers(0, _CLASSES.value, n)
  print(f'D: {n} rows x {_FEATURES.value} features, forget {f} rows, '
        f'{_CLASSES.value} classes, float64, device {jax.devices()[0].platform}')
  print(f'{"width":>6} {"forget s":>9} {"refit s":>9} {"refit/forget":>13} {"max|dW|":>10}')
  for width in map(int, _WIDTHS.value):
    buffer = acu.buffer_weights(0, _FEATURES.value, width)
    with jax.enable_x64(True):
      targets = ridge.one_hot(labels, _CLASSES.value)
      buffer64 = jnp.asarray(buffer, jnp.float64)
      state = _fit_with_inverse(acu.buffer_features(features, buffer), targets)
      retain = (jnp.asarray(features[f:]), targets[f:])
      forgotten, forget_s = _timed(lambda: _forget(state, features[:f], labels[:f], buffer))
      refitted, refit_s = _timed(lambda: _refit(*retain, buffer64))
      diff = float(jnp.abs(forgotten - refitted).max())
    print(f'{width:>6} {forget_s:>9.3f} {refit_s:>9.3f} {refit_s / forget_s:>13.1f} '
          f'{diff:>10.2e}', flush=True)


if __name__ == '__main__':
  app.run(main)
