"""Influence Approximation Unlearning (IAU; Liu, Wu, Lian & Chen, "Efficient
Machine Unlearning via Influence Approximation").

Unlearning is one Adam step, from a fresh optimizer state, on
g = ∇L(D_r) − ∇L(D_f), each a full-set mean loss gradient (cross-entropy for
a classifier, the task's loss in general; the
official `IAU_unlearn.py` back-propagates the mean loss of D_r and minus that
of D_f, each as one full-set batch, then calls `optimizer.step()` once).
Here each mean is accumulated over weighted batches, which gives the same
value for any batch size. Gradients are taken in eval mode (BatchNorm running
statistics, left untouched): the official CNN has no BatchNorm, and a
full-set train-mode batch is not available under mini-batching.

Training-time gradient restriction (the paper's GR loss,
ℓ + α·Σ_tensors ‖∇_θ ℓ‖₂, official `train_model.py` with model_fix_flag=1)
makes models easier to unlearn this way: it is the training recipe's
`gradient_restriction` option (`mu_jax.train.make_train_step`), α = GR_ALPHA
for an "IAU-ready" model.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mu_jax.influence import TaskLossSum, mean_gradient
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.models import merge_variables, split_variables

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
    loss = TaskLossSum(ctx.task)
    g_r = mean_gradient(loss, params, model_state,
                        ctx.batches('retain', batch_size, shuffle=False))
    g_f = mean_gradient(loss, params, model_state,
                        ctx.batches('forget', batch_size, shuffle=False))
    return IAUState(params, model_state, jax.tree.map(jnp.subtract, g_r, g_f))

  def update(task, state: IAUState, batch):
    del task, batch
    updates, _ = tx.update(state.direction, tx.init(state.params), state.params)
    return state._replace(params=optax.apply_updates(state.params, updates)), {}

  def result(state: IAUState) -> dict:
    return merge_variables(state.params, state.model_state)

  return Method(prepare, update, result, Stream('none'))
