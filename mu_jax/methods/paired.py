"""Forget batches with a paired retain row each, and the frozen original model, for losses
that need them (NPO, GradDiff, SimNPO, the IDK losses, IHL, RMU).

As open-unlearning's forget-anchored dataset (`src/data/unlearn.py`, anchor
'forget'): an epoch is one pass over D_f, and every forget row is paired with
a retain row drawn uniformly at random, with replacement. The retain rows
live on device in the method's state (`make_aux`), as does the frozen
reference model where the loss needs it.
"""
import jax

from mu_jax import sharding
from mu_jax.methods.base import Context
from mu_jax.methods.gradient import LossContext


def aux_maker(*, reference: bool, retain: bool):
  """make_aux(ctx, variables) -> {'ref': the original variables, 'retain': retain arrays},
  each only if asked for, replicated on the mesh."""

  def make_aux(ctx: Context, variables: dict) -> dict:
    aux = {}
    if reference:
      aux['ref'] = variables
    if retain:
      aux['retain'] = ctx.retain.arrays()
    return sharding.replicate(aux, ctx.mesh)

  return make_aux


def paired_retain(extra: LossContext, batch: dict, rng: jax.Array) -> dict:
  """One retain row per row of `batch`, drawn uniformly with replacement (its weights are
  the forget rows' 'w', so padding rows pair with nothing)."""
  retain = extra.aux['retain']
  n = batch['w'].shape[0]
  rows = jax.random.randint(rng, (n,), 0, jax.tree.leaves(retain)[0].shape[0])
  return {**jax.tree.map(lambda a: a[rows], retain), 'w': batch['w']}


def retain_nll(task, variables, extra: LossContext, batch: dict, rng: jax.Array):
  """(the task's mean loss on the paired retain rows, new model state): the retain term
  'NLL' of open-unlearning's GradDiff, NPO, SimNPO and DPO trainers."""
  retain_batch = paired_retain(extra, batch, rng)
  outputs, model_state = task.apply(variables, retain_batch, True)
  return task.mean_loss(outputs, retain_batch), model_state
