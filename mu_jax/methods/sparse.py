"""ℓ1-sparse unlearning (Jia et al., NeurIPS 2023, arXiv:2304.04934, "Model
Sparsity Can Simplify Machine Unlearning"; official code OPTML-Group/Unlearn-Sparse,
`FT_prune` = `FT_l1`).

Fine-tuning on D_r with cross-entropy plus α_e·‖θ‖₁ (ℓ1 of every parameter),
the coefficient decaying linearly over epochs, α_e = α·(1 − e/E) for epoch
e = 0..E−1 (the reference `FT_iter` with --no-l1-epochs 0): sparsity is
promoted early and fine-tuning alone finishes.
"""
import jax
import jax.numpy as jnp

from mu_jax.data.batching import num_batches
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.baselines import BATCH_SIZE, MOMENTUM, WEIGHT_DECAY, fine_tune_loss
from mu_jax.methods.gradient import LossContext, gradient_method


def l1_coefficient(alpha: float, epoch, epochs: int):
  """α_e = α·(1 − e/E): the reference's linear decay to 0 over the E epochs."""
  return alpha * (1.0 - epoch / epochs)


def l1_norm(params) -> jax.Array:
  return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def l1_sparse(*, learning_rate: float = 0.01,  # Unlearn-Sparse README (ℓ1-sparse): --unlearn_lr 0.01
              epochs: int = 10,                # Unlearn-Sparse README (ℓ1-sparse): --unlearn_epochs 10
              alpha: float = 1e-4,             # Scissorhands CIFAR-10/SVHN scripts run FT_prune --alpha 1e-4 (README: ${alpha})
              batch_size: int = BATCH_SIZE, momentum: float = MOMENTUM,
              weight_decay: float = WEIGHT_DECAY) -> Method:
  """Fine-tunes on D_r with a linearly decaying ℓ1 penalty on all parameters."""

  def make_aux(ctx: Context, variables: dict) -> jax.Array:
    del variables
    return jnp.asarray(num_batches(len(ctx.retain), batch_size), jnp.int32)

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    ce, aux = fine_tune_loss(task, variables, batch, rng)
    coefficient = l1_coefficient(alpha, extra.step // extra.aux, epochs)
    return ce + coefficient * l1_norm(variables['params']), aux

  return gradient_method(loss_fn, stream=Stream('retain', epochs, batch_size),
                         learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay, make_aux=make_aux)
