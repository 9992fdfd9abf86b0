"""A ridge-regression head kept exact under added and removed data (RLS).

The head solves min_W |X W - Y|^2 + gamma |W|^2 over the data seen so far:
  A = X^T X + gamma I,   R = A^-1,   W = R X^T Y.
Learning a chunk (X, Y) adds X^T X to A; forgetting one subtracts it. Both
change A by a rank-(rows) term, so the Woodbury identity updates R without
re-solving the D x D system, at O(rows D^2) instead of O(N D^2 + D^3):

  learn:  R' = R - R X^T (I + X R X^T)^-1 X R
  forget: R' = R + R X^T (I - X R X^T)^-1 X R

and with B = X^T Y (so W = R B), B' = B +- X^T Y gives for both, with the
updated R' (derivation: W' = R' B' = R'(A W +- X^T Y) and A = A' +- X^T X):

  learn:  W' = W + R' X^T (Y - X W)
  forget: W' = W - R' X^T (Y - X W)

The learn rule is eq. (9)-(10) of ACIL (Zhuang et al., NeurIPS 2022) in its
mini-batch form from G-ACIL; the forget rule is its exact inverse, as used by
ACU (Tang et al., arXiv:2505.12239). Forgetting rows that were never learned
makes I - X R X^T indefinite and the result NaN.

Everything runs in float64 inside a scoped `jax.enable_x64` context: the
downdate subtracts nearly equal matrices, and float32 loses the head after a
few requests. Inputs of any float dtype are accepted; RidgeState arrays are
float64. Pass them back only to functions of this module (a float64 array fed
to a jit outside an x64 context is silently cast to float32).
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from mu_jax.errors import MuJaxError

# ACIL/G-ACIL official code, analytic/AnalyticLinear.py and config.py: gamma=1e-1.
GAMMA = 0.1
# Rows per Woodbury step: bounds the rows x rows Cholesky and the memory of a request.
CHUNK_SIZE = 1024


class RidgeState(NamedTuple):
  """The regularised inverse autocorrelation R = (X^T X + gamma I)^-1 and the head W."""
  R: jax.Array   # [D, D] float64
  W: jax.Array   # [D, C] float64


def check_gamma(gamma: float) -> None:
  if not gamma > 0:
    raise MuJaxError(f'The ridge regulariser gamma must be positive, got {gamma}; '
                     'use e.g. 0.1.')


def init(dim: int, num_classes: int, gamma: float = GAMMA) -> RidgeState:
  """The empty head: R = I / gamma, W = 0."""
  check_gamma(gamma)
  with jax.enable_x64(True):
    return RidgeState(jnp.eye(dim, dtype=jnp.float64) / gamma,
                      jnp.zeros((dim, num_classes), jnp.float64))


def one_hot(labels, num_classes: int) -> jax.Array:
  """Float64 one-hot targets Y."""
  with jax.enable_x64(True):
    return jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float64)


def _woodbury(state: RidgeState, X: jax.Array, Y: jax.Array, sign: float) -> RidgeState:
  """One exact rank-(rows) step; sign=+1 learns, -1 forgets."""
  RXt = state.R @ X.T                                      # [D, n]
  K = jnp.eye(X.shape[0], dtype=X.dtype) + sign * (X @ RXt)
  gain = cho_solve(cho_factor(K, lower=True), RXt.T)       # K^-1 X R, [n, D]
  R = state.R - sign * (RXt @ gain)
  R = (R + R.T) / 2                                        # keep R symmetric
  W = state.W + sign * (R @ (X.T @ (Y - X @ state.W)))
  return RidgeState(R, W)


@functools.partial(jax.jit, static_argnames=('sign', 'size'))
def _scan_chunks(state: RidgeState, X, Y, sign: float, size: int) -> RidgeState:
  """Woodbury steps over row chunks of `size`; zero padding rows are no-ops."""
  pad = -X.shape[0] % size
  X = jnp.pad(X, ((0, pad), (0, 0))).reshape(-1, size, X.shape[1])
  Y = jnp.pad(Y, ((0, pad), (0, 0))).reshape(-1, size, Y.shape[1])
  state, _ = jax.lax.scan(lambda s, xy: (_woodbury(s, *xy, sign), None), state, (X, Y))
  return state


def _apply_in_chunks(state: RidgeState, X, Y, chunk_size: int, sign: float) -> RidgeState:
  if chunk_size < 1:
    raise MuJaxError(f'The chunk size must be positive, got {chunk_size}.')
  with jax.enable_x64(True):
    X = jnp.asarray(X, jnp.float64)
    Y = jnp.asarray(Y, jnp.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
      raise MuJaxError(f'Expected X [N, D] and Y [N, C] with equal N, got {X.shape} '
                       f'and {Y.shape}.')
    if X.shape[1] != state.R.shape[0] or Y.shape[1] != state.W.shape[1]:
      raise MuJaxError(f'X {X.shape} and Y {Y.shape} do not match the head '
                       f'{state.W.shape}.')
    if X.shape[0] == 0:
      return state
    return _scan_chunks(state, X, Y, sign, min(chunk_size, X.shape[0]))


def learn(state: RidgeState, X, Y, chunk_size: int = CHUNK_SIZE) -> RidgeState:
  """Adds the rows (X [N, D], Y [N, C]) to the head, exactly."""
  return _apply_in_chunks(state, X, Y, chunk_size, 1.0)


def forget(state: RidgeState, X, Y, chunk_size: int = CHUNK_SIZE) -> RidgeState:
  """Removes previously learned rows (X, Y) from the head, exactly."""
  return _apply_in_chunks(state, X, Y, chunk_size, -1.0)


@jax.jit
def _closed_form(X, Y, gamma):
  A = X.T @ X + gamma * jnp.eye(X.shape[1], dtype=X.dtype)
  return cho_solve(cho_factor(A, lower=True), X.T @ Y)


def closed_form(X, Y, gamma: float = GAMMA) -> jax.Array:
  """The ridge head (X^T X + gamma I)^-1 X^T Y from scratch, float64."""
  check_gamma(gamma)
  with jax.enable_x64(True):
    return _closed_form(jnp.asarray(X, jnp.float64), jnp.asarray(Y, jnp.float64),
                        jnp.float64(gamma))
