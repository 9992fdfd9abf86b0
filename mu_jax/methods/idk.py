"""Unlearning towards refusals: IDK+DPO, IDK+NLL (TOFU) and FLAT (loss adjustment).

Each forget row x → y carries an alternate: the same question answered with a
refusal ('xa', 'ma'; `mu_jax.experiments.lm.data`, TOFU's "I don't know"
answers). With log π(·) = −`Task.sequence_nll` (summed over the answer's
tokens, as open-unlearning's `compute_batch_nll`):

  idk_dpo  γ · (−2/β) mean logσ(β·[(log π_θ(a) − log π_ref(a)) − (log π_θ(y) − log π_ref(y))])
           + α · NLL(D_r)                         open-unlearning trainer/unlearn/dpo.py:13-32,
                                                  trainer/utils.py:47-67 (compute_dpo_loss)
  idk_nll  γ · NLL(refusals) + α · NLL(D_r)       TOFU's "idk" loss (dataloader.py:134-145)
                                                  with open-unlearning's separate weights
  flat     −g*(P̄(a)) + f*(g*(P̄(y)))              FLAT (Wang et al., ICLR 2025, arXiv:2410.11143;
                                                  UCSC-REAL/FLAT dataloader.py:103-131, 806-860)

TOFU's original DPO has no 2/β factor (tofu dataloader.py:170-171); open-unlearning
and Unlearn-Simple add it, and so does this one. TOFU pools the refusal and
retain tokens in one token-mean; idk_nll weighs the two means apart (γ, α).

FLAT maximises a variational f-divergence bound between the refusal answers
(the "good" distribution) and the forget answers, using only forget data: P̄ is
an average token probability, g* the divergence's output activation and f* its
conjugate. Its official code averages p(y_t) over every position of the padded
batch (prompt and padding counted as 0), a number that shrinks with the padding
length; here P̄ is each answer's mean token probability, averaged over the batch
(the paper's definition), and `average='padded'` gives the official one.
"""
import jax
import jax.numpy as jnp

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, LossTerms, gradient_method
from mu_jax.methods.paired import aux_maker, retain_nll
from mu_jax.optim import decayed_weights
from mu_jax.tasks import TOKENS
from mu_jax.tasks.language_model import token_nll

# FLAT's divergences as (g*, f*∘g*) pairs (dataloader.py:811-850); L = −g*(P̄a) + f*(g*(P̄y)).
DIVERGENCES = {
    'total_variation': (lambda v: 0.5 * jnp.tanh(v), lambda v: 0.5 * jnp.tanh(v)),
    'kl': (lambda v: v, lambda v: jnp.exp(v - 1.0)),
    'pearson': (lambda v: v, lambda v: v * v / 4.0 + v),
    'jensen_shannon': (lambda v: jnp.log(2.0) - jax.nn.softplus(-v),
                       lambda v: jax.nn.softplus(v) - jnp.log(2.0)),
}
AVERAGES = ('answer', 'padded')


def alternate(batch: dict) -> dict:
  """The batch with each row's refusal ('xa', 'ma') in place of its answer."""
  return {**batch, 'x': batch['xa'], 'm': batch['ma']}


def dpo_loss(win_nll, win_ref_nll, lose_nll, lose_ref_nll, weights, beta: float) -> jax.Array:
  """(−2/β)·mean_w logσ(β·[(ref − θ on the preferred) − (ref − θ on the rejected)]), all
  per-example summed NLLs [N]; the references are constants."""
  win = jax.lax.stop_gradient(win_ref_nll) - win_nll
  lose = jax.lax.stop_gradient(lose_ref_nll) - lose_nll
  per_row = -2.0 / beta * jax.nn.log_sigmoid(beta * (win - lose))
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def mean_token_probability(logits, batch: dict, average: str) -> jax.Array:
  """P̄ of a batch: the mean of p(x_t) over each row's scored tokens, averaged over the rows
  that have any ('answer'), or over every position but the first of the padded rows
  ('padded', the official FLAT code); rows of weight 0 count for nothing."""
  p = jnp.exp(-token_nll(logits, batch['x'])) * batch['m']
  w = batch['w'] * (jnp.sum(batch['m'], -1) > 0)
  if average == 'padded':
    return jnp.sum(jnp.sum(p, -1) * w) / jnp.maximum(jnp.sum(w) * (p.shape[1] - 1), 1.0)
  per_row = jnp.sum(p, -1) / jnp.maximum(jnp.sum(batch['m'], -1), 1.0)
  return jnp.sum(per_row * w) / jnp.maximum(jnp.sum(w), 1.0)


def flat_loss(forget_p, refusal_p, divergence: str) -> jax.Array:
  """−g*(P̄ refusal) + f*(g*(P̄ forget)), FLAT's loss for the divergence named."""
  activation, conjugate = DIVERGENCES[divergence]
  return -activation(refusal_p) + conjugate(forget_p)


def check_alternates(ctx: Context, name: str) -> None:
  if 'xa' not in ctx.forget or 'ma' not in ctx.forget:
    raise MuJaxError(f"Method {name!r} needs each forget row's refusal answer ('xa', 'ma'), "
                     'which the language-model benchmark provides; these examples have none.')


