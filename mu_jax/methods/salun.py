"""SalUn: saliency unlearning (Fan et al., ICLR 2024, arXiv:2310.12508).

Weight saliency is |∇_θ ℓ_f(θ_o)|, the magnitude of the forget-set
loss gradient (the task's loss: cross-entropy for a classifier) at the original model (eval mode, as the official
`generate_mask.py`); the mask keeps the globally top `keep` fraction of all
parameters, exactly ⌊keep·n⌋ of them (ties go to the earlier parameter). Only
those weights are then trained by random-label unlearning: cross-entropy on
D_r together with D_f relabelled y' ≠ y (`baselines.random_label_loss`, the
union stream, as the reference's CIFAR-100 branch that concatenates both sets).

Frozen weights never move: `gradient_method` chains `optim.keep_trainable`
around the optimizer (frozen gradients zeroed before it, frozen updates after
it), so SGD momentum and weight decay (which the reference applies to
masked-out weights, `param.grad *= mask` only) leave them bit-identical.

Deviation: the reference sums per-batch mean gradients over the forget loader;
the saliency here is the exact mean over D_f, which ranks weights identically
unless the last forget batch is partial.
"""
import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import sharding
from mu_jax.errors import MuJaxError
from mu_jax.influence import TaskLossSum, mean_gradient
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.baselines import BATCH_SIZE, MOMENTUM, WEIGHT_DECAY, random_label_loss
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


def saliency(ctx: Context, variables: dict, batch_size: int):
  """|∇_θ mean CE over D_f| at `variables`, eval mode."""
  params, model_state = split_variables(variables)
  grads = mean_gradient(TaskLossSum(ctx.task), params, model_state,
                        ctx.batches('forget', batch_size, shuffle=False))
  return jax.tree.map(jnp.abs, grads)


def salun(*, learning_rate: float = 0.013,  # SalUn Classification/README (CIFAR-10, 10%): --unlearn_lr 0.013
          epochs: int = 10,                 # SalUn Classification/README: --unlearn_epochs 10
          keep: float = 0.5,                # SalUn Classification/README: --mask_path mask/with_0.5.pt
          batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
          weight_decay: float = WEIGHT_DECAY) -> Method:
  """Random-label unlearning of the `keep` most salient weights only."""
  _check_keep(keep)

  def make_mask(ctx: Context, variables: dict):
    mask = top_fraction_mask(saliency(ctx, variables, batch_size), keep)
    return sharding.replicate(jax.tree.map(jnp.asarray, mask), ctx.mesh)

  return gradient_method(random_label_loss, stream=Stream('union', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay,
                         make_mask=make_mask)._replace(requires=(CLASS_LABELS,))
