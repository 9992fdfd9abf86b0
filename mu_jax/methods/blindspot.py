"""Blindspot unlearning (Tarun, Chundawat, Mandal & Kankanhalli, "Deep Regression
Unlearning", ICML 2023, arXiv:2210.08196; official code ayu987/deep-regression-unlearning).

A blind-spot model of the same architecture is trained from a fresh
initialisation on D_r for a few epochs only, so it has never seen D_f and is
only partly fit. The original model is then trained on shuffled batches of
D_f ∪ D_r (the union stream, flag 'f' on forget rows) to minimise, per batch
with forget fraction c = n_f / n (official `unlearn.py`):

  L = c·[ mean_{D_f} d(f(x), g(x)) + β·Σ_l mean_{D_f, positions} (Q_l^f(x) − Q_l^g(x))² ]
      + (1 − c)·mean_{D_r} ℓ(f(x), y)

with g the frozen blind spot (eval mode), d the output distance, ℓ the
task's per-example loss, and Q_l(x) = normalise(mean_channels(a_l(x)²)) the
attention map of layer l (p = 2, channel mean, L2-normalised per example,
`unlearn.py:attention`). A dense layer's map is a single number that
normalises to 1, so its term vanishes, as in the reference; it is active for
convolutional blocks.

Deviations, on purpose: the layers tapped are the direct sub-modules of the
model's backbone (`Model.activations`: the CNN's conv-ReLU-pool blocks,
ResNet-18's stem convolution, stem BatchNorm and blocks; the reference taps
each conv-BN-ReLU block's output), and channels are the last axis (NHWC).
The reference's output distance is the task's training loss (L1 for AgeDB,
MSE for STS-B); here `distance` picks 'mse' (default, the regression task's
loss) or 'l1'.
"""
import jax
import jax.numpy as jnp
import ml_collections

from mu_jax import sharding
from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, gradient_method
from mu_jax.train import train_model

ATTENTION_WEIGHT = 50.0   # official unlearn.py: forget_loss(..., AT_beta=50)
LEARNING_RATE = 1e-3      # official AgeDB/STS-B notebooks: lr = 0.001 (Adam, unlearn.py:87)
EPOCHS = 1                # official AgeDB notebook: epochs = 1 (STS-B: 5)
BATCH_SIZE = 256          # official notebooks: batch_size = 256
BLINDSPOT_EPOCHS = 2      # official AgeDB notebook: blind spot trained 2 epochs (STS-B: 10)
BLINDSPOT_LEARNING_RATE = 1e-2   # official utils.py: fit_one_cycle(..., lr=0.01), Adam
DISTANCES = ('mse', 'l1')


def attention(a: jax.Array) -> jax.Array:
  """[N, positions]: mean over channels (last axis) of a², L2-normalised per example."""
  a = a.astype(jnp.float32)
  m = jnp.mean(jnp.square(a), axis=-1).reshape(a.shape[0], -1)
  return m / jnp.maximum(jnp.linalg.norm(m, axis=-1, keepdims=True), 1e-12)   # F.normalize eps


def attention_distance(a_f: jax.Array, a_g: jax.Array) -> jax.Array:
  """Per example [N]: mean over positions of (Q(a_f) − Q(a_g))²."""
  return jnp.mean(jnp.square(attention(a_f) - attention(a_g)), axis=-1)


def _output_distance(kind: str, out_f, out_g) -> jax.Array:
  diff = (out_f - out_g).astype(jnp.float32).reshape(out_f.shape[0], -1)
  return jnp.mean(jnp.abs(diff) if kind == 'l1' else jnp.square(diff), axis=-1)


def blindspot_loss(task, variables, batch, blind: dict, *, distance: str,
                   attention_weight: float):
  """The loss above on a union batch ('f' = 1 on forget rows, 'w' = 0 on padding)."""
  outputs, model_state, taps = task.activations(variables, batch, True)
  g_out, _, g_taps = task.activations(blind, batch, False)
  g_out, g_taps = jax.lax.stop_gradient((g_out, g_taps))
  w, forget = batch['w'], batch['w'] * batch['f']
  retain = w - forget
  n_f, n = jnp.sum(forget), jnp.maximum(jnp.sum(w), 1.0)
  per_row = _output_distance(distance, outputs, g_out)
  per_row += attention_weight * sum(attention_distance(a, b) for a, b in zip(taps, g_taps))
  forget_term = jnp.sum(per_row * forget) / jnp.maximum(n_f, 1.0)
  retain_term = jnp.sum(task.losses(outputs, batch) * retain) / jnp.maximum(jnp.sum(retain), 1.0)
  c = n_f / n
  return c * forget_term + (1.0 - c) * retain_term, model_state


def train_blindspot(ctx: Context, *, epochs: int, learning_rate: float,
                    batch_size: int) -> dict:
  """A fresh model (the task's init, seed ctx.seed + 1) trained on D_r for `epochs` with Adam."""
  recipe = ml_collections.ConfigDict(dict(
      optimizer='adam', learning_rate=learning_rate, momentum=0.9, weight_decay=0.0,
      schedule='constant', batch_size=batch_size, epochs=epochs, checkpoint_every=epochs))
  return train_model(ctx.task, recipe, ctx.retain, seed=ctx.seed + 1, mesh=ctx.mesh,
                     name='blind-spot model').variables


def blindspot(*, learning_rate: float = LEARNING_RATE, epochs: int = EPOCHS,
              batch_size: int = BATCH_SIZE,
              attention_weight: float = ATTENTION_WEIGHT,
              distance: str = 'mse',          # official STS-B notebook: MSE (AgeDB: L1)
              blindspot_epochs: int = BLINDSPOT_EPOCHS,
              blindspot_learning_rate: float = BLINDSPOT_LEARNING_RATE) -> Method:
  """Aligns D_f's outputs and attention maps with a partly trained blind-spot model."""
  if distance not in DISTANCES:
    raise MuJaxError(f'Unknown blindspot distance {distance!r}; valid: {", ".join(DISTANCES)}.')
  if blindspot_epochs < 1 or epochs < 1:
    raise MuJaxError(f'blindspot needs epochs >= 1 and blindspot_epochs >= 1, got {epochs} '
                     f'and {blindspot_epochs}.')

  def make_aux(ctx: Context, variables: dict) -> dict:
    del variables
    blind = train_blindspot(ctx, epochs=blindspot_epochs, learning_rate=blindspot_learning_rate,
                            batch_size=batch_size)
    return sharding.replicate(blind, ctx.mesh)

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    del rng
    return blindspot_loss(task, variables, batch, extra.aux, distance=distance,
                          attention_weight=attention_weight)

  return gradient_method(loss_fn, stream=Stream('union', epochs, batch_size),
                         learning_rate=learning_rate, optimizer='adam', make_aux=make_aux)
