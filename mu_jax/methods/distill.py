"""Teacher-student unlearning: SCRUB and the bad (incompetent) teacher.

scrub (Kurmanji, Triantafillou, Hayes & Triantafillou, NeurIPS 2023,
  arXiv:2302.09880; official code meghdadk/SCRUB): the student starts as the
  original model, the teacher is a frozen copy. Each epoch e = 1..E first (for
  e ≤ max_steps) takes one pass of max-steps over D_f, minimising −KL(teacher
  ‖ student), then one pass of min-steps over D_r, minimising
  γ·CE + α·KL(teacher ‖ student); KL is the RepDistiller `DistillKL` at
  temperature T (batch-mean, scaled by T²). Both phases share one optimizer
  (SGD by default), as in `large_scale_unlearning.ipynb`, whose CIFAR-10 settings
  are the defaults (its lr decay at epochs [3, 5, 9] never triggers within
  its 3 epochs, so the rate here is constant).
bad_teacher (Chundawat, Tarun, Mandal & Kankanhalli, AAAI 2023,
  arXiv:2205.08096; official code vikram2000b/bad-teaching-unlearning): the
  student is distilled, on D_f together with a random fraction of D_r, towards
  the original model on retain rows and towards a randomly initialised
  (incompetent) teacher on forget rows: KL(teacher ‖ student) at temperature T,
  averaged over rows and classes (torch `F.kl_div` default 'mean'). The
  incompetent teacher gets Flax's default initializers (the reference's is
  torch's default initialisation of the same architecture).

Both run their whole schedule in one `update` (stream 'none'): the rows live
on device in the state and every pass is a `lax.scan` of `gradient_method`'s
update over a seeded batch schedule. The schedule's order and padding are
those of `Context.batches`, so a SCRUB pass over D_r visits the batches a
'retain' stream would.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import ensembles, sharding
from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, ModelSpec, Stream
from mu_jax.methods.dmm import schedule
from mu_jax.methods.gradient import GradientState, LossContext, gradient_method
from mu_jax.optim import weighted_cross_entropy


def distill_kl(student_logits, teacher_logits, weights, temperature: float) -> jax.Array:
  """RepDistiller DistillKL: Σ_rows w·KL(p_t ‖ p_s) at temperature T, ×T², / Σw."""
  log_p_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
  return jnp.sum(kl * weights) * temperature ** 2 / jnp.maximum(jnp.sum(weights), 1.0)


class Pass(NamedTuple):
  """Rows on device and their schedule: row indices [epochs, steps, batch], 0-weight padding."""
  rows: dict
  order: jax.Array
  weight: jax.Array

  def epoch(self, e: int) -> 'Pass':
    return self._replace(order=self.order[e], weight=self.weight[e])

  def all_epochs(self) -> 'Pass':
    batch = self.order.shape[-1]
    return self._replace(order=self.order.reshape(-1, batch),
                         weight=self.weight.reshape(-1, batch))


def run_pass(update, spec: ModelSpec, inner: GradientState, p: Pass, **extra):
  """Applies `update` to every batch of a one-epoch (or flattened) pass; `extra` joins each batch."""

  def step(state, idx_w):
    idx, w = idx_w
    batch = {k: v[idx] for k, v in p.rows.items()}
    state, stats = update(spec, state, {**batch, **extra, 'w': w})
    return state, stats['loss']

  return jax.lax.scan(step, inner, (p.order, p.weight))


def make_pass(ctx: Context, rows: dict, batch_size: int, epochs: int, seed: int) -> Pass:
  """`epochs` shuffled, padded passes over host `rows`, placed on the mesh."""
  order, weight = schedule(len(rows['y']), batch_size, epochs, seed)
  return sharding.replicate(Pass({k: jnp.asarray(v) for k, v in rows.items()},
                                 order.reshape(epochs, -1, batch_size),
                                 weight.reshape(epochs, -1, batch_size)), ctx.mesh)


def _check_rows(ctx: Context) -> None:
  if len(ctx.forget.y) == 0:
    raise MuJaxError('The forget set is empty; select at least one example to forget.')


class ScrubState(NamedTuple):
  inner: GradientState
  forget: Pass      # order [max epochs, steps, batch]
  retain: Pass      # order [epochs, steps, batch]
  max_losses: Any   # [max epochs, steps] −KL per max-step (zeros before update)
  min_losses: Any   # [epochs, steps]


def scrub(*, learning_rate: float = 5e-4,   # official notebook: sgda_learning_rate 0.0005
          epochs: int = 3,                  # official notebook: sgda_epochs 3
          max_steps: int = 2,               # official notebook: msteps 2
          temperature: float = 4.0,         # official notebook: kd_T 4
          ce_weight: float = 0.99,          # official notebook: gamma 0.99
          kl_weight: float = 0.001,         # official notebook: alpha 0.001
          forget_batch_size: int = 512,     # official notebook: forget_loader batch_size 512
          retain_batch_size: int = 256,     # official notebook: retain_loader batch_size 256
          optimizer: str = 'sgd',           # official notebook: optim 'sgd' ('adam' in its small-scale one)
          momentum: float = 0.9,            # official notebook: sgda_momentum 0.9
          weight_decay: float = 5e-4) -> Method:  # official notebook: sgda_weight_decay 5e-4
  """Alternating max-steps on D_f and min-steps on D_r against a frozen teacher."""
  if max_steps < 0 or epochs < 1:
    raise MuJaxError(f'SCRUB needs epochs ≥ 1 and max_steps ≥ 0, got {epochs} and {max_steps}.')
  max_epochs = min(max_steps, epochs)

  def loss_fn(spec, variables, batch, rng, extra: LossContext):
    del rng
    logits, model_state = spec.apply_fn(variables, batch['x'], True)
    teacher, _ = spec.apply_fn(extra.aux, batch['x'], False)
    kl = distill_kl(logits, teacher, batch['w'], temperature)
    ce = weighted_cross_entropy(logits, batch['y'], batch['w'])
    loss = jnp.where(batch['maximize'], -kl, ce_weight * ce + kl_weight * kl)
    return loss, (logits, batch['y'], model_state)

  inner = gradient_method(loss_fn, stream=Stream('none'), learning_rate=learning_rate,
                          optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                          make_aux=lambda ctx, variables: variables)

  def prepare(ctx: Context, variables: dict) -> ScrubState:
    _check_rows(ctx)
    forget = make_pass(ctx, ctx.arrays('forget'), forget_batch_size, max(max_epochs, 1),
                       ctx.seed)
    retain = make_pass(ctx, ctx.arrays('retain'), retain_batch_size, epochs, ctx.seed)
    return ScrubState(inner.prepare(ctx, variables), forget, retain,
                      jnp.zeros(forget.order.shape[:2]), jnp.zeros(retain.order.shape[:2]))

  def update(spec: ModelSpec, state: ScrubState, batch):
    del batch   # stream 'none': the rows live in the state
    inner_state, max_losses, min_losses = state.inner, [], []
    for e in range(epochs):
      if e < max_epochs:
        inner_state, losses = run_pass(inner.update, spec, inner_state, state.forget.epoch(e),
                                       maximize=True)
        max_losses.append(losses)
      inner_state, losses = run_pass(inner.update, spec, inner_state, state.retain.epoch(e),
                                     maximize=False)
      min_losses.append(losses)
    new = state._replace(inner=inner_state, min_losses=jnp.stack(min_losses))
    if max_losses:
      new = new._replace(max_losses=jnp.stack(max_losses))
    return new, {'loss': jnp.mean(new.min_losses)}

  def report(state: ScrubState) -> dict:
    return {'min_loss_last_epoch': jnp.mean(state.min_losses[-1])}

  return Method(prepare, update, lambda s: inner.result(s.inner), Stream('none'),
                report=report)


class BadTeacherState(NamedTuple):
  inner: GradientState
  rows: Pass        # order [epochs, steps, batch] over D_f and the retain subset
  losses: Any       # [epochs, steps]


def incompetent_teacher(ctx: Context, variables: dict) -> dict:
  """A randomly initialised model of the same architecture (Flax default initializers)."""
  model = ensembles.flax_default_model(ctx.spec.apply_fn, jax.device_get(variables))
  return model.init(jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 1), None)


def bad_teacher(*, learning_rate: float = 1e-4,  # official notebook: Adam lr 0.0001
                epochs: int = 1,                 # official notebook: epochs 1
                batch_size: int = 256,           # official notebook: batch_size 256
                temperature: float = 1.0,        # official notebook: KL_temperature 1
                retain_fraction: float = 0.3) -> Method:  # official notebook: 0.3 of retain_train
  """Distils the competent teacher on retain rows and a random teacher on forget rows."""
  if not 0.0 <= retain_fraction <= 1.0:
    raise MuJaxError(f'retain_fraction={retain_fraction} must be in [0, 1].')

  def loss_fn(spec, variables, batch, rng, extra: LossContext):
    del rng
    logits, model_state = spec.apply_fn(variables, batch['x'], True)
    full, _ = spec.apply_fn(extra.aux['full'], batch['x'], False)
    bad, _ = spec.apply_fn(extra.aux['bad'], batch['x'], False)
    teacher_logits = jnp.where(batch['f'][:, None] > 0, bad, full)
    log_p_s = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    log_p_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)   # over classes
    loss = jnp.sum(kl * batch['w']) / (jnp.maximum(jnp.sum(batch['w']), 1.0) * logits.shape[-1])
    return loss, (logits, batch['y'], model_state)

  def make_aux(ctx: Context, variables: dict) -> dict:
    return sharding.replicate({'full': variables,
                               'bad': incompetent_teacher(ctx, variables)}, ctx.mesh)

  inner = gradient_method(loss_fn, stream=Stream('none'), learning_rate=learning_rate,
                          optimizer='adam', make_aux=make_aux)

  def prepare(ctx: Context, variables: dict) -> BadTeacherState:
    _check_rows(ctx)
    nr = len(ctx.retain.y)
    keep = np.random.default_rng(ctx.seed).choice(nr, int(retain_fraction * nr), replace=False)
    rows = {'x': np.concatenate([ctx.forget.x, ctx.retain.x[keep]]),
            'y': np.concatenate([ctx.forget.y, ctx.retain.y[keep]]),
            'f': np.concatenate([np.ones(len(ctx.forget.y), np.float32),
                                 np.zeros(len(keep), np.float32)])}
    p = make_pass(ctx, rows, batch_size, epochs, ctx.seed)
    return BadTeacherState(inner.prepare(ctx, variables), p, jnp.zeros(p.order.shape[:2]))

  def update(spec: ModelSpec, state: BadTeacherState, batch):
    del batch
    inner_state, losses = run_pass(inner.update, spec, state.inner, state.rows.all_epochs())
    return (state._replace(inner=inner_state, losses=losses.reshape(state.losses.shape)),
            {'loss': jnp.mean(losses)})

  return Method(prepare, update, lambda s: inner.result(s.inner), Stream('none'))
