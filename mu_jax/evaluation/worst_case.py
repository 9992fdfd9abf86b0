"""Worst-case forget sets: the bi-level selection of "Challenging Forgets".

Fan et al. 2024 ("Challenging Forgets: Unveiling the Worst-Case Forget Sets
in Machine Unlearning", arXiv:2403.07362; official data-wise code
github.com/OPTML-Group/Unlearn-WorstCase, main_selmu.py, unlearn/FT.py
w_FT, unlearn/impl.py optimize_select, utils.py bisection and SignSGD).
A selection w ∈ [0, 1]^n with Σw = m picks the forget set. Each selection
epoch:
  lower level  from the original model, `unlearn_steps` epochs of fine-tuning
               on every training row weighted by 1 − w_i (loss Σ (1 − w_i) ℓ_i
               per batch), with sign-SGD steps θ ← θ − lr·sign(∇);
  upper level  w ← Π(w − w_lr·(ℓ(θ) + 2γw)), ℓ(θ) the per-example losses of
               the unlearned model, Π the projection onto {0 ≤ w ≤ 1, Σw = m}
               by bisection on the shift μ of clip(w − μ, 0, 1).
Minimising Σ w_i ℓ_i picks the rows the unlearned model still fits best: the
hardest to forget. w starts as a seeded random m-subset, is binarised to its
top m once, after the last epoch (the reference binarises every
min(20, select_epochs) epochs), and the top m rows are the forget set.
The reference's upper step uses the explicit gradient ℓ only (no implicit
term through θ(w)), as here.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.errors import MuJaxError
from mu_jax.models import merge_variables, split_variables

W_LR = 0.01            # official arg_parser.py: --w_lr 0.01
THETA_LR = 1e-3        # official README example: --theta_lr 1e-3
UNLEARN_STEPS = 2      # official README example: --unlearn_steps 2 (lower-level epochs)
SELECT_EPOCHS = 2      # official README example: --select_epochs 2
GAMMA = 0.0            # official arg_parser.py: --gamma 0.0
BATCH_SIZE = 256       # official arg_parser.py: --batch_size 256
BISECTION_TOL = 1e-5   # official utils.bisection: xi=1e-5
BISECTION_ITERS = 100  # official utils.bisection: max_iter=1e2


@jax.jit(static_argnames=('iters',))
def project(a: jax.Array, m: float, tol: float = BISECTION_TOL,
            iters: int = BISECTION_ITERS) -> jax.Array:
  """clip(a − μ, 0, 1) with μ found by bisection so that the sum is m (the reference's)."""

  def excess(mu):
    return jnp.sum(jnp.clip(a - mu, 0.0, 1.0)) - m

  def cond(carry):
    lo, hi, mid, i, done = carry
    return (jnp.abs(hi - lo) > tol) & ~done

  def body(carry):
    lo, hi, _, i, _ = carry
    mid = (lo + hi) / 2
    g, g_lo = excess(mid), excess(lo)
    done = (g == 0) | (i >= iters)
    same = jnp.sign(g) == jnp.sign(g_lo)
    lo, hi = jnp.where(done, lo, jnp.where(same, mid, lo)), jnp.where(done | same, hi, mid)
    return lo, hi, mid, i + 1, done

  lo, hi = jnp.min(a - 1), jnp.max(a)
  _, _, mid, _, _ = jax.lax.while_loop(cond, body, (lo, hi, (lo + hi) / 2, 0, False))
  return jnp.clip(a - mid, 0.0, 1.0)


@jax.jit(static_argnums=0)
def _sign_step(task, params, model_state, batch, lr):
  def loss(p):
    outputs, new_state = task.apply(merge_variables(p, model_state), batch, True)
    return jnp.sum(batch['w'] * task.losses(outputs, batch)), new_state

  grads, new_state = jax.grad(loss, has_aux=True)(params)
  params = jax.tree.map(lambda p, g: p - lr * jnp.sign(g), params, grads)
  return params, new_state or model_state


@jax.jit(static_argnums=0)
def _losses(task, variables, batch):
  return task.losses(task.apply(variables, batch, False)[0], batch)


def example_losses(task, variables, train: Examples, *, batch_size: int,
                   mesh) -> np.ndarray:
  """Per-example loss [n] of `variables` on `train` (the task's: cross-entropy), eval mode."""
  batches = epoch_batches(train.arrays(), batch_size, shuffle=False)
  out = [_losses(task, variables, sharding.shard_batch(b, mesh))
         for b in logs.progress(batches, unit='batch', desc='example losses')]
  return np.concatenate(sharding.to_host(out))[:len(train)]


class Selection(NamedTuple):
  indices: np.ndarray      # sorted worst-case forget set
  initial: np.ndarray      # sorted random start
  weights: np.ndarray      # final continuous w before binarisation
  losses: list[float]      # Σ w_i ℓ_i after each selection epoch (the reference's record)


def select_worst_case(task, variables: dict, train: Examples, size: int, *,
                      mesh, seed: int = 0, select_epochs: int = SELECT_EPOCHS,
                      unlearn_steps: int = UNLEARN_STEPS, theta_lr: float = THETA_LR,
                      w_lr: float = W_LR, gamma: float = GAMMA,
                      batch_size: int = BATCH_SIZE) -> Selection:
  """The worst-case forget set of `size` rows of `train` for the model `variables`."""
  n = len(train)
  if not 0 < size < n:
    raise MuJaxError(f'A worst-case forget set of {size} rows out of {n} is empty or the whole '
                     'training set; choose a size in between.')
  if select_epochs < 1 or unlearn_steps < 1:
    raise MuJaxError('Worst-case selection needs select_epochs >= 1 and unlearn_steps >= 1.')
  sharding.check_batch_size(batch_size, mesh)
  variables = sharding.replicate(variables, mesh)
  initial = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
  w = np.zeros(n)
  w[initial] = 1.0
  arrays = {**train.arrays(), 'i': np.arange(n)}
  records = []
  for epoch in logs.progress(range(select_epochs), unit='epoch', desc='worst-case selection'):
    params, model_state = split_variables(variables)
    for step in range(unlearn_steps):
      for batch in epoch_batches(arrays, batch_size, seed=seed, epoch=epoch * unlearn_steps + step):
        weights = (batch['w'] * (1.0 - w[batch['i']])).astype(np.float32)
        batch = {**{k: batch[k] for k in train.keys()}, 'w': weights}
        params, model_state = _sign_step(task, params, model_state,
                                         sharding.shard_batch(batch, mesh), theta_lr)
    losses = example_losses(task, merge_variables(params, model_state), train,
                            batch_size=batch_size, mesh=mesh).astype(np.float64)
    with jax.enable_x64(True):   # the reference projects in float64
      w = np.asarray(project(jnp.asarray(w - w_lr * (losses + gamma * 2 * w), jnp.float64),
                             float(size)))
    records.append(float(np.sum(w * losses)))
    logs.record(epoch + 1, {'objective': records[-1]}, prefix='worst_case')
  chosen = np.sort(np.argsort(-w, kind='stable')[:size])
  return Selection(chosen, initial, w, records)
