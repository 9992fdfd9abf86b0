"""Gradients and Hessian-vector products of a mean loss over a batch stream,
and inverse-HVP solvers (damped conjugate gradient, LiSSA).

A loss is `loss_fn(params, model_state, batch) -> Σ_i w_i ℓ_i`, the *summed*
weighted loss of one padded batch, so that summing over batches and dividing
by Σ w gives the exact mean over the stream, whatever the batching or
sharding. `loss_fn` is a static (hashable) argument of the jitted per-batch
reductions: pass the same object (e.g. a `TaskLossSum(task)`) to reuse
their compilation.
"""
import dataclasses
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp

from mu_jax import logs
from mu_jax.errors import MuJaxError
from mu_jax.models import merge_variables

LossFn = Callable[[Any, Any, dict], jax.Array]


@dataclasses.dataclass(frozen=True)
class TaskLossSum:
  """Σ_i w_i ℓ_i of the task's per-example loss, model in eval mode (BatchNorm
  running statistics). A frozen dataclass: hashable, and equal only to the
  same loss of the same task, as a static jit argument must be."""
  task: Any   # a mu_jax.tasks.Task

  def __call__(self, params, model_state, batch) -> jax.Array:
    outputs, _ = self.task.apply(merge_variables(params, model_state), batch, False)
    return jnp.sum(self.task.losses(outputs, batch) * batch['w'])


def hvp(loss_fn: LossFn, params, model_state, batch, v):
  """H v of one batch's summed loss, forward-over-reverse: jvp of grad."""
  grad_fn = lambda p: jax.grad(loss_fn)(p, model_state, batch)
  return jax.jvp(grad_fn, (params,), (v,))[1]


@jax.jit
def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


@jax.jit
def _divide(tree, total):
  return jax.tree.map(lambda t: t / total, tree)


@jax.jit(static_argnums=0)
def _grad_sum(loss_fn, params, model_state, batch, acc, weight):
  grads = jax.grad(loss_fn)(params, model_state, batch)
  return _add(acc, grads), weight + jnp.sum(batch['w'])


@jax.jit(static_argnums=0)
def _hvp_sum(loss_fn, params, model_state, batch, v, acc, weight):
  return _add(acc, hvp(loss_fn, params, model_state, batch, v)), weight + jnp.sum(batch['w'])


def _zeros(params):
  return jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)


def _mean(acc, weight):
  if float(weight) <= 0:
    raise MuJaxError('The batch stream is empty, so its mean loss is undefined; '
                     'pass a non-empty split.')
  return _divide(acc, weight)


def mean_gradient(loss_fn: LossFn, params, model_state, batches: Iterable[dict]):
  """∇ of the mean loss over all (weighted) examples of `batches`, on device."""
  acc, weight = _zeros(params), jnp.zeros((), jnp.float32)
  for batch in logs.progress(batches, unit='batch', desc='mean gradient'):
    acc, weight = _grad_sum(loss_fn, params, model_state, batch, acc, weight)
  return _mean(acc, weight)


def mean_hvp(loss_fn: LossFn, params, model_state, batches: Iterable[dict], v):
  """H v, H the Hessian of the mean loss over all examples of `batches`."""
  acc, weight = _zeros(params), jnp.zeros((), jnp.float32)
  for batch in batches:
    acc, weight = _hvp_sum(loss_fn, params, model_state, batch, v, acc, weight)
  return _mean(acc, weight)


@jax.jit
def _vdot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@jax.jit
def _axpy(alpha, x, y):
  """alpha * x + y over pytrees."""
  return jax.tree.map(lambda u, w: alpha * u + w, x, y)


def conjugate_gradient(hvp_fn: Callable, b, *, damping: float = 0.0,
                       max_iters: int = 100, tol: float = 1e-6):
  """Solves (H + damping·I) x = b by conjugate gradient on pytrees.

  `hvp_fn(v) -> H v` may itself loop over a batch stream (e.g. a closure over
  `mean_hvp`), which is why the iteration is a host loop of jitted pytree
  operations. H + damping·I must be symmetric positive definite. Stops once
  ‖r‖ ≤ tol·‖b‖ or after `max_iters` products.
  """
  matvec = lambda v: _axpy(damping, v, hvp_fn(v))
  x = jax.tree.map(jnp.zeros_like, b)
  r = b
  p = r
  rs = _vdot(r, r)
  threshold = tol**2 * float(rs)
  for _ in logs.progress(range(max_iters), unit='product', desc='conjugate gradient'):
    if float(rs) <= threshold:
      break
    ap = matvec(p)
    step = rs / _vdot(p, ap)
    x = _axpy(step, p, x)
    r = _axpy(-step, ap, r)
    rs_new = _vdot(r, r)
    p = _axpy(rs_new / rs, p, r)
    rs = rs_new
  return x


def lissa(hvp_fn: Callable, b, *, damping: float = 0.01, scale: float = 25.0,
          depth: int = 1000):
  """LiSSA (Agarwal et al. 2017, as in Koh & Liang 2017's influence code).

  Iterates h ← b + (1 − damping)·h − H h / scale from h = b, `depth` times,
  and returns h / scale. Its fixed point is (H + damping·scale·I)^{-1} b; it
  converges when every eigenvalue of H lies in (−damping·scale, (2 −
  damping)·scale), so `scale` must exceed about half the largest eigenvalue
  of H. A stochastic `hvp_fn` (a fresh batch per call) gives the original
  stochastic estimator.
  """
  h = b
  for _ in logs.progress(range(depth), unit='product', desc='LiSSA'):
    h = _lissa_step(b, h, hvp_fn(h), damping, scale)
  return _divide(h, scale)


@jax.jit
def _lissa_step(b, h, hv, damping, scale):
  return jax.tree.map(lambda b_, h_, hv_: b_ + (1 - damping) * h_ - hv_ / scale, b, h, hv)
