"""Optimizers shared by training and iterative unlearning, and the gradient-norm penalty."""
import jax
import jax.numpy as jnp
import optax

from mu_jax.errors import MuJaxError

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'linear')


def make_optimizer(name: str, learning_rate: float, *, total_steps: int,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   schedule: str = 'constant', warmup_steps: int = 0,
                   decay_mask=None) -> optax.GradientTransformation:
  """Builds an optax optimizer.

  'sgd' applies weight decay as an L2 term before momentum and 'adam' likewise
  (PyTorch's coupled `weight_decay`, which the unlearning reference code
  uses); 'adamw' decays decoupled from the gradient. Schedules: 'constant',
  'cosine' (to 0 at `total_steps`) and 'linear' (the Hugging Face Trainer's
  default: linear warm-up over `warmup_steps`, then linear decay to 0, see
  `linear_warmup_decay`; TOFU fine-tunes with it). `decay_mask` (a pytree of
  booleans like the params, or a function of the params giving one, e.g.
  `decayed_weights`) limits the decay to the True leaves; None decays all.
  """
  if schedule == 'constant':
    lr = learning_rate
  elif schedule == 'cosine':
    lr = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  elif schedule == 'linear':
    lr = lambda step: learning_rate * linear_warmup_decay(step, warmup_steps, total_steps)
  else:
    raise MuJaxError(f'Unknown schedule {schedule!r}; valid: {", ".join(SCHEDULES)}.')
  l2 = [optax.add_decayed_weights(weight_decay, mask=decay_mask)] if weight_decay else []
  if name == 'sgd':
    return optax.chain(*l2, optax.sgd(lr, momentum=momentum or None))
  if name == 'adam':
    return optax.chain(*l2, optax.adam(lr))
  if name == 'adamw':
    return optax.adamw(lr, weight_decay=weight_decay, mask=decay_mask)
  raise MuJaxError(f'Unknown optimizer {name!r}; valid: {", ".join(OPTIMIZERS)}.')


def decayed_weights(params):
  """True on the leaves weight decay applies to: all but biases and normalisation scales.

  The Hugging Face Trainer's grouping (`Trainer.get_decay_parameter_names`:
  no decay for parameters of `ALL_LAYERNORM_LAYERS` or named "bias"); Flax
  names every bias 'bias' and every normalisation weight (LayerNorm, RMSNorm,
  BatchNorm) 'scale'.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) not in ('bias', 'scale'), params)


def linear_warmup_decay(step, warmup_steps, total_steps):
  """The learning-rate factor of the Hugging Face 'linear' schedule at optimizer step `step`.

  From 0 it rises linearly to 1 over `warmup_steps`, then falls linearly to 0
  at `total_steps` (transformers `optimization.py`,
  `_get_linear_schedule_with_warmup_lr_lambda`, max(1, ·) denominators
  included): the first step has factor 0.
  """
  step = jnp.asarray(step, jnp.float32)
  warmup = jnp.asarray(warmup_steps, jnp.float32)
  total = jnp.asarray(total_steps, jnp.float32)
  rising = step / jnp.maximum(1.0, warmup)
  falling = jnp.maximum(0.0, (total - step) / jnp.maximum(1.0, total - warmup))
  return jnp.where(step < warmup, rising, falling)


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
