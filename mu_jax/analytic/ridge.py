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
ACU (Tang et al., arXiv:2505.12239).

The state keeps a ledger of the rows it holds: every row has an integer id in
[0, num_ids) (ACU: its index in the training set) and `learned[id]` says
whether it is in the head. Forgetting a row that is not there (never learned,
forgotten before, or named twice in one request) would make I - X R X^T
indefinite (a NaN head) or silently wrong, so `learn` and `forget` check the
ids on the host first and refuse a bad request whole, changing nothing. The
checks need concrete ids; inside a jitted function use `check_forget` on the
host beforehand and the pure `downdate`.

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
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve

from mu_jax.errors import MuJaxError

# ACIL/G-ACIL official code, analytic/AnalyticLinear.py and config.py: gamma=1e-1.
GAMMA = 0.1
# Rows per Woodbury step: bounds the rows x rows Cholesky and the memory of a request.
CHUNK_SIZE = 1024


class RidgeState(NamedTuple):
  """R = (X^T X + gamma I)^-1 and the head W over the rows whose ids are `learned`."""
  R: jax.Array         # [D, D] float64
  W: jax.Array         # [D, C] float64
  learned: jax.Array   # [num_ids] bool: the ledger, True for ids in the head


def check_gamma(gamma: float) -> None:
  if not gamma > 0:
    raise MuJaxError(f'The ridge regulariser gamma must be positive, got {gamma}; '
                     'use e.g. 0.1.')


def init(dim: int, num_classes: int, num_ids: int, gamma: float = GAMMA) -> RidgeState:
  """The empty head: R = I / gamma, W = 0, no id learned out of [0, num_ids)."""
  check_gamma(gamma)
  if not (isinstance(num_ids, (int, np.integer)) and num_ids > 0):
    raise MuJaxError(f'The ridge head needs a positive number of row ids, got {num_ids!r}.')
  with jax.enable_x64(True):
    return RidgeState(jnp.eye(dim, dtype=jnp.float64) / gamma,
                      jnp.zeros((dim, num_classes), jnp.float64),
                      jnp.zeros(int(num_ids), bool))


def one_hot(labels, num_classes: int) -> jax.Array:
  """Float64 one-hot targets Y."""
  with jax.enable_x64(True):
    return jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float64)


def _woodbury(R: jax.Array, W: jax.Array, X: jax.Array, Y: jax.Array,
              sign: float) -> tuple[jax.Array, jax.Array]:
  """One exact rank-(rows) step of (R, W); sign=+1 learns, -1 forgets."""
  RXt = R @ X.T                                            # [D, n]
  K = jnp.eye(X.shape[0], dtype=X.dtype) + sign * (X @ RXt)
  gain = cho_solve(cho_factor(K, lower=True), RXt.T)       # K^-1 X R, [n, D]
  R_new = R - sign * (RXt @ gain)
  R_new = (R_new + R_new.T) / 2                            # keep R symmetric
  return R_new, W + sign * (R_new @ (X.T @ (Y - X @ W)))


@functools.partial(jax.jit, static_argnames=('sign', 'size'))
def _scan_chunks(state: RidgeState, X, Y, ids, sign: float, size: int) -> RidgeState:
  """Woodbury steps over row chunks of `size` (zero padding rows are no-ops),
  then the ledger marks `ids` learned (sign=+1) or not (-1)."""
  pad = -X.shape[0] % size
  X = jnp.pad(X, ((0, pad), (0, 0))).reshape(-1, size, X.shape[1])
  Y = jnp.pad(Y, ((0, pad), (0, 0))).reshape(-1, size, Y.shape[1])
  (R, W), _ = jax.lax.scan(lambda rw, xy: (_woodbury(*rw, *xy, sign), None),
                           (state.R, state.W), (X, Y))
  return RidgeState(R, W, state.learned.at[ids].set(sign > 0))


def _rows(state: RidgeState, X, Y) -> tuple[jax.Array, jax.Array]:
  """X [N, D] and Y [N, C] in float64, or MuJaxError if they do not fit the head."""
  with jax.enable_x64(True):
    X = jnp.asarray(X, jnp.float64)
    Y = jnp.asarray(Y, jnp.float64)
  if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
    raise MuJaxError(f'Expected X [N, D] and Y [N, C] with equal N, got {X.shape} '
                     f'and {Y.shape}.')
  if X.shape[1] != state.R.shape[0] or Y.shape[1] != state.W.shape[1]:
    raise MuJaxError(f'X {X.shape} and Y {Y.shape} do not match the head '
                     f'{state.W.shape}.')
  return X, Y


