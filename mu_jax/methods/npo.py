"""Negative Preference Optimization (Zhang, Lin, Bai & Mei, COLM 2024,
arXiv:2404.05868; official code licong-lin/negative-preference-optimization),
for any task.

With log π_θ(y|x) = −`Task.sequence_nll` (the true-class log-probability of a
classifier, the summed answer-token log-likelihood of a language model, as
open-unlearning's `compute_batch_nll`), and π_ref the original model's (frozen,
eval mode), the forget loss is

  L_NPO = (2/β) · E_{D_f} log(1 + (π_θ(y|x)/π_ref(y|x))^β),

a bounded, adaptively weighted gradient ascent: its gradient is
2·σ(β·log(π_θ/π_ref))·∇log π_θ, which tends to gradient ascent's ∇log π_θ as
β → 0. The retain term is the reference `npo_grad_diff` (its default
forget_loss): L = npo_weight·L_NPO + retain_weight·CE(D_r), every forget row
paired with one retain row drawn uniformly at random (with replacement), as
the reference's forget-anchored dataset does; retain_weight=0 gives plain NPO.
Steps follow the forget stream; the retain rows live on device in the state.
The loss returns its NPO term apart (`LossTerms`), so `smooth` can perturb it
alone, as the Unlearn-Smooth reference does.

The optimizer is the reference's Hugging Face Trainer setup: AdamW whose weight
decay skips biases and normalisation scales (`optim.decayed_weights`), and the
Trainer's default 'linear' schedule, warm-up over the first epoch then linear
decay to 0 (`schedule='constant'` keeps the rate fixed, as the MUSE baselines'
`lr_scheduler_type='constant'`). Deviation: a mu_jax epoch is ⌈|D_f|/batch⌉
steps (the last batch padded); the reference floors both its warm-up,
len(dataset)//32, and its total, epochs·len(dataset)//32 (its loader
cycles); the two agree whenever the batch divides |D_f|.
"""
import jax
import jax.numpy as jnp

from mu_jax.methods.base import Method, Stream
from mu_jax.methods.gradient import LossContext, LossTerms, gradient_method
from mu_jax.methods.paired import aux_maker, retain_nll
from mu_jax.optim import decayed_weights


def npo_loss(losses, ref_losses, weights, beta: float) -> jax.Array:
  """(2/β)·mean_w log(1 + (π/π_ref)^β) = (2/β)·mean_w softplus(β·log(π/π_ref)),
  with log π = −ℓ per example (`losses`, `ref_losses` [N])."""
  log_ratio = jax.lax.stop_gradient(ref_losses) - losses
  per_row = 2.0 / beta * jax.nn.softplus(beta * log_ratio)
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def npo(*, learning_rate: float = 1e-5,  # official config/forget.yaml: lr 1e-5
        epochs: int = 10,                # official config/forget.yaml: num_epochs 10
        batch_size: int = 32,            # official: batch_size 4 x gradient_accumulation_steps 4 x 2 GPUs
        beta: float = 0.1,               # official config/forget.yaml: beta 0.1
        npo_weight: float = 1.0,         # official config/forget.yaml: npo_coeff 1.0
        retain_weight: float = 1.0,      # official config/forget.yaml: grad_diff_coeff 1.0
        optimizer: str = 'adamw',        # official forget.py:135: optim="paged_adamw_32bit"
        weight_decay: float = 0.01,      # official config/forget.yaml: weight_decay 0.01
        # official forget.py:123-142 sets no lr_scheduler_type: HF's default 'linear'
        schedule: str = 'linear',
        # official config/forget.yaml:27 warmup_steps: steps_per_epoch (forget.py:104, 118-119)
        warmup_epochs: int = 1) -> Method:
  """NPO on the forget set plus retain-set cross-entropy (NPO+RT)."""

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    outputs, model_state = task.apply(variables, batch, True)
    ref_outputs, _ = task.apply(extra.aux['ref'], batch, False)
    forget = npo_weight * npo_loss(task.sequence_nll(outputs, batch),
                                   task.sequence_nll(ref_outputs, batch), batch['w'], beta)
    if not retain_weight:
      return forget, model_state
    kept, model_state = retain_nll(task, {**variables, **model_state}, extra, batch, rng)
    return LossTerms(forget, retain_weight * kept), model_state

  return gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                         learning_rate=learning_rate, optimizer=optimizer,
                         weight_decay=weight_decay,
                         make_aux=aux_maker(reference=True, retain=bool(retain_weight)),
                         # official: HF Trainer.get_decay_parameter_names (no decay on
                         # ALL_LAYERNORM_LAYERS or "bias" parameters)
                         decay_mask=decayed_weights, schedule=schedule,
                         warmup_epochs=warmup_epochs)
