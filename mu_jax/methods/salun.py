"""SalUn: saliency unlearning (Fan et al., ICLR 2024, arXiv:2310.12508).

Weight saliency is |∇_θ ℓ_f(θ_o)|, the magnitude of the forget-set
loss gradient (the task's loss: cross-entropy for a classifier) at the original model (eval mode, as the official
`generate_mask.py`); the mask keeps the globally top `keep` fraction of all
parameters, exactly ⌊keep·n⌋ of them (ties go to the earlier parameter). Only
those weights are then trained by random-label unlearning: cross-entropy on
D_f relabelled at random (y' ≠ y, or the reference's uniform draw with
`labels='any'`) and on D_r (`baselines.random_label_loss`), a pass over
D_f then one over D_r per epoch as the reference's CIFAR-10 branch
(`order='sequential'`), or both shuffled together (`order='mixed'`, its
CIFAR-100 branch); see `baselines.random_label_batches`.

Frozen weights never move: `gradient_method` chains `optim.keep_trainable`
around the optimizer (frozen gradients zeroed before it, frozen updates after
it), so SGD momentum and weight decay leave them bit-identical. The reference
does the same by other means (Unlearn-Saliency Classification/unlearn/RL.py,
`_apply_mask_to_grads` and `_restore_masked_params`, lines 11-34, 84-90): it
masks the gradient, and after each step writes the masked-out weights back to
their values at the start of the epoch (those of the original model) and zeroes
their momentum, so the two agree on every weight.

Deviation: the reference sums per-batch mean gradients over the forget loader;
the saliency here is the exact mean over D_f by default, which ranks weights
identically unless the last forget batch is partial; `saliency_total='batch_means'`
takes the reference's sum.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import sharding
from mu_jax.errors import MuJaxError
from mu_jax.influence import TaskLossSum, mean_gradient
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.baselines import (BATCH_SIZE, MOMENTUM, WEIGHT_DECAY, random_label_batches,
                                     random_label_loss)
from mu_jax.methods.gradient import gradient_method
from mu_jax.models import split_variables
from mu_jax.tasks import CLASS_LABELS


def _check_keep(keep: float) -> None:
  if not 0.0 < keep <= 1.0:
    raise MuJaxError(f'The saliency fraction keep={keep} must be in (0, 1].')


def top_fraction_mask(scores, keep: float):
  """A bool pytree like `scores` that is True on exactly ⌊keep·n⌋ globally largest scores."""
  _check_keep(keep)
  leaves, treedef = jax.tree.flatten(scores)
  flat = np.concatenate([np.asarray(leaf, np.float32).ravel() for leaf in leaves])
  chosen = np.zeros(flat.size, bool)
  chosen[np.argsort(-flat, kind='stable')[:int(flat.size * keep)]] = True
  splits = np.cumsum([np.size(leaf) for leaf in leaves])[:-1]
  return jax.tree.unflatten(treedef, [part.reshape(np.shape(leaf)) for part, leaf in
                                      zip(np.split(chosen, splits), leaves)])


SALIENCY_SUMS = ('mean', 'batch_means')


def saliency(ctx: Context, variables: dict, batch_size: int, total: str = 'mean'):
  """|∇_θ CE over D_f| at `variables`, eval mode: of the mean over D_f ('mean'), or
  the sum over batches of each batch's mean ('batch_means'), as the reference's
  `generate_mask.py` accumulates `loss.backward()` over its loader (the same
  ranking unless the last batch is partial)."""
  if total not in SALIENCY_SUMS:
    raise MuJaxError(f'Unknown saliency total={total!r}; valid: {", ".join(SALIENCY_SUMS)}.')
  params, model_state = split_variables(variables)
  loss = TaskLossSum(ctx.task)
  batches = ctx.batches('forget', batch_size, shuffle=False)
  if total == 'mean':
    grads = mean_gradient(loss, params, model_state, batches)
  else:
    grads = functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b),
                             (mean_gradient(loss, params, model_state, [b]) for b in batches))
  return jax.tree.map(jnp.abs, grads)


def salun(*, learning_rate: float = 0.013,  # SalUn Classification/README (CIFAR-10, 10%): --unlearn_lr 0.013
          epochs: int = 10,                 # SalUn Classification/README: --unlearn_epochs 10
          keep: float = 0.5,                # SalUn Classification/README: --mask_path mask/with_0.5.pt
          batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
          weight_decay: float = WEIGHT_DECAY,
          order: str = 'sequential',  # RL.py:109-159, the CIFAR-10 branch of the defaults
          labels: str = 'other',  # y' != y; 'any': the reference's draw, RL.py:125
          saliency_total: str = 'mean') -> Method:  # 'batch_means': generate_mask.py's sum
  """Random-label unlearning of the `keep` most salient weights only."""
  _check_keep(keep)
  if saliency_total not in SALIENCY_SUMS:
    raise MuJaxError(f'Unknown saliency total saliency_total={saliency_total!r}; '
                     f'valid: {", ".join(SALIENCY_SUMS)}.')
  batches = random_label_batches(order, batch_size)

  def make_mask(ctx: Context, variables: dict):
    mask = top_fraction_mask(saliency(ctx, variables, batch_size, saliency_total), keep)
    return sharding.replicate(jax.tree.map(jnp.asarray, mask), ctx.mesh)

  return gradient_method(random_label_loss(labels), stream=Stream('union', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay,
                         make_mask=make_mask)._replace(batches=batches,
                                                       requires=(CLASS_LABELS,))
