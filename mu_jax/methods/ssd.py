"""Selective Synaptic Dampening (SSD; Foster et al. 2024, arXiv:2308.07707).

Diagonal importances I_D on the full training set D and
I_Df on the forget set select the parameters that matter far more to D_f
than to D, I_Df,i > α·I_D,i, and dampen each selected θ_i by
β_i = min(λ·I_D,i / I_Df,i, 1); all others stay bit-identical, and so do
BatchNorm statistics (only params are touched). A one-shot method: `prepare`
runs the two importance passes, the single jitted `update` dampens.

The batch estimator depends on how rows fall into batches, so `order` fixes
the passes' rows and batch sizes (`passes`):
  canonical  (default) D in content order (`cache.canonical_union`), then
             permuted by `ctx.seed`: the same batches for every request on D,
             so a cached I_D is exactly what a cold run would compute. D_f
             permuted by `ctx.seed`.
  reference  the official scripts' loaders: no shuffling, D = D_r then D_f
             (D_r sorted by class for a whole-class request), each pass at the
             batch size its script uses. Request-dependent: I_D is cached per
             request.
With `ctx.cache_dir` set, I_D is cached there (`mu_jax.methods.cache`), keyed
by everything that fixes its batches, so a later forget request pays only
for the D_f pass. `select_alpha` picks α on a held-out part of D_f.
Official code: github.com/if-loops/selective-synaptic-dampening.
"""
import os
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import logs, sharding
from mu_jax.data import concat
from mu_jax.errors import MuJaxError
from mu_jax.influence import fisher
from mu_jax.methods import cache
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.models import merge_variables, split_variables
from mu_jax.tasks import ACCURACY, CLASS_LABELS, requires

SELECTION_WEIGHTING = 10.0   # α: official ResNet18 runs, forget_*_main.py selection_weighting 10
DAMPENING_CONSTANT = 1.0     # λ: official ResNet18 runs, forget_*_main.py dampening_constant 1
ORDERS = ('canonical', 'reference')
# Batch sizes of the D and D_f passes in the official scripts (src/):
CLASS_BATCH_SIZE = 64           # forget_full_class_main.py:58 `-b` 64, both passes (:152-157)
RANDOM_BATCH_SIZE = 128         # forget_random_main.py:57 `-b` default 128, the D pass (:133-136)
RANDOM_FORGET_BATCH_SIZE = 128  # forget_random_main.py:120, D_f at batch_size=128 whatever -b is


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


class Pass(NamedTuple):
  """One importance pass: its rows (host arrays, or a stream name of the context)
  batched in order, shuffled first by `ctx.seed` if `shuffle`."""
  rows: Any
  batch_size: int
  shuffle: bool


def whole_class(ctx: Context) -> bool:
  """True when D_f is every training row of one class (the full-class script's case)."""
  if CLASS_LABELS not in ctx.task.capabilities:
    return False
  labels = np.unique(ctx.forget['y'])
  return len(labels) == 1 and not np.any(ctx.retain['y'] == labels[0])


def passes(ctx: Context, order: str, batch_size: int | None) -> tuple[Pass, Pass]:
  """The (D, D_f) passes of `order`; `batch_size` None: the official script's `-b`.

  'reference' reproduces the official loaders: forget_full_class_main.py:152-157
  and forget_random_main.py:120-136 build unshuffled DataLoaders over
  ConcatDataset((retain, forget)) and over forget; a whole-class request's
  retain rows come class by class (forget_full_class_strategies.py:57-61,
  `build_retain_forget_sets`), each class in data-set order. Deviation: the
  random script's rows follow torch's `random_split` permutation, which NumPy
  cannot reproduce; here D_r and D_f keep training-set order (a random subset's).
  """
  is_class = whole_class(ctx)
  size = batch_size or (CLASS_BATCH_SIZE if is_class else RANDOM_BATCH_SIZE)
  if order == 'canonical':
    return Pass(cache.canonical_union(ctx), size, True), Pass('forget', size, True)
  retain = ctx.retain
  if is_class:
    retain = retain.take(np.argsort(retain['y'], kind='stable'))
  forget_size = size if is_class else RANDOM_FORGET_BATCH_SIZE
  return (Pass(concat(retain, ctx.forget).arrays(), size, False),
          Pass('forget', forget_size, False))


