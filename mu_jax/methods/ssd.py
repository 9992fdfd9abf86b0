"""Selective Synaptic Dampening (SSD; Foster et al. 2024, arXiv:2308.07707).

Diagonal importances I_D on the full training set D (stream 'union') and
I_Df on the forget set select the parameters that matter far more to D_f
than to D, I_Df,i > α·I_D,i, and dampen each selected θ_i by
β_i = min(λ·I_D,i / I_Df,i, 1); all others stay bit-identical, and so do
BatchNorm statistics (only params are touched). A one-shot method: `prepare`
runs the two importance passes, the single jitted `update` dampens.

With `ctx.cache_dir` set, I_D (which depends on the model and D only) is
cached there (`mu_jax.methods.cache`), keyed by estimator, batch size, seed
and the content of D, so a later forget
request pays only for the D_f pass. `select_alpha` picks α on a held-out part
of D_f. Official code: github.com/if-loops/selective-synaptic-dampening.
"""
import os
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import logs, sharding
from mu_jax.errors import MuJaxError
from mu_jax.influence import fisher
from mu_jax.methods import cache
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.models import merge_variables, split_variables
from mu_jax.tasks import CLASS_LABELS, requires

SELECTION_WEIGHTING = 10.0   # α: official ResNet18 runs, forget_*_main.py selection_weighting 10
DAMPENING_CONSTANT = 1.0     # λ: official ResNet18 runs, forget_*_main.py dampening_constant 1
BATCH_SIZE = 64              # official forget_*_main.py argparse `-b` default 64


class SSDState(NamedTuple):
  params: Any
  model_state: Any
  importance_d: Any
  importance_f: Any
  eligible: Any         # pytree of bool scalars: leaves the `layers` filter admits
  selected: jax.Array   # number of dampened weights (set by `update`)


