"""Inverted hinge loss (IHL) with Fisher-weighted low-rank adapters (FILA).

Cha, Cho, Hwang, Lee & Lee, "Towards Robust and Parameter-Efficient Knowledge
Unlearning for LLMs", ICLR 2025 (arXiv:2408.06621); official code
csm9493/efficient-llm-unlearning, TOFU/.

IHL (dataloader.py:185-206, 33-71): for every scored forget token,

  1 + p_θ(y_t | y_<t) − max_{v ≠ y_t} p_θ(v | y_<t)

averaged over all scored tokens of the batch (a token mean, not per sequence),
plus the retain NLL on paired retain rows. Unlike gradient ascent it stops
pushing a token once another token overtakes it, so the model is steered to
its next-best guess instead of to nonsense.

FILA (measure_importance.py:217-263, forget.py:242-287) initialises the LoRA
adapters from the weights the forget data depends on most. Per adapted
kernel, with F_f and F_r the diagonal Fisher of the forget and retain loss
(squared batch gradients, each weighted by the batch's scored tokens), the
importance I = (F_f / n_f) / (1e-5 + F_r / n_r) is summed over each output
unit's inputs, w = √(Σ_in I); the rank-r SVD of the kernel with its output
units scaled by w gives the adapters (the product un-scaled by 1/(w + 1e-5)),
and the frozen kernel becomes W − (α/r)·a·b, so the model starts unchanged.
The official code uses torch's randomised `svd_lowrank` (2 power iterations);
here the SVD is exact. Its statistics pass pairs each forget row with a random
retain row, one pass at the unlearning batch size (its README: 2).
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mu_jax import lora
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import LossContext, LossTerms, gradient_method
from mu_jax.methods.paired import aux_maker, paired_retain, retain_nll
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import decayed_weights
from mu_jax.tasks import TOKENS

# The adapters IHL trains by default (TOFU/README step 4 and run_forget.sh).
ADAPTERS = {
    'lora_rank': 32,                              # LoRA.r=32
    'lora_alpha': 64.0,                           # LoRA.alpha = 2 r
    'lora_targets': 'q,k,v,o,gate,up,down',       # LoRA.targets=all (forget.py:195-196)
    'lora_init': 'fila',
}
FISHER_EPS = 1e-5   # forget.py:253: importance_f / (1e-5 + importance_r)
SCALE_EPS = 1e-5    # forget.py: 1 / (row_importance + 1e-5)
FISHER_BATCH = 4    # run_measure_importance.sh: batch 4 (its README: 2)


def inverted_hinge(logits, batch: dict) -> jax.Array:
  """The mean over scored tokens (weighted rows) of 1 + p(y_t) − max_{v≠y_t} p(v)."""
  p = jax.nn.softmax(logits[:, :-1].astype(jnp.float32), -1)
  target = batch['x'][:, 1:, None]
  p_true = jnp.take_along_axis(p, target, -1)[..., 0]
  others = jnp.where(jax.nn.one_hot(target[..., 0], p.shape[-1], dtype=bool), -1.0, p)
  hinge = 1.0 + p_true - jnp.max(others, -1)
  scored = batch['m'][:, 1:] * batch['w'][:, None]
  return jnp.sum(hinge * scored) / jnp.maximum(jnp.sum(scored), 1.0)


def fisher_importance(ctx: Context, variables: dict, paths, batch_size: int) -> dict:
  """{kernel path: (F_f / n_f) / (1e-5 + F_r / n_r)} over one pass of forget batches, each
  with its paired retain rows."""
  task = ctx.task
  params, model_state = split_variables(variables)
  retain = {'retain': ctx.retain.arrays()}

  @jax.jit
  def squared_grads(params, batch):
    def loss(p):
      outputs, _ = task.apply(merge_variables(p, model_state), batch, False)
      return task.mean_loss(outputs, batch)
    flat = traverse_util.flatten_dict(jax.grad(loss)(params))
    tokens = jnp.sum(batch['m'] * batch['w'][:, None])
    return {path: jnp.square(flat[path]) * tokens for path in paths}, tokens

  sums = {'f': None, 'r': None}
  counts = {'f': jnp.zeros(()), 'r': jnp.zeros(())}   # on device: no host sync per batch
  rng = jax.random.PRNGKey(ctx.seed)
  for i, batch in enumerate(ctx.batches('forget', batch_size)):
    paired = paired_retain(LossContext(0, retain), batch, jax.random.fold_in(rng, i))
    for side, rows in (('f', batch), ('r', paired)):
      grads, tokens = squared_grads(params, rows)
      sums[side] = grads if sums[side] is None else jax.tree.map(jnp.add, sums[side], grads)
      counts[side] = counts[side] + tokens
  return {path: (sums['f'][path] / counts['f']) / (FISHER_EPS + sums['r'][path] / counts['r'])
          for path in paths}


def weighted_low_rank(kernel, importance, rank: int, scale: float):
  """(a [in, r], b [r, out]) with scale·a@b the rank-r approximation of `kernel` [in, out]
  whose output units are weighted by w = √(Σ_in importance) (FILA)."""
  kernel = np.asarray(kernel, np.float64)   # float64 SVD; the caller casts back
  w = np.sqrt(np.asarray(importance, np.float64).sum(0))
  u, s, vt = np.linalg.svd(kernel * w[None, :], full_matrices=False)
  root = np.sqrt(s[:rank] / scale)
  a = u[:, :rank] * root
  b = (root[:, None] * vt[:rank]) / (w + SCALE_EPS)[None, :]
  return a, b


def fila_init(ctx: Context, variables: dict, spec: lora.LoraSpec, rng: jax.Array):
  """FILA's start: adapters from the Fisher-weighted SVD, frozen kernels minus their product."""
  del rng
  params = variables['params']
  paths = lora.targeted(params, spec)
  importance = fisher_importance(ctx, variables, paths, FISHER_BATCH)
  flat = traverse_util.flatten_dict(params)
  pairs = {}
  for path in paths:
    kernel = flat[path]
    a, b = weighted_low_rank(jax.device_get(kernel), jax.device_get(importance[path]),
                             spec.rank, spec.scale)
    pairs[path] = (jnp.asarray(a, kernel.dtype), jnp.asarray(b, kernel.dtype))
    flat[path] = kernel - (spec.scale * (pairs[path][0] @ pairs[path][1])).astype(kernel.dtype)
  return traverse_util.unflatten_dict(flat), lora.adapter_tree(pairs)