def importance_d(ctx: Context, variables: dict, estimator: str, d_pass: Pass):
  """I_D on the pass `d_pass`, loaded from / saved to `ctx.cache_dir` when set.

  The key holds D's content, the estimator, batch size, shuffling and seed,
  and for an unshuffled pass the rows in their order, so an entry is read
  only by a request whose pass would compute it bit for bit.
  """
  path = None
  if ctx.cache_dir:
    key = cache.fingerprint(ctx, 'ssd_importance_d', estimator, d_pass.batch_size,
                            d_pass.shuffle, ctx.seed, rows=None if d_pass.shuffle else d_pass.rows)
    path = os.path.join(ctx.cache_dir, f'ssd_importance_d-{estimator}-{key}')
    cached = cache.load(path)
    if cached is not None and cache.same_shapes(cached, variables['params']):
      return sharding.replicate(cached, ctx.mesh)
  result = _importance(estimator, ctx, variables, d_pass)
  if path:
    cache.save(path, result)
  return result


def _importance(estimator: str, ctx: Context, variables: dict, one: Pass):
  return fisher.importance(estimator, ctx.task, variables, ctx, one.rows, one.batch_size,
                           shuffle=one.shuffle)


def _check_order(order: str, batch_size: int | None) -> None:
  if order not in ORDERS:
    raise MuJaxError(f'Unknown SSD order {order!r}; valid: {", ".join(ORDERS)}.')
  if batch_size is not None and batch_size < 1:
    raise MuJaxError(f'SSD batch_size must be a positive integer or None, got {batch_size}.')


def _count(selected) -> jax.Array:
  return sum(jnp.sum(s, dtype=jnp.int32) for s in jax.tree.leaves(selected))


def ssd(*, selection_weighting: float = SELECTION_WEIGHTING,
        dampening_constant: float = DAMPENING_CONSTANT,
        estimator: str = 'batch',   # the official code's calc_importance; 'label_free' = LF-SSD
        layers: str = '',           # regex on 'backbone/.../kernel' paths; '' = every parameter
        # mu_jax: request-independent batches, so the cached I_D is exact; 'reference' =
        # the official loaders (see `passes`)
        order: str = 'canonical',
        batch_size: int | None = None) -> Method:   # None: the official script's (`passes`)
  """SSD; `estimator` picks the importance (see mu_jax.influence.fisher), `order`
  the passes' batches."""
  _check_order(order, batch_size)
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
    d_pass, f_pass = passes(ctx, order, batch_size)
    i_d = importance_d(ctx, variables, estimator, d_pass)
    i_f = _importance(estimator, ctx, variables, f_pass)
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


def accuracy(ctx: Context, variables, source: str, batch_size: int) -> float:
  """Percent accuracy (eval mode) on `source`, summed on device."""
  correct = sum(_correct(ctx.task, variables, b)
                for b in ctx.batches(source, batch_size, shuffle=False))
  n = len(next(iter(ctx.arrays(source).values())))
  return 100.0 * float(correct) / n


_dampen = jax.jit(dampen, static_argnames=('alpha', 'dampening'))


def _group_split(groups: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, int]:
  """(a row order whose first `held` rows are whole groups, held): groups in a seeded
  order, taken until they hold at least `n_out` rows, leaving at least one group."""
  names = np.random.default_rng(seed).permutation(np.unique(groups))
  if len(names) < 2:
    raise MuJaxError('select_alpha with groups needs at least 2 groups in D_f to hold one '
                     'out; give it more, or no groups.')
  sizes = np.array([np.sum(groups == g) for g in names])
  taken = min(int(np.searchsorted(np.cumsum(sizes), n_out)) + 1, len(names) - 1)
  out = np.flatnonzero(np.isin(groups, names[:taken]))
  return np.concatenate([out, np.flatnonzero(~np.isin(groups, names[:taken]))]), len(out)


