"""Negative Preference Optimization (Zhang, Lin, Bai & Mei, COLM 2024,
arXiv:2404.05868; official code licong-lin/negative-preference-optimization)
for a classifier.

With π_θ(y|x) the softmax probability of the true label and π_ref the
original model's (frozen, eval mode), the forget loss is

  L_NPO = (2/β) · E_{D_f} log(1 + (π_θ(y|x)/π_ref(y|x))^β),

a bounded, adaptively weighted gradient ascent: its gradient is
2·σ(β·log(π_θ/π_ref))·∇log π_θ, which tends to gradient ascent's ∇log π_θ as
β → 0. The retain term is the reference `npo_grad_diff` (its default
forget_loss): L = npo_weight·L_NPO + retain_weight·CE(D_r), every forget row
paired with one retain row drawn uniformly at random (with replacement), as
the reference's forget-anchored dataset does; retain_weight=0 gives plain NPO.
Steps follow the forget stream; the retain rows live on device in the state.
"""
import jax
import jax.numpy as jnp

from mu_jax import sharding
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, gradient_method
from mu_jax.optim import weighted_cross_entropy


def true_class_log_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]


def npo_loss(logits, ref_logits, labels, weights, beta: float) -> jax.Array:
  """(2/β)·mean_w log(1 + (π/π_ref)^β) = (2/β)·mean_w softplus(β·log(π/π_ref))."""
  log_ratio = (true_class_log_prob(logits, labels)
               - jax.lax.stop_gradient(true_class_log_prob(ref_logits, labels)))
  losses = 2.0 / beta * jax.nn.softplus(beta * log_ratio)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def npo(*, learning_rate: float = 1e-5,  # official config/forget.yaml: lr 1e-5
        epochs: int = 10,                # official config/forget.yaml: num_epochs 10
        batch_size: int = 32,            # official: batch_size 4 x gradient_accumulation_steps 4 x 2 GPUs
        beta: float = 0.1,               # official config/forget.yaml: beta 0.1
        npo_weight: float = 1.0,         # official config/forget.yaml: npo_coeff 1.0
        retain_weight: float = 1.0,      # official config/forget.yaml: grad_diff_coeff 1.0
        optimizer: str = 'adamw',        # official: HF Trainer's AdamW
        weight_decay: float = 0.01) -> Method:  # official config/forget.yaml: weight_decay 0.01
  """NPO on the forget set plus retain-set cross-entropy (NPO+RT)."""

  def make_aux(ctx: Context, variables: dict) -> dict:
    aux = {'ref': variables}
    if retain_weight:
      aux.update(retain_x=ctx.retain.x, retain_y=ctx.retain.y)
    return sharding.replicate(aux, ctx.mesh)

  def loss_fn(spec, variables, batch, rng, extra: LossContext):
    logits, model_state = spec.apply_fn(variables, batch['x'], True)
    ref_logits, _ = spec.apply_fn(extra.aux['ref'], batch['x'], False)
    loss = npo_weight * npo_loss(logits, ref_logits, batch['y'], batch['w'], beta)
    if retain_weight:
      rows = jax.random.randint(rng, batch['y'].shape, 0, extra.aux['retain_y'].shape[0])
      retain_logits, model_state = spec.apply_fn(
          {**variables, **model_state}, extra.aux['retain_x'][rows], True)
      loss = loss + retain_weight * weighted_cross_entropy(
          retain_logits, extra.aux['retain_y'][rows], batch['w'])
    return loss, (logits, batch['y'], model_state)

  return gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                         learning_rate=learning_rate, optimizer=optimizer,
                         weight_decay=weight_decay, make_aux=make_aux)
