"""Teacher-student unlearning: SCRUB and the bad (incompetent) teacher.

scrub (Kurmanji, Triantafillou, Hayes & Triantafillou, NeurIPS 2023,
  arXiv:2302.09880; official code meghdadk/SCRUB): the student starts as the
  original model, the teacher is a frozen copy. Each epoch e = 1..E first (for
  e ≤ max_steps) takes one pass of max-steps over D_f, minimising −KL(teacher
  ‖ student), then one pass of min-steps over D_r, minimising
  γ·CE + α·KL(teacher ‖ student); KL is the RepDistiller `DistillKL` at
  temperature T (batch-mean, scaled by T²). Both phases share one optimizer
  (SGD by default), as in `large_scale_unlearning.ipynb`, whose CIFAR-10
  settings are the defaults (its lr decay at epochs [3, 5, 9] never triggers
  within its 3 epochs, so the rate here is constant).
bad_teacher (Chundawat, Tarun, Mandal & Kankanhalli, AAAI 2023,
  arXiv:2205.08096; official code vikram2000b/bad-teaching-unlearning): the
  student is distilled, on D_f together with a random fraction of D_r, towards
  the original model on retain rows and towards a randomly initialised
  (incompetent) teacher on forget rows: KL(teacher ‖ student) at temperature T,
  averaged over rows and classes (torch `F.kl_div` default 'mean'). The
  incompetent teacher is the task's fresh `init` (the reference's is torch's
  default initialisation of the same architecture).

Both give the driver their own batch schedule (`Method.batches`), one jitted
step per batch: SCRUB's forget pass then retain pass each epoch, in the
order `Context.batches` gives each set, so SCRUB without max-steps is exactly
distillation on a 'retain' stream. (Scanning the whole schedule inside one
update would keep the rows on device, but XLA:CPU runs a convolution's weight
gradient ~10x slower inside a loop.)
"""
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import sharding
from mu_jax.data import concat
from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, gradient_method
from mu_jax.tasks import CLASS_LABELS


def row_kl(student_logits, teacher_logits, temperature: float) -> jax.Array:
  """Per row KL(p_t ‖ p_s) of the softmaxes at temperature T."""
  log_p_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  log_p_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)


def distill_kl(student_logits, teacher_logits, weights, temperature: float) -> jax.Array:
  """RepDistiller DistillKL: Σ_rows w·KL(p_t ‖ p_s) at temperature T, ×T², / Σw."""
  kl = row_kl(student_logits, teacher_logits, temperature)
  return jnp.sum(kl * weights) * temperature ** 2 / jnp.maximum(jnp.sum(weights), 1.0)


def _check_forget(ctx: Context) -> None:
  if len(ctx.forget) == 0:
    raise MuJaxError('The forget set is empty; select at least one example to forget.')


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

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    del rng
    logits, model_state = task.apply(variables, batch, True)
    teacher, _ = task.apply(extra.aux, batch, False)
    maximize = jnp.any(batch['maximize'] > 0)   # a batch is all D_f (max) or all D_r (min)
    kl = distill_kl(logits, teacher, batch['w'], temperature)
    ce = task.mean_loss(logits, batch)
    loss = jnp.where(maximize, -kl, ce_weight * ce + kl_weight * kl)
    return loss, model_state

  inner = gradient_method(loss_fn, stream=Stream('union', epochs, retain_batch_size),
                          learning_rate=learning_rate, optimizer=optimizer,
                          momentum=momentum, weight_decay=weight_decay,
                          make_aux=lambda ctx, variables: variables)

  def batches(ctx: Context, epoch: int) -> Iterator[dict]:
    """A max-step pass over D_f (in the first `max_steps` epochs), then a min-step pass over D_r."""
    _check_forget(ctx)
    passes = [(ctx.forget, forget_batch_size, 1.0)] if epoch < max_steps else []
    for split, size, maximize in passes + [(ctx.retain, retain_batch_size, 0.0)]:
      flag = np.full(len(split), maximize, np.float32)
      yield from ctx.batches_of({**split.arrays(), 'maximize': flag}, size, epoch=epoch)

  return inner._replace(batches=batches, requires=(CLASS_LABELS,))


def incompetent_teacher(ctx: Context) -> dict:
  """A randomly initialised model of the same architecture (the task's own init)."""
  return ctx.task.init(jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 1))


def bad_teacher(*, learning_rate: float = 1e-4,  # official notebook: Adam lr 0.0001
                epochs: int = 1,                 # official notebook: epochs 1
                batch_size: int = 256,           # official notebook: batch_size 256
                temperature: float = 1.0,        # official notebook: KL_temperature 1
                retain_fraction: float = 0.3) -> Method:  # official notebook: 0.3 of retain_train
  """Distils the competent teacher on retain rows and a random teacher on forget rows."""
  if not 0.0 <= retain_fraction <= 1.0:
    raise MuJaxError(f'retain_fraction={retain_fraction} must be in [0, 1].')

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    del rng
    logits, model_state = task.apply(variables, batch, True)
    full, _ = task.apply(extra.aux['full'], batch, False)
    bad, _ = task.apply(extra.aux['bad'], batch, False)
    kl = row_kl(logits, jnp.where(batch['f'][:, None] > 0, bad, full), temperature)
    loss = jnp.sum(kl * batch['w']) / (jnp.maximum(jnp.sum(batch['w']), 1.0) * logits.shape[-1])
    return loss, model_state

  def make_aux(ctx: Context, variables: dict) -> dict:
    return sharding.replicate({'full': variables, 'bad': incompetent_teacher(ctx)}, ctx.mesh)

  inner = gradient_method(loss_fn, stream=Stream('union', epochs, batch_size),
                          learning_rate=learning_rate, optimizer='adam', make_aux=make_aux)

  def batches(ctx: Context, epoch: int) -> Iterator[dict]:
    """D_f and a seeded `retain_fraction` of D_r (the same subset every epoch), shuffled."""
    _check_forget(ctx)
    nr = len(ctx.retain)
    keep = np.random.default_rng(ctx.seed).choice(nr, int(retain_fraction * nr), replace=False)
    flag = np.concatenate([np.ones(len(ctx.forget), np.float32), np.zeros(len(keep), np.float32)])
    rows = concat(ctx.forget, ctx.retain.take(keep)).with_arrays(f=flag)
    yield from ctx.batches_of(rows.arrays(), batch_size, epoch=epoch)

  return inner._replace(batches=batches, requires=(CLASS_LABELS,))
