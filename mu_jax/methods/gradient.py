"""The shared core of gradient-based unlearning: a loss, an optimizer, a stream.

An optional trainable mask (a pytree of booleans like the params) freezes
weights twice over: their gradients are zeroed before the optimizer, and after
it every frozen weight is re-projected onto its previous value, so momentum or
weight decay can never move it (the leak in reference code that masks only
the gradient).
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mu_jax.methods.base import Context, Method, ModelSpec, Stream
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import make_optimizer

# loss_fn(spec, variables, batch, rng) -> (loss, (logits, labels, new_model_state))
LossFn = Callable[[ModelSpec, dict, dict, jax.Array], tuple[jax.Array, tuple]]


class GradientState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  mask: Any      # trainable mask (pytree of bool), or None for all trainable
  rng: jax.Array


def gradient_method(loss_fn: LossFn, *, stream: Stream, learning_rate: float,
                    optimizer: str = 'sgd', momentum: float = 0.9,
                    weight_decay: float = 0.0,
                    make_mask: Callable[[Context, dict], Any] | None = None) -> Method:
  """Builds a Method that takes one optimizer step of `loss_fn` per batch."""
  tx = make_optimizer(optimizer, learning_rate, total_steps=1, momentum=momentum,
                      weight_decay=weight_decay)

  def prepare(ctx: Context, variables: dict) -> GradientState:
    params, model_state = split_variables(jax.tree.map(jnp.copy, variables))
    mask = make_mask(ctx, variables) if make_mask else None
    return GradientState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params),
                         mask, jax.random.PRNGKey(ctx.seed))

  def update(spec: ModelSpec, state: GradientState, batch):
    rng = jax.random.fold_in(state.rng, state.step)

    def objective(params):
      return loss_fn(spec, merge_variables(params, state.model_state), batch, rng)

    (loss, (_, _, new_model_state)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    if state.mask is not None:
      grads = jax.tree.map(lambda g, m: jnp.where(m, g, 0), grads, state.mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if state.mask is not None:
      params = jax.tree.map(jnp.where, state.mask, params, state.params)
    new_state = state._replace(step=state.step + 1, params=params,
                               model_state=new_model_state or state.model_state,
                               opt_state=opt_state)
    return new_state, {'loss': loss}

  def result(state: GradientState) -> dict:
    return merge_variables(state.params, state.model_state)

  return Method(prepare, update, result, stream)
