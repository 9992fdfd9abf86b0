"""The shared core of gradient-based unlearning: a loss, an optimizer, a stream.

A loss is `loss_fn(task, variables, batch, rng) -> (loss, new_model_state)`,
written on the task's forward pass and per-example loss (`Task.apply`,
`Task.mean_loss`), so one loss serves every task.

An optional trainable mask (a pytree of booleans like the params) freezes
weights inside the optax chain: `optim.keep_trainable` zeroes their gradients
before the optimizer and their updates after it, so momentum or weight decay
can never move them (the leak in reference code that masks only the gradient).

A loss that needs more than its batch (a frozen teacher, a reference model, a
schedule over epochs) is built with `make_aux`: `make_aux(ctx, variables)`
runs once in prepare, its result is kept in the state, and the loss is called
with a fifth argument `LossContext(step, aux)`.

Sharpness-aware steps (SAM, Foret et al. 2021, arXiv:2010.01412): with a
radius ρ every step first ascends to θ + ρ·g/‖g‖₂ (g the masked gradient at θ,
‖·‖₂ over all parameters), takes the gradient there with the same batch and
random draws, and applies that one at θ. ρ is `sam_rho`, or, when that is
None, the radius of an enclosing `sharpness_aware(ρ)` block, so a wrapper can
make any method built on `gradient_method` sharpness-aware
(`mu_jax.methods.smooth`).
"""
import contextlib
import contextvars
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mu_jax.methods.base import Context, Method, Stream
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import keep_trainable, make_optimizer
from mu_jax.tasks import Task

# loss_fn(task, variables, batch, rng[, LossContext]) -> (loss, new_model_state)
LossFn = Callable[..., tuple[jax.Array, dict]]


class GradientState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  mask: Any      # trainable mask (pytree of bool), or None for all trainable
  rng: jax.Array
  aux: Any = None   # make_aux(ctx, variables), or None


class LossContext(NamedTuple):
  """What a loss built with `make_aux` sees besides its batch."""
  step: jax.Array   # updates taken before this one
  aux: Any


class SharpnessAware(NamedTuple):
  rho: float
  built: list   # one entry per gradient_method built inside the block


_SHARPNESS: contextvars.ContextVar[SharpnessAware | None] = contextvars.ContextVar(
    'sharpness_aware', default=None)


@contextlib.contextmanager
def sharpness_aware(rho: float) -> Iterator[SharpnessAware]:
  """Gradient methods built inside this block take SAM steps of radius `rho`.

  Construction-time only: the methods built keep ρ in their closures and stay
  pure. The yielded record's `built` lists how many were built, so a wrapper
  can refuse a method that has no gradient steps.
  """
  token = _SHARPNESS.set(SharpnessAware(float(rho), []))
  try:
    yield _SHARPNESS.get()
  finally:
    _SHARPNESS.reset(token)


def _masked(grads, mask):
  if mask is None:
    return grads
  return jax.tree.map(lambda g, m: jnp.where(m, g, 0), grads, mask)


def sam_gradient(grad_fn: Callable, params, grads, rho: float, mask=None):
  """∇L at θ + ρ·g/‖g‖₂, masked like g (frozen weights are neither perturbed nor moved)."""
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
  scale = jnp.where(norm > 0, rho / jnp.where(norm > 0, norm, 1.0), 0.0)
  perturbed = jax.tree.map(lambda p, g: p + (scale * g).astype(p.dtype), params, grads)
  return _masked(grad_fn(perturbed), mask)


def gradient_method(loss_fn: LossFn, *, stream: Stream, learning_rate: float,
                    optimizer: str = 'sgd', momentum: float = 0.9,
                    weight_decay: float = 0.0,
                    make_mask: Callable[[Context, dict], Any] | None = None,
                    make_aux: Callable[[Context, dict], Any] | None = None,
                    sam_rho: float | None = None) -> Method:
  """Builds a Method that takes one optimizer step of `loss_fn` per batch."""
  tx = optax.chain(keep_trainable(),
                   make_optimizer(optimizer, learning_rate, total_steps=1, momentum=momentum,
                                  weight_decay=weight_decay),
                   keep_trainable())
  enclosing = _SHARPNESS.get()
  if enclosing is not None:
    enclosing.built.append(loss_fn)
    if sam_rho is None:
      sam_rho = enclosing.rho

  def prepare(ctx: Context, variables: dict) -> GradientState:
    params, model_state = split_variables(jax.tree.map(jnp.copy, variables))
    mask = make_mask(ctx, variables) if make_mask else None
    aux = make_aux(ctx, variables) if make_aux else None
    return GradientState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params),
                         mask, jax.random.PRNGKey(ctx.seed), aux)

  def update(task: Task, state: GradientState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    extra = (LossContext(state.step, state.aux),) if make_aux else ()

    def objective(params):
      return loss_fn(task, merge_variables(params, state.model_state), batch, rng, *extra)

    (loss, new_model_state), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    if sam_rho is not None:
      grads = sam_gradient(lambda p: jax.grad(objective, has_aux=True)(p)[0],
                           state.params, _masked(grads, state.mask), sam_rho, state.mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, mask=state.mask)
    params = optax.apply_updates(state.params, updates)
    new_state = state._replace(step=state.step + 1, params=params,
                               model_state=new_model_state or state.model_state,
                               opt_state=opt_state)
    return new_state, {'loss': loss}

  def result(state: GradientState) -> dict:
    return merge_variables(state.params, state.model_state)

  return Method(prepare, update, result, stream)
