"""SimNPO: simple, reference-free NPO (Fan, Liu, Lin, Jia, Zhang, Mei & Liu, 2024,
arXiv:2410.07163; official code OPTML-Group/Unlearn-Simple).

NPO's reference model is replaced by a length-normalised margin:

  L = (2/β) · mean_{D_f} −log σ(β·(ℓ̄_θ(x, y) − δ)) + retain_weight · CE(D_r)

with ℓ̄ the NLL summed over the answer's tokens divided by their count (the
language model's per-example loss, `Task.losses`; the task's loss elsewhere)
and δ the margin (the official `gamma`). Minimising it raises ℓ̄ with a weight
σ(−β(ℓ̄ − δ)) that fades as the answer is forgotten. Code:
Unlearn-Simple TOFU/dataloader.py:278-289 (`simnpo_grad_diff`), identical to
open-unlearning src/trainer/unlearn/simnpo.py:17-20. The retain term and the
forget-anchored pairs are `paired`'s; the optimiser and schedule are NPO's.
"""
import jax
import jax.numpy as jnp

from mu_jax.methods.base import Method, Stream
from mu_jax.methods.gradient import LossContext, LossTerms, gradient_method
from mu_jax.methods.paired import aux_maker, retain_nll
from mu_jax.optim import decayed_weights


def simnpo_loss(mean_nll, weights, beta: float, delta: float) -> jax.Array:
  """(2/β)·mean_w −log σ(β·(ℓ̄ − δ)) over per-example length-normalised NLLs ℓ̄ [N]."""
  per_row = -2.0 / beta * jax.nn.log_sigmoid(beta * (mean_nll - delta))
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def simnpo(*, learning_rate: float = 1e-5,  # Unlearn-Simple TOFU/config/forget.yaml:9
           epochs: int = 10,                # forget.yaml:15
           batch_size: int = 32,            # forget.yaml:13-14: 1 x 4 accumulation x 8 GPUs
           beta: float = 2.5,               # forget.yaml:22 (README forget05; 4.5 for forget10)
           delta: float = 0.0,              # forget.yaml:23 `gamma`, the margin
           npo_weight: float = 0.1375,      # forget.yaml:18 npo_coeff (README forget05)
           retain_weight: float = 1.0,      # forget.yaml:19 grad_diff_coeff
           weight_decay: float = 0.01,      # forget.yaml:24
           warmup_epochs: int = 1) -> Method:   # forget.yaml:30 warmup_steps: steps_per_epoch
  """SimNPO on the forget set plus retain-set cross-entropy (simnpo_grad_diff)."""

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    outputs, model_state = task.apply(variables, batch, True)
    forget = npo_weight * simnpo_loss(task.losses(outputs, batch), batch['w'], beta, delta)
    if not retain_weight:
      return forget, model_state
    kept, model_state = retain_nll(task, {**variables, **model_state}, extra, batch, rng)
    return LossTerms(forget, retain_weight * kept), model_state

  return gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                         learning_rate=learning_rate, optimizer='adamw',
                         weight_decay=weight_decay,
                         make_aux=aux_maker(reference=False, retain=bool(retain_weight)),
                         decay_mask=decayed_weights, schedule='linear',
                         warmup_epochs=warmup_epochs)
