"""Boundary unlearning (Chen, Gao, Zhou, Ye, Fang & Wang, CVPR 2023,
"Boundary Unlearning"; official code TY-LEE-KR/Boundary-Unlearning-Code).

boundary_shrink: each forget image x is pushed by one FGSM step (ℓ∞ radius
  `bound` in [0, 1] pixel units, clipped to the pixel range and rounded to
  1/255, on a frozen copy of the original model in eval mode); the frozen
  model's prediction on it is the nearest wrong class, and the model is
  fine-tuned with cross-entropy of the clean x towards that label, so the
  forget class's decision space shrinks into its neighbours.
boundary_expand: a shadow class is added (one more head output, initialised
  like the reference's widened Linear: Xavier-normal weights, zero bias), the
  widened model is fine-tuned to put every forget image in the shadow class,
  and the shadow output is pruned: the result has the original architecture.

Images here are standardised per channel, so the pixel range is recovered
from the data: per channel, the lowest and highest standardised value over
D = D_f ∪ D_r stand for pixel values 0 and 1 (exact whenever each channel
attains both extremes somewhere in D, as in MNIST-like sets and CIFAR).

The widened head's shadow logit f(x)·w + c is the directional derivative of
the model's own apply along the head kernel (a tangent whose first column is
w): one forward pass gives the C original logits and f(x)·w, in training or
eval mode alike, for any model whose last layer is the Dense 'head'.
"""
import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import sharding
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, gradient_method
from mu_jax.tasks import CLASS_LABELS, INPUT_RANGE, LINEAR_HEAD

LEARNING_RATE = 1e-5   # official boundary_unlearning.py: SGD lr=0.00001 (both methods)
MOMENTUM = 0.9         # official boundary_unlearning.py: momentum=0.9
EPOCHS = 10            # official: poison_epoch=10 / finetune_epochs=10
BATCH_SIZE = 64        # official main.py: --batch_size 64
SHADOW = 'shadow'      # params key of the shadow class's head column while expanding


def pixel_range(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel lowest and highest standardised value over D: pixel values 0 and 1."""
  axes = (0, 1, 2)
  lo = np.minimum(ctx.forget['x'].min(axis=axes), ctx.retain['x'].min(axis=axes))
  hi = np.maximum(ctx.forget['x'].max(axis=axes), ctx.retain['x'].max(axis=axes))
  return lo.astype(np.float32), hi.astype(np.float32)


def fgsm(task, variables, batch, bound: float, lo, hi) -> jax.Array:
  """One FGSM step of ℓ∞ radius `bound` pixels on batch['x'] (the task's loss),
  clipped to [0, 1] and rounded to 1/255."""
  x = batch['x']

  def loss(inputs):
    outputs, _ = task.apply(variables, {**batch, 'x': inputs}, False)
    return jnp.sum(task.losses(outputs, batch))

  scale = jnp.where(hi > lo, hi - lo, 1.0)
  pixels = (x - lo) / scale + bound * jnp.sign(jax.grad(loss)(x))
  pixels = jnp.round(jnp.clip(pixels, 0.0, 1.0) * 255.0) / 255.0
  return lo + pixels * scale


def boundary_shrink(*, learning_rate: float = LEARNING_RATE, epochs: int = EPOCHS,
                    batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
                    bound: float = 0.1) -> Method:  # official: FGSM bound=0.1
  """Fine-tunes D_f towards the labels its FGSM neighbours get from the frozen original."""

  def make_aux(ctx: Context, variables: dict) -> dict:
    lo, hi = pixel_range(ctx)
    return sharding.replicate({'frozen': variables, 'lo': lo, 'hi': hi}, ctx.mesh)

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    del rng
    aux = extra.aux
    x_adv = fgsm(task, aux['frozen'], batch, bound, aux['lo'], aux['hi'])
    adv_logits, _ = task.apply(aux['frozen'], {**batch, 'x': x_adv}, False)
    nearest = jax.lax.stop_gradient(jnp.argmax(adv_logits, axis=-1))
    logits, model_state = task.apply(variables, batch, True)
    return task.mean_loss(logits, {**batch, 'y': nearest}), model_state

  return gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         make_aux=make_aux)._replace(requires=(CLASS_LABELS, INPUT_RANGE))


def widened_logits(task, variables, batch, train: bool):
  """Logits [N, C+1] of the model whose head has the extra column params[SHADOW]."""
  params = dict(variables['params'])
  shadow = params.pop(SHADOW)
  kernel = params['head']['kernel']

  def with_kernel(k):
    head = {**params['head'], 'kernel': k}
    return task.apply({**variables, 'params': {**params, 'head': head}}, batch, train)

  direction = jnp.zeros_like(kernel).at[:, 0].set(shadow['kernel'][:, 0])
  (logits, model_state), (along, _) = jax.jvp(with_kernel, (kernel,), (direction,))
  return jnp.concatenate([logits, along[:, :1] + shadow['bias']], axis=-1), model_state


def widen(variables: dict, rng: jax.Array) -> dict:
  """Adds the shadow class's head column, drawn as the reference draws it.

  The reference builds a fresh Linear(F, C+1), initialises it with its
  `init_params` (models.py:47-49: `xavier_normal_` weight, zero bias) and
  copies the C trained rows over it (boundary_unlearning.py:111-123), so the
  shadow column is the last column of a Xavier-normal F×(C+1) draw: untruncated
  N(0, 2/(F + C + 1)), bias 0.
  """
  features, classes = variables['params']['head']['kernel'].shape
  xavier_normal = jax.nn.initializers.variance_scaling(1.0, 'fan_avg', 'normal')
  kernel = xavier_normal(rng, (features, classes + 1), jnp.float32)[:, classes:]
  shadow = {'kernel': kernel, 'bias': jnp.zeros((1,), jnp.float32)}
  return {**variables, 'params': {**variables['params'], SHADOW: shadow}}


def prune(variables: dict) -> dict:
  """Drops the shadow column: the original architecture again."""
  params = {k: v for k, v in variables['params'].items() if k != SHADOW}
  return {**variables, 'params': params}


def boundary_expand(*, learning_rate: float = LEARNING_RATE, epochs: int = EPOCHS,
                    batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM) -> Method:
  """Fine-tunes D_f into an extra shadow class, then prunes the shadow output."""

  def loss_fn(task, variables, batch, rng):
    del rng
    logits, model_state = widened_logits(task, variables, batch, True)
    shadow_labels = jnp.full_like(batch['y'], task.num_classes)
    return task.mean_loss(logits, {**batch, 'y': shadow_labels}), model_state

  inner = gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                          learning_rate=learning_rate, momentum=momentum)

  def prepare(ctx: Context, variables: dict):
    rng = jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 2)
    return inner.prepare(ctx, sharding.replicate(widen(variables, rng), ctx.mesh))

  return Method(prepare, inner.update, lambda s: prune(inner.result(s)), inner.stream,
                requires=(CLASS_LABELS, LINEAR_HEAD))