def refusal_method(loss_fn, name: str, *, reference: bool, retain: bool, epochs: int,
                   batch_size: int, learning_rate: float, weight_decay: float,
                   warmup_epochs: int) -> Method:
  """A gradient method on forget batches with their refusals, trained as TOFU's unlearning
  (AdamW without decay on norms, the HF linear schedule)."""
  make_aux = aux_maker(reference=reference, retain=retain)

  def checked_aux(ctx: Context, variables: dict):
    check_alternates(ctx, name)
    return make_aux(ctx, variables)

  method = gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                           learning_rate=learning_rate, optimizer='adamw',
                           weight_decay=weight_decay, make_aux=checked_aux,
                           decay_mask=decayed_weights, schedule='linear',
                           warmup_epochs=warmup_epochs)
  return method._replace(requires=(TOKENS,))


def idk_dpo(*, learning_rate: float = 1e-5,   # open-unlearning tofu/default.yaml: 1e-5
            epochs: int = 10,                 # tofu/default.yaml: 10
            batch_size: int = 32,             # tofu_unlearn.sh: 4 x 4 accumulation x 2 GPUs
            beta: float = 0.1,                # open-unlearning DPO.yaml: beta 0.1
            forget_weight: float = 1.0,       # DPO.yaml: gamma 1.0
            retain_weight: float = 1.0,       # DPO.yaml: alpha 1.0
            weight_decay: float = 0.01,       # tofu/default.yaml: 0.01
            warmup_epochs: int = 1) -> Method:   # tofu/default.yaml: warmup_epochs 1.0
  """DPO with the refusal preferred over the true answer, plus retain NLL (IdkDPO)."""

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    refused = alternate(batch)
    outputs, model_state = task.apply(variables, batch, True)
    win, _ = task.apply(variables, refused, True)
    ref = extra.aux['ref']
    forget = forget_weight * dpo_loss(
        task.sequence_nll(win, refused), task.sequence_nll(task.apply(ref, refused, False)[0],
                                                           refused),
        task.sequence_nll(outputs, batch), task.sequence_nll(task.apply(ref, batch, False)[0],
                                                             batch), batch['w'], beta)
    kept, model_state = retain_nll(task, {**variables, **model_state}, extra, batch, rng)
    return LossTerms(forget, retain_weight * kept), model_state

  return refusal_method(loss_fn, 'idk_dpo', reference=True, retain=True, epochs=epochs,
                        batch_size=batch_size, learning_rate=learning_rate,
                        weight_decay=weight_decay, warmup_epochs=warmup_epochs)


def idk_nll(*, learning_rate: float = 1e-5,   # open-unlearning tofu/default.yaml: 1e-5
            epochs: int = 10,                 # tofu/default.yaml: 10
            batch_size: int = 32,             # tofu_unlearn.sh: 4 x 4 accumulation x 2 GPUs
            forget_weight: float = 1.0,       # open-unlearning: gamma 1.0
            retain_weight: float = 1.0,       # open-unlearning: alpha 1.0
            weight_decay: float = 0.01,       # tofu/default.yaml: 0.01
            warmup_epochs: int = 1) -> Method:   # tofu/default.yaml: warmup_epochs 1.0
  """Supervised fine-tuning on the refusals, plus retain NLL (IdkNLL)."""

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    refused = alternate(batch)
    outputs, model_state = task.apply(variables, refused, True)
    forget = forget_weight * task.mean_loss(outputs, refused)
    kept, model_state = retain_nll(task, {**variables, **model_state}, extra, batch, rng)
    return LossTerms(forget, retain_weight * kept), model_state

  return refusal_method(loss_fn, 'idk_nll', reference=False, retain=True, epochs=epochs,
                        batch_size=batch_size, learning_rate=learning_rate,
                        weight_decay=weight_decay, warmup_epochs=warmup_epochs)


def flat(*, learning_rate: float = 1e-5,   # UCSC-REAL/FLAT config/forget.yaml:8
         epochs: int = 5,                  # forget.yaml:13
         batch_size: int = 64,             # forget.yaml:11-12: 16 x 4 accumulation
         divergence: str = 'total_variation',   # forget.yaml:22 variants: Total-Variation
         average: str = 'answer',          # the paper's P̄; 'padded': the official code's
         weight_decay: float = 0.01,       # forget.yaml:27
         warmup_epochs: int = 1) -> Method:   # unlearn.py: warmup_steps max(2, steps_per_epoch)
  """FLAT: the f-divergence between refusals and forget answers, forget data only."""
  if divergence not in DIVERGENCES:
    raise MuJaxError(f'Unknown FLAT divergence {divergence!r}; valid: '
                     f'{", ".join(sorted(DIVERGENCES))}.')
  if average not in AVERAGES:
    raise MuJaxError(f'Unknown FLAT average {average!r}; valid: {", ".join(AVERAGES)}.')

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    del rng, extra
    refused = alternate(batch)
    outputs, model_state = task.apply(variables, batch, True)
    good, _ = task.apply(variables, refused, True)
    loss = flat_loss(mean_token_probability(outputs, batch, average),
                     mean_token_probability(good, refused, average), divergence)
    return LossTerms(loss, jnp.zeros_like(loss)), model_state

  return refusal_method(loss_fn, 'flat', reference=False, retain=False, epochs=epochs,
                        batch_size=batch_size, learning_rate=learning_rate,
                        weight_decay=weight_decay, warmup_epochs=warmup_epochs)