def param_path(path) -> str:
  """'backbone/Dense_0/kernel' for a params key path (what `layers` matches)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def eligible_leaves(params, layers: str):
  """True for each leaf whose path `re.search`es the regex `layers` ('' = all)."""
  pattern = re.compile(layers)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: jnp.asarray(bool(pattern.search(param_path(path)))), params)


def dampen(params, importance_d, importance_f, eligible, *, alpha: float, dampening: float):
  """SSD's update: (dampened params, boolean selection mask per leaf).

  A weight with I_Df = 0 is never selected (α·I_D ≥ 0), and the division only
  happens on selected weights, so zero importances give no NaN.
  """
  selected = jax.tree.map(lambda ok, i_d, i_f: ok & (i_f > alpha * i_d),
                          eligible, importance_d, importance_f)

  def one(p, s, i_d, i_f):
    beta = jnp.minimum(dampening * i_d / jnp.where(s, i_f, 1.0), 1.0)
    return jnp.where(s, p * beta.astype(p.dtype), p)

  return jax.tree.map(one, params, selected, importance_d, importance_f), selected


def _cache_path(ctx: Context, estimator: str, batch_size: int) -> str:
  key = cache.fingerprint(ctx, 'ssd_importance_d', estimator, batch_size, ctx.seed)
  return os.path.join(ctx.cache_dir, f'ssd_importance_d-{estimator}-{key}')


def importance_d(ctx: Context, variables: dict, estimator: str, batch_size: int):
  """I_D on 'union' = D, loaded from / saved to `ctx.cache_dir` when set."""
  path = _cache_path(ctx, estimator, batch_size) if ctx.cache_dir else None
  if path:
    cached = cache.load(path)
    if cached is not None and cache.same_shapes(cached, variables['params']):
      return sharding.replicate(cached, ctx.mesh)
  result = fisher.importance(estimator, ctx.task, variables, ctx, 'union', batch_size)
  if path:
    cache.save(path, result)
  return result


def _count(selected) -> jax.Array:
  return sum(jnp.sum(s, dtype=jnp.int32) for s in jax.tree.leaves(selected))


def ssd(*, selection_weighting: float = SELECTION_WEIGHTING,
        dampening_constant: float = DAMPENING_CONSTANT,
        estimator: str = 'batch',   # the official code's calc_importance; 'label_free' = LF-SSD
        layers: str = '',           # regex on 'backbone/.../kernel' paths; '' = every parameter
        batch_size: int = BATCH_SIZE) -> Method:
  """SSD; `estimator` picks the importance (see mu_jax.influence.fisher)."""
  if estimator not in fisher.ESTIMATORS:
    raise MuJaxError(f'Unknown SSD estimator {estimator!r}; '
                     f'valid: {", ".join(fisher.ESTIMATORS)}.')
  try:
    re.compile(layers)
  except re.error as e:
    raise MuJaxError(f'SSD layers={layers!r} is not a valid regular expression ({e}); '
                     'fix it.') from None
  if selection_weighting < 0 or dampening_constant < 0:
    raise MuJaxError('SSD needs selection_weighting >= 0 and dampening_constant >= 0; '
                     'change them.')

  def prepare(ctx: Context, variables: dict) -> SSDState:
    params, model_state = split_variables(variables)
    i_d = importance_d(ctx, variables, estimator, batch_size)
    i_f = fisher.importance(estimator, ctx.task, variables, ctx, 'forget', batch_size)
    return SSDState(params, model_state, i_d, i_f, eligible_leaves(params, layers),
                    jnp.zeros((), jnp.int32))

  def update(task, state: SSDState, batch):
    del task, batch
    params, selected = dampen(state.params, state.importance_d, state.importance_f,
                              state.eligible, alpha=selection_weighting,
                              dampening=dampening_constant)
    return state._replace(params=params, selected=_count(selected)), {}

  def result(state: SSDState) -> dict:
    return merge_variables(state.params, state.model_state)

  def report(state: SSDState) -> dict:
    total = sum(p.size for p in jax.tree.leaves(state.params))
    selected = int(state.selected)
    return {'selected': selected, 'selected_fraction': selected / total}

  return Method(prepare, update, result, Stream('none'), report=report)


class AlphaSelection(NamedTuple):
  alpha: float | None  # None: no α in the list met both conditions
  trials: list[dict]   # per α tried, largest first: alpha, selected, forget_acc, retain_acc


@jax.jit(static_argnums=0)
def _correct(task, variables, batch) -> jax.Array:
  outputs, _ = task.apply(variables, batch, False)
  return jnp.sum(batch['w'] * task.statistics(outputs, batch)['correct'])


def _accuracy(ctx: Context, variables, source: str, batch_size: int) -> float:
  """Percent accuracy (eval mode) on `source`, summed on device."""
  correct = sum(_correct(ctx.task, variables, b)
                for b in ctx.batches(source, batch_size, shuffle=False))
  n = len(next(iter(ctx.arrays(source).values())))
  return 100.0 * float(correct) / n


_dampen = jax.jit(dampen, static_argnames=('alpha', 'dampening'))


def select_alpha(variables: dict, ctx: Context, *, target_forget_acc: float,
                 alphas: Sequence[float] = (100, 70, 50, 40, 30, 25, 20, 15, 10, 7, 5, 3, 2, 1),
                 retain_tolerance: float = 1.0, holdout_fraction: float = 0.2,
                 dampening_constant: float = DAMPENING_CONSTANT,
                 estimator: str = 'batch', layers: str = '',
                 batch_size: int = BATCH_SIZE) -> AlphaSelection:
  """The largest (most selective) α that forgets held-out D_f examples.

  Exactly: D_f is split by a permutation seeded with `ctx.seed` into a
  held-out part (round(holdout_fraction·|D_f|) rows, at least 1) and a fit
  part (the rest, at least 1). When |D_f| > batch_size the held-out size is
  rounded to whole batches (at least one), so the fit part ends in a ragged
  batch of the same size as D_f's: the batch estimator averages squared
  batch-mean gradients, whose scale grows as a batch shrinks, and I_Df of the
  fit part must be on the scale of the I_Df the method computes on all of D_f
  (on digits class 0, 101 of 126 rows gave 3.6x the importance of all 126). I_D is SSD's (cached as in `ssd`), I_Df is
  computed on the fit part only. For each α in `alphas`, largest first, SSD
  is applied with that I_Df and λ = `dampening_constant`, and accepted when
  (a) eval-mode accuracy on the held-out part is ≤ `target_forget_acc`
  (percent) and (b) accuracy on all of D_r is ≥ the original model's D_r
  accuracy − `retain_tolerance` (percentage points). The first accepted α is
  returned with the trials up to it; if none is, alpha is None and every α's
  trial is returned.
  The held-out rows were never seen by the selection, so (a) measures whether
  the dampening generalises over D_f rather than fitting the rows it saw.
  """
  requires(ctx.task, 'select_alpha', CLASS_LABELS)
  n = len(ctx.forget)
  n_out = round(holdout_fraction * n)
  if n > batch_size:
    n_out = batch_size * max(round(n_out / batch_size), 1)
  n_out = min(max(n_out, 1), n - 1)
  if n < 2 or not 0 < holdout_fraction < 1:
    raise MuJaxError(f'select_alpha needs at least 2 forget examples (got {n}) and '
                     f'0 < holdout_fraction < 1 (got {holdout_fraction}); change them.')
  order = np.random.default_rng(ctx.seed).permutation(n)
  held_out = ctx.forget.take(order[:n_out])
  fit = ctx.forget.take(order[n_out:])
  variables = sharding.replicate(variables, ctx.mesh)
  params, model_state = split_variables(variables)
  i_d = importance_d(ctx, variables, estimator, batch_size)
  i_f = fisher.importance(estimator, ctx.task, variables, ctx._replace(forget=fit),
                          'forget', batch_size)
  eligible = eligible_leaves(params, layers)
  floor = _accuracy(ctx, variables, 'retain', batch_size) - retain_tolerance
  probe = ctx._replace(forget=held_out)
  trials = []
  for alpha in logs.progress(sorted(alphas, reverse=True), unit='alpha', desc='SSD α selection'):
    dampened, selected = _dampen(params, i_d, i_f, eligible, alpha=float(alpha),
                                 dampening=float(dampening_constant))
    candidate = merge_variables(dampened, model_state)
    trials.append({'alpha': float(alpha), 'selected': int(_count(selected)),
                   'forget_acc': _accuracy(probe, candidate, 'forget', batch_size),
                   'retain_acc': _accuracy(ctx, candidate, 'retain', batch_size)})
    if trials[-1]['forget_acc'] <= target_forget_acc and trials[-1]['retain_acc'] >= floor:
      return AlphaSelection(float(alpha), trials)
  return AlphaSelection(None, trials)