def _apply(state: RidgeState, X, Y, ids, chunk_size: int, sign: float) -> RidgeState:
  """The Woodbury steps and the ledger update, pure (ids may be traced): no id check."""
  if chunk_size < 1:
    raise MuJaxError(f'The chunk size must be positive, got {chunk_size}.')
  X, Y = _rows(state, X, Y)
  if X.shape[0] == 0:
    return state
  with jax.enable_x64(True):
    return _scan_chunks(state, X, Y, jnp.asarray(ids), sign, min(chunk_size, X.shape[0]))


def listed(ids: np.ndarray, limit: int = 5) -> str:
  """'id 3', 'ids 3, 7 and 9', or 'ids 3, 7, 9, 12, 15 and 4 more (9 in all)'."""
  ids = [int(i) for i in ids]
  if len(ids) == 1:
    return f'id {ids[0]}'
  if len(ids) <= limit:
    return f'ids {", ".join(map(str, ids[:-1]))} and {ids[-1]}'
  return (f'ids {", ".join(map(str, ids[:limit]))} and {len(ids) - limit} more '
          f'({len(ids)} in all)')


def _host_ids(ids) -> np.ndarray:
  """`ids` as a host int64 vector, or MuJaxError."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
    raise MuJaxError(f'Expected a vector of integer row ids, got ids of dtype {ids.dtype} '
                     f'and shape {ids.shape}.')
  return ids.astype(np.int64)


def _repeated(ids: np.ndarray) -> np.ndarray:
  values, counts = np.unique(ids, return_counts=True)
  return values[counts > 1]


def check_learn(state: RidgeState, ids) -> np.ndarray:
  """The host ids of a learn request; MuJaxError naming those outside
  [0, num_ids), repeated, or learned already."""
  ids = _host_ids(ids)
  num_ids = state.learned.shape[0]
  outside = np.unique(ids[(ids < 0) | (ids >= num_ids)])
  if outside.size:
    raise MuJaxError(f'Cannot learn row {listed(outside)}: this head tracks ids 0 to '
                     f'{num_ids - 1}; nothing was learned.')
  repeated = _repeated(ids)
  if repeated.size:
    raise MuJaxError(f'Cannot learn row {listed(repeated)}, given more than once in this '
                     'request; nothing was learned.')
  again = np.unique(ids[np.asarray(jax.device_get(state.learned))[ids]])
  if again.size:
    raise MuJaxError(f'Cannot learn row {listed(again)}, which the head has learned '
                     'already; nothing was learned.')
  return ids


def check_forget(state: RidgeState, ids) -> np.ndarray:
  """The host ids of a forget request; MuJaxError naming those repeated or not
  in the head (never learned, or forgotten already)."""
  ids = _host_ids(ids)
  repeated = _repeated(ids)
  if repeated.size:
    raise MuJaxError(f'Cannot forget row {listed(repeated)}, given more than once in this '
                     'request; nothing was forgotten.')
  learned = np.asarray(jax.device_get(state.learned))
  inside = (ids >= 0) & (ids < learned.shape[0])
  absent = np.unique(ids[~inside | ~learned[np.where(inside, ids, 0)]])
  if absent.size:
    raise MuJaxError(f'Cannot forget row {listed(absent)}, which the head does not hold '
                     '(never learned, or forgotten already); nothing was forgotten.')
  return ids


def _checked(state: RidgeState, X, Y, ids, check) -> tuple:
  X, Y = _rows(state, X, Y)
  if np.shape(ids) != (X.shape[0],):
    raise MuJaxError(f'Expected one row id per row of X ({X.shape[0]}), got ids of shape '
                     f'{np.shape(ids)}.')
  return X, Y, check(state, ids)


def learn(state: RidgeState, X, Y, ids, chunk_size: int = CHUNK_SIZE) -> RidgeState:
  """Adds the rows (X [N, D], Y [N, C]) with row ids `ids` [N] to the head, exactly.

  Refuses the whole request (MuJaxError, nothing learned) if any id is
  learned already, repeated, or outside the head's id range.
  """
  return _apply(state, *_checked(state, X, Y, ids, check_learn), chunk_size, 1.0)


def forget(state: RidgeState, X, Y, ids, chunk_size: int = CHUNK_SIZE) -> RidgeState:
  """Removes the learned rows (X, Y) with row ids `ids` [N] from the head, exactly.

  Refuses the whole request (MuJaxError, nothing forgotten, not even its
  valid rows) if any id is repeated or not in the head.
  """
  return _apply(state, *_checked(state, X, Y, ids, check_forget), chunk_size, -1.0)


def downdate(state: RidgeState, X, Y, ids, chunk_size: int = CHUNK_SIZE) -> RidgeState:
  """`forget` without the id check, pure and jittable (ids may be traced), for a
  jitted request whose ids passed `check_forget` on the host."""
  return _apply(state, X, Y, ids, chunk_size, -1.0)


def learned_ids(state: RidgeState) -> np.ndarray:
  """The sorted ids of the rows the head holds."""
  return np.flatnonzero(np.asarray(jax.device_get(state.learned)))


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