lora.INITS['fila'] = fila_init


def ihl(*, learning_rate: float = 1e-4,   # TOFU/README step 4: lr=1e-4 (llama2-7b)
        epochs: int = 5,                  # README step 4: num_epochs=5
        batch_size: int = 32,             # README: batch_size=2 x gradient_accumulation_steps=16
        retain_weight: float = 1.0,       # dataloader.py:206: forget_loss + retain_loss
        weight_decay: float = 0.01,       # forget.py:112-134: weight_decay=0.01
        warmup_epochs: int = 1) -> Method:   # forget.py: warmup_steps=max(1, steps_per_epoch)
  """The inverted hinge loss on D_f plus retain NLL; by default on FILA-initialised LoRA
  adapters (`ADAPTERS`)."""

  def loss_fn(task, variables, batch, rng, extra: LossContext):
    outputs, model_state = task.apply(variables, batch, True)
    forget = inverted_hinge(outputs, batch)
    if not retain_weight:
      return LossTerms(forget, jnp.zeros_like(forget)), model_state
    kept, model_state = retain_nll(task, {**variables, **model_state}, extra, batch, rng)
    return LossTerms(forget, retain_weight * kept), model_state

  method = gradient_method(loss_fn, stream=Stream('forget', epochs, batch_size),
                           learning_rate=learning_rate, optimizer='adamw',
                           weight_decay=weight_decay,
                           make_aux=aux_maker(reference=False, retain=True),
                           decay_mask=decayed_weights, schedule='linear',
                           warmup_epochs=warmup_epochs)
  return method._replace(requires=(TOKENS,))
