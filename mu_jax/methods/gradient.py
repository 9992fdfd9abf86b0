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

A loss may return its forget term apart, as `LossTerms(forget, retain)`; the
objective is their sum. Sharpness-aware steps (SAM, Foret et al. 2021,
arXiv:2010.01412) use it: with a radius ρ > 0 and scope 'total' every step
ascends to θ + ρ·g/‖g‖₂ (g the masked gradient of the whole loss at θ, ‖·‖₂
over all parameters), takes the gradient there with the same batch and random
draws, and applies that one at θ; with scope 'forget' (the Unlearn-Smooth
reference's) g is the forget term's gradient and the step applies
∇forget(θ + ρ·g/‖g‖₂) + ∇retain(θ). A loss returned as one number is
perturbed whole under either scope. ρ and the scope are `sam_rho` and
`sam_scope`, or, when `sam_rho` is None, those of an enclosing
`sharpness_aware(ρ, scope)` block, so a wrapper can make any method built on
`gradient_method` sharpness-aware (`mu_jax.methods.smooth`).

Built inside a `lora.low_rank(spec)` block, the method trains low-rank adapters
(`mu_jax.lora`) on the frozen weights instead of the weights themselves: the
state's `params` are the adapters, the loss sees the merged weights, and the
result is the merged model; its report adds the count of trainable numbers.

The learning rate is constant, or (`schedule='linear'`) the Hugging Face
Trainer's linear schedule: warm-up over `warmup_epochs` epochs of the stream,
then linear decay to 0 at the last step (`optim.linear_warmup_decay`). It
scales each step's update, which equals scheduling the rate of SGD, Adam and
AdamW alike: all three are linear in it (AdamW's decoupled decay included).
"""
import contextlib
import contextvars
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mu_jax import lora
from mu_jax.data.batching import num_batches
from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import keep_trainable, linear_warmup_decay, make_optimizer
from mu_jax.tasks import Task

# loss_fn(task, variables, batch, rng[, LossContext]) -> (loss or LossTerms, new_model_state)
LossFn = Callable[..., tuple[Any, dict]]

SAM_SCOPES = ('forget', 'total')
LR_SCHEDULES = ('constant', 'linear')


class LossTerms(NamedTuple):
  """A loss with its forget term apart (the objective is forget + retain), so
  sharpness-aware steps can perturb the forget term alone."""
  forget: jax.Array
  retain: jax.Array


def total_loss(loss) -> jax.Array:
  """The objective a loss stands for: the sum of its terms, or the loss itself."""
  return loss.forget + loss.retain if isinstance(loss, LossTerms) else loss


class GradientState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  mask: Any      # trainable mask (pytree of bool), or None for all trainable
  rng: jax.Array
  aux: Any = None       # make_aux(ctx, variables), or None
  horizon: Any = None   # int32 [warm-up steps, total steps] of a 'linear' schedule, or None
  frozen: Any = None    # with LoRA: the frozen weights the adapters `params` add to


class LossContext(NamedTuple):
  """What a loss built with `make_aux` sees besides its batch."""
  step: jax.Array   # updates taken before this one
  aux: Any


class SharpnessAware(NamedTuple):
  rho: float
  scope: str    # 'forget' or 'total' (SAM_SCOPES)
  built: list   # one entry per gradient_method built inside the block


_SHARPNESS: contextvars.ContextVar[SharpnessAware | None] = contextvars.ContextVar(
    'sharpness_aware', default=None)


@contextlib.contextmanager
def sharpness_aware(rho: float, scope: str = 'total') -> Iterator[SharpnessAware]:
  """Gradient methods built inside this block take SAM steps of radius `rho`
  that perturb the loss's forget term (`scope='forget'`) or its whole (`'total'`).

  Construction-time only: the methods built keep ρ in their closures and stay
  pure. The yielded record's `built` lists how many were built, so a wrapper
  can refuse a method that has no gradient steps.
  """
  check_sam_scope(scope)
  token = _SHARPNESS.set(SharpnessAware(float(rho), scope, []))
  try:
    yield _SHARPNESS.get()
  finally:
    _SHARPNESS.reset(token)


def check_sam_scope(scope: str) -> None:
  if scope not in SAM_SCOPES:
    raise MuJaxError(f'Unknown SAM scope sam_scope={scope!r}; valid: {", ".join(SAM_SCOPES)}.')


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


def step_gradient(objective: Callable, params, mask=None, rho: float | None = None,
                  scope: str = 'total'):
  """((total loss, new model state), gradient) of one step at `params`.

  `objective(params) -> (loss or LossTerms, new model state)`. Plain when ρ is
  None or 0; otherwise the SAM gradient of `scope` (module docstring), masked.
  The model state is the one of the unperturbed pass.
  """
  def total(p):
    loss, model_state = objective(p)
    return total_loss(loss), model_state

  if not rho:
    return jax.value_and_grad(total, has_aux=True)(params)
  if scope == 'total' or not isinstance(jax.eval_shape(objective, params)[0], LossTerms):
    (loss, model_state), grads = jax.value_and_grad(total, has_aux=True)(params)
    whole = lambda p: jax.grad(total, has_aux=True)(p)[0]
    return (loss, model_state), sam_gradient(whole, params, _masked(grads, mask), rho, mask)
  terms, pullback, model_state = jax.vjp(objective, params, has_aux=True)
  one, zero = jnp.ones_like(terms.forget), jnp.zeros_like(terms.retain)
  forget_grads, = pullback(LossTerms(one, zero))
  retain_grads, = pullback(LossTerms(zero, one))
  forget = lambda p: jax.grad(lambda q: objective(q)[0].forget)(p)
  perturbed = sam_gradient(forget, params, _masked(forget_grads, mask), rho, mask)
  grads = jax.tree.map(jnp.add, _masked(retain_grads, mask), perturbed)
  return (total_loss(terms), model_state), grads


def stream_steps(ctx: Context, stream: Stream) -> int:
  """Updates per epoch of `stream` (its last batch padded)."""
  rows = {'forget': len(ctx.forget), 'retain': len(ctx.retain),
          'union': len(ctx.forget) + len(ctx.retain)}[stream.source]
  return num_batches(rows, stream.batch_size)


def gradient_method(loss_fn: LossFn, *, stream: Stream, learning_rate: float,
                    optimizer: str = 'sgd', momentum: float = 0.9,
                    weight_decay: float = 0.0,
                    make_mask: Callable[[Context, dict], Any] | None = None,
                    make_aux: Callable[[Context, dict], Any] | None = None,
                    sam_rho: float | None = None, sam_scope: str = 'total',
                    schedule: str = 'constant', warmup_epochs: int = 0,
                    decay_mask=None) -> Method:
  """Builds a Method that takes one optimizer step of `loss_fn` per batch.

  `decay_mask` limits weight decay (`optim.make_optimizer`); `schedule` and
  `warmup_epochs` set the learning-rate schedule (module docstring).
  """
  if schedule not in LR_SCHEDULES:
    raise MuJaxError(f'Unknown learning-rate schedule schedule={schedule!r}; '
                     f'valid: {", ".join(LR_SCHEDULES)}.')
  if warmup_epochs < 0:
    raise MuJaxError(f'warmup_epochs={warmup_epochs} must be ≥ 0.')
  check_sam_scope(sam_scope)
  tx = optax.chain(keep_trainable(),
                   make_optimizer(optimizer, learning_rate, total_steps=1, momentum=momentum,
                                  weight_decay=weight_decay, decay_mask=decay_mask),
                   keep_trainable())
  adapters = lora.building(masked=make_mask is not None)
  enclosing = _SHARPNESS.get()
  if enclosing is not None:
    enclosing.built.append(loss_fn)
    if sam_rho is None:
      sam_rho, sam_scope = enclosing.rho, enclosing.scope

  def prepare(ctx: Context, variables: dict) -> GradientState:
    params, model_state = split_variables(jax.tree.map(jnp.copy, variables))
    frozen = None
    if adapters:
      frozen, params = lora.INITS[adapters.init](ctx, variables, adapters,
                                                 jax.random.PRNGKey(ctx.seed))
    mask = make_mask(ctx, variables) if make_mask else None
    aux = make_aux(ctx, variables) if make_aux else None
    horizon = None
    if schedule == 'linear':
      steps = stream_steps(ctx, stream)
      horizon = jnp.array([warmup_epochs * steps, stream.epochs * steps], jnp.int32)
    return GradientState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params),
                         mask, jax.random.PRNGKey(ctx.seed), aux, horizon, frozen)

  def weights(state: GradientState, params):
    """The model's params: `params`, or the frozen ones with the adapters `params` merged."""
    return lora.merge(state.frozen, params, adapters.scale) if adapters else params

  def update(task: Task, state: GradientState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    extra = (LossContext(state.step, state.aux),) if make_aux else ()

    def objective(params):
      return loss_fn(task, merge_variables(weights(state, params), state.model_state), batch,
                     rng, *extra)

    (loss, new_model_state), grads = step_gradient(objective, state.params, state.mask,
                                                   sam_rho, sam_scope)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, mask=state.mask)
    if state.horizon is not None:
      factor = linear_warmup_decay(state.step, state.horizon[0], state.horizon[1])
      updates = jax.tree.map(lambda u: (factor * u).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    new_state = state._replace(step=state.step + 1, params=params,
                               model_state=new_model_state or state.model_state,
                               opt_state=opt_state)
    return new_state, {'loss': loss}

  def result(state: GradientState) -> dict:
    return merge_variables(weights(state, state.params), state.model_state)

  report = (lambda state: {'trainable': lora.count(state.params)}) if adapters else None
  return Method(prepare, update, result, stream, report=report)