def select_alpha(variables: dict, ctx: Context, *, target_forget_acc: float,
                 alphas: Sequence[float] = (100, 70, 50, 40, 30, 25, 20, 15, 10, 7, 5, 3, 2, 1),
                 retain_tolerance: float = 1.0, holdout_fraction: float = 0.2,
                 dampening_constant: float = DAMPENING_CONSTANT,
                 estimator: str = 'batch', layers: str = '', order: str = 'canonical',
                 batch_size: int | None = None,
                 groups: np.ndarray | None = None) -> AlphaSelection:
  """The largest (most selective) α that forgets held-out D_f examples.

  Exactly: D_f is split by a permutation seeded with `ctx.seed` into a
  held-out part (round(holdout_fraction·|D_f|) rows, at least 1) and a fit
  part (the rest, at least 1; with order 'reference' in D_f's order). When
  |D_f| exceeds the D_f pass's batch size the held-out size is rounded to
  whole batches (at least one), so the fit part ends in a ragged batch of the
  same size as D_f's: the batch estimator averages squared
  batch-mean gradients, whose scale grows as a batch shrinks, and I_Df of the
  fit part must be on the scale of the I_Df the method computes on all of D_f
  (on digits class 0, 101 of 126 rows gave 3.6x the importance of all 126).
  I_D is SSD's (cached as in `ssd`), I_Df is computed on the fit part only,
  both with the passes of `order`. For each α in `alphas`, largest first, SSD
  is applied with that I_Df and λ = `dampening_constant`, and accepted when
  (a) eval-mode accuracy on the held-out part is ≤ `target_forget_acc`
  (percent) and (b) accuracy on all of D_r is ≥ the original model's D_r
  accuracy − `retain_tolerance` (percentage points). The first accepted α is
  returned with the trials up to it; if none is, alpha is None and every α's
  trial is returned.
  The held-out rows were never seen by the selection, so (a) measures whether
  the dampening generalises over D_f rather than fitting the rows it saw.
  With `groups` (one id per D_f row, e.g. a language model's authors) the
  held-out part is whole groups instead: the groups in a seeded order, taken
  until they hold round(holdout_fraction·|D_f|) rows (at least one group, and
  one left to fit), so (a) asks whether the dampening reaches entities it
  never saw. Accuracy is the task's `correct` statistic (a language model's
  token accuracy).
  """
  requires(ctx.task, 'select_alpha', ACCURACY)
  _check_order(order, batch_size)
  d_pass, f_pass = passes(ctx, order, batch_size)
  n = len(ctx.forget)
  n_out = round(holdout_fraction * n)
  if n > f_pass.batch_size:
    n_out = f_pass.batch_size * max(round(n_out / f_pass.batch_size), 1)
  n_out = min(max(n_out, 1), n - 1)
  if n < 2 or not 0 < holdout_fraction < 1:
    raise MuJaxError(f'select_alpha needs at least 2 forget examples (got {n}) and '
                     f'0 < holdout_fraction < 1 (got {holdout_fraction}); change them.')
  split = np.random.default_rng(ctx.seed).permutation(n)
  if groups is not None:   # whole groups of about a fifth of the rows: no batch rounding
    split, n_out = _group_split(np.asarray(groups), max(round(holdout_fraction * n), 1),
                                ctx.seed)
  held_out = ctx.forget.take(split[:n_out])
  fit_rows = split[n_out:] if order == 'canonical' else np.sort(split[n_out:])
  fit = ctx.forget.take(fit_rows)
  variables = sharding.replicate(variables, ctx.mesh)
  params, model_state = split_variables(variables)
  i_d = importance_d(ctx, variables, estimator, d_pass)
  i_f = _importance(estimator, ctx._replace(forget=fit), variables, f_pass)
  eligible = eligible_leaves(params, layers)
  rows = d_pass.batch_size   # evaluation batches: any size gives the same counts
  floor = accuracy(ctx, variables, 'retain', rows) - retain_tolerance
  probe = ctx._replace(forget=held_out)
  trials = []
  for alpha in logs.progress(sorted(alphas, reverse=True), unit='alpha', desc='SSD α selection'):
    dampened, selected = _dampen(params, i_d, i_f, eligible, alpha=float(alpha),
                                 dampening=float(dampening_constant))
    candidate = merge_variables(dampened, model_state)
    trials.append({'alpha': float(alpha), 'selected': int(_count(selected)),
                   'forget_acc': accuracy(probe, candidate, 'forget', rows),
                   'retain_acc': accuracy(ctx, candidate, 'retain', rows)})
    if trials[-1]['forget_acc'] <= target_forget_acc and trials[-1]['retain_acc'] >= floor:
      return AlphaSelection(float(alpha), trials)
  return AlphaSelection(None, trials)
