"""Influence Approximation Unlearning (IAU; Liu, Wu, Lian & Chen, "Efficient
Machine Unlearning via Influence Approximation").

Unlearning is one Adam step, from a fresh optimizer state, on
g = ∇L(D_r) − ∇L(D_f), each a full-set mean cross-entropy gradient (the
official `IAU_unlearn.py` back-propagates the mean loss of D_r and minus that
of D_f, each as one full-set batch, then calls `optimizer.step()` once).
Here each mean is accumulated over weighted batches, which gives the same
value for any batch size. Gradients are taken in eval mode (BatchNorm running
statistics, left untouched): the official CNN has no BatchNorm, and a
full-set train-mode batch is not available under mini-batching.

Training-time gradient restriction (the paper's GR loss,
ℓ + α·Σ_tensors ‖∇_θ ℓ‖₂, official `train_model.py` with model_fix_flag=1)
makes models easier to unlearn this way: `make_restricted_train_step` is a
drop-in replacement for `mu_jax.train.make_train_step`.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mu_jax.influence import CrossEntropySum, mean_gradient
from mu_jax.methods.base import Context, Method, ModelSpec, Stream
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import batch_stats, weighted_cross_entropy
from mu_jax.train import TrainState

LEARNING_RATE = 1e-3   # official utility/parser.py --lr 0.001, IAU_unlearn.py's Adam
GR_ALPHA = 0.005       # official README: train_model.py --model_fix_flag=1 --alpha=0.005


class IAUState(NamedTuple):
  params: Any
  model_state: Any
  direction: Any   # g = ∇L(D_r) − ∇L(D_f)


def iau(*, learning_rate: float = LEARNING_RATE,
        batch_size: int = 256) -> Method:   # only sets memory use: the means are exact
  """One fresh-state Adam step on ∇L(D_r) − ∇L(D_f)."""
  tx = optax.adam(learning_rate)   # torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8

  def prepare(ctx: Context, variables: dict) -> IAUState:
    params, model_state = split_variables(variables)
    loss = CrossEntropySum(ctx.spec)
    g_r = mean_gradient(loss, params, model_state,
                        ctx.batches('retain', batch_size, shuffle=False))
    g_f = mean_gradient(loss, params, model_state,
                        ctx.batches('forget', batch_size, shuffle=False))
    return IAUState(params, model_state, jax.tree.map(jnp.subtract, g_r, g_f))

  def update(spec: ModelSpec, state: IAUState, batch):
    del spec, batch
    updates, _ = tx.update(state.direction, tx.init(state.params), state.params)
    return state._replace(params=optax.apply_updates(state.params, updates)), {}

  def result(state: IAUState) -> dict:
    return merge_variables(state.params, state.model_state)

  return Method(prepare, update, result, Stream('none'))


def gradient_norm_sum(grads) -> jax.Array:
  """Σ over parameter tensors of ‖∇‖₂ (each tensor's Frobenius norm)."""
  return sum(jnp.sqrt(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads))


def make_restricted_train_step(apply_fn: Callable, tx: optax.GradientTransformation,
                               alpha: float = GR_ALPHA):
  """`mu_jax.train.make_train_step` with the GR loss ℓ + α·Σ_tensors ‖∇_θ ℓ‖₂.

  ℓ is the batch's weighted mean cross-entropy in train mode; the penalty is
  differentiated through (double backprop). The returned stats are those of
  ℓ alone, so training logs stay comparable with unrestricted training.
  """
  def step(state: TrainState, batch):
    def base_loss(params):
      logits, new_model_state = apply_fn(
          merge_variables(params, state.model_state), batch['x'], True)
      return weighted_cross_entropy(logits, batch['y'], batch['w']), (logits, new_model_state)

    def restricted_loss(params):
      (loss, aux), grads = jax.value_and_grad(base_loss, has_aux=True)(params)
      return loss + alpha * gradient_norm_sum(grads), (loss, aux)

    (_, (loss, (logits, new_model_state))), grads = jax.value_and_grad(
        restricted_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = new_model_state or state.model_state
    new_state = TrainState(state.step + 1, params, model_state, opt_state)
    return new_state, batch_stats(logits, batch['y'], batch['w'], loss)

  return step
