"""Optimizers shared by training and iterative unlearning, and the gradient-norm penalty."""
import jax
import jax.numpy as jnp
import optax

from mu_jax.errors import MuJaxError

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine')


def make_optimizer(name: str, learning_rate: float, *, total_steps: int,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   schedule: str = 'constant') -> optax.GradientTransformation:
  """Builds an optax optimizer.

  'sgd' applies weight decay as an L2 term before momentum and 'adam' likewise
  (PyTorch's coupled `weight_decay`, which the unlearning reference code
  uses); 'adamw' decays decoupled from the gradient.
  """
  if schedule == 'constant':
    lr = learning_rate
  elif schedule == 'cosine':
    lr = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  else:
    raise MuJaxError(f'Unknown schedule {schedule!r}; valid: {", ".join(SCHEDULES)}.')
  l2 = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
  if name == 'sgd':
    return optax.chain(*l2, optax.sgd(lr, momentum=momentum or None))
  if name == 'adam':
    return optax.chain(*l2, optax.adam(lr))
  if name == 'adamw':
    return optax.adamw(lr, weight_decay=weight_decay)
  raise MuJaxError(f'Unknown optimizer {name!r}; valid: {", ".join(OPTIMIZERS)}.')


def keep_trainable() -> optax.GradientTransformationExtraArgs:
  """Zeros the updates of frozen weights, element by element.

  Takes the extra argument `mask` (a pytree of booleans like the params, True
  = trainable; None = all trainable), so a mask computed at run time (SalUn's
  saliency) lives in the method's state. Chained before an optimizer it
  zeroes frozen gradients; chained after, it zeroes what momentum or weight
  decay would still add, so frozen weights never move.
  """

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, *, mask=None, **extra_args):
    del params, extra_args
    if mask is None:
      return updates, state
    return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, mask), state

  return optax.GradientTransformationExtraArgs(init, update)


def gradient_norm_sum(grads) -> jax.Array:
  """Σ over parameter tensors of ‖∇‖₂ (each tensor's Frobenius norm)."""
  return sum(jnp.sqrt(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads))
