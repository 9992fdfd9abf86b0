"""Datamodel Matching (Georgiev et al. 2024, arXiv:2410.23232) and its relatives.

dmm: (a) an estimator attributes each logit of each fine-tuning row x to the
  training rows, from an ensemble trained on random α-subsets of D:
  'datamodel' (default; reference `dm_direct`'s estimator="datamodel") fits
  linear datamodels, a ridge regression of every logit on the subset masks
  (`mu_jax.influence.datamodels`), in logit units; 'trak' uses TRAK
  (`mu_jax.influence.trak`), the large-scale fallback;
  (b) the oracle's logits are predicted as f̂(x) = f(x) − Σ_{j∈D_f} β_j(x);
  (c) the model is fine-tuned by MSE on logits to f̂ over D_f plus a random
  retain subset of 3·|D_f| rows (reference code `dm_matching`).
dm_direct: the prediction f̂ itself as the unlearned model, no fine-tuning
  (reference code `dm_direct`); a diagnostic of the attribution. It uses TRAK
  only: it needs β at arbitrary test points, which datamodels fit only for
  the points whose outputs were recorded.
oracle_matching: the same fine-tuning toward the mean logits of real oracles,
  an ensemble trained on D_r (reference code `oracle_matching`): the upper bound.

Datamodels are linear in the mask, fit on subsets that each hold about α·|D_f|
forget rows, so removing all of D_f extrapolates: where an output saturates
(a whole class, whose logit barely moves until nearly all of it is gone) the
predicted shift is far too small (digits, class:0: about −1 against the oracle's −25).

For TRAK, Σ_{j∈D_f} β_j(x) = 1/M Σ_m φ_m(x)ᵀ v_m, v_m = (Φ_mᵀΦ_m)⁺ Φ_{m,f}ᵀ Q_f,
and φ_m(x)ᵀ v_m = ∇f(x; θ_m)ᵀ(P v_m): one JVP of member m along the tangent P v_m,
so targets (and dm_direct at any x) need no per-example gradients.

The per-example targets are computed once in `prepare` and live on device in
the state beside the fine-tuning rows; the method's own batch schedule
(`Method.batches`) yields row indices, and each jitted step gathers its rows
and targets from the state. (One `lax.scan` over every step would avoid the
per-step dispatch, but XLA:CPU runs a convolution's weight gradient ~10x
slower inside a loop.) Deviations from the reference: batches are shuffled
every epoch (reference default `shuffle=False`), and the learning rate is
constant (reference: ExponentialLR, γ=0.95 per epoch).
"""
import os
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mu_jax import ensembles, sharding
from mu_jax.data import Examples, concat
from mu_jax.data.batching import num_batches
from mu_jax.errors import MuJaxError
from mu_jax.evaluation.metrics import predict_outputs
from mu_jax.influence import datamodels, trak
from mu_jax.methods import cache
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.methods.gradient import GradientState, gradient_method
from mu_jax.tasks import CLASS_LABELS, OUTPUT_VECTOR

LEARNING_RATE = 5e-4     # reference `dm_matching`/`oracle_matching`: learning_rate=5e-4
EPOCHS = 5               # reference: num_epochs=5
BATCH_SIZE = 512         # reference: batch_size=512
OPTIMIZER = 'adam'       # reference: optimizer="adam"
RETAIN_MULTIPLIER = 3.0  # reference: retain_multiplier=3.0
NUM_MODELS = 10          # reference `oracle_matching`: num_oracles=10
ESTIMATORS = ('datamodel', 'trak')
# Datamodels need far more models than TRAK. 256 members of 10 epochs are
# chosen for cost (~45 s for digits' ~1,300 rows on a 2-core CPU), not
# accuracy: Ilyas et al. (2022) fit CIFAR-10's 50k rows on ~300k models.
DATAMODEL_NUM_MODELS = 256
DATAMODEL_ENSEMBLE_EPOCHS = 10
# Ridge penalty, small next to the centered masks' X̃ᵀX̃ diagonal M·α(1−α) = 64;
# leave-one-out CV (sklearn RidgeCV) prefers ≥ 300 on digits, shrinking β more.
DATAMODEL_REG = 1.0
# Ensemble members are trained with configs/digits_mlp.py's recipe
# (Adam, lr 1e-3, batch 64, 30 epochs); shrink it for larger data sets.
ENSEMBLE_OPTIMIZER = 'adam'
ENSEMBLE_LEARNING_RATE = 1e-3
ENSEMBLE_BATCH_SIZE = 64
ENSEMBLE_EPOCHS = 30
TARGET_BATCH_SIZE = 1024   # rows per forward pass when computing targets (memory, not a result)


class MatchState(NamedTuple):
  inner: GradientState
  rows: dict          # {key: [N, ...]} fine-tuning rows: D_f, then the retain subset
  targets: jax.Array  # [N, C] outputs to match
  losses: jax.Array   # [S] matching loss of every step (zeros before it runs)


def matching_loss(task, variables, batch, rng):
  """Mean squared error between outputs and targets 't' over real rows (torch mse_loss)."""
  del rng
  outputs, new_state = task.apply(variables, batch, True)
  err = jnp.mean(jnp.square(outputs - batch['t']).reshape(outputs.shape[0], -1), axis=-1)
  loss = jnp.sum(err * batch['w']) / jnp.maximum(jnp.sum(batch['w']), 1.0)
  return loss, new_state


def _retain_take(ctx: Context, retain_multiplier: float) -> int:
  """How many retain rows fine-tune beside D_f: retain_multiplier·|D_f|, at most |D_r|."""
  return min(int(retain_multiplier * len(ctx.forget)), len(ctx.retain))


def finetune_rows(ctx: Context, retain_multiplier: float) -> Examples:
  """D_f plus a seeded random retain subset of retain_multiplier·|D_f| rows."""
  if len(ctx.forget) == 0:
    raise MuJaxError('The forget set is empty; select at least one example to forget.')
  idx = np.random.default_rng(ctx.seed).choice(len(ctx.retain),
                                               _retain_take(ctx, retain_multiplier),
                                               replace=False)
  return concat(ctx.forget, ctx.retain.take(idx))


def matching_method(make_targets: Callable[[Context, dict, Examples], Any], *,
                    learning_rate: float, epochs: int, batch_size: int, optimizer: str,
                    retain_multiplier: float) -> Method:
  """Fine-tunes toward make_targets(ctx, variables, rows) -> outputs [N, C] by MSE."""
  stream = Stream('union', epochs, batch_size)   # epochs and batch size; rows: `batches`
  inner = gradient_method(matching_loss, stream=stream, learning_rate=learning_rate,
                          optimizer=optimizer)

  def prepare(ctx: Context, variables: dict) -> MatchState:
    rows = finetune_rows(ctx, retain_multiplier)
    targets = jnp.asarray(make_targets(ctx, variables, rows), jnp.float32)
    placed = sharding.replicate((rows.arrays(), targets), ctx.mesh)
    steps = epochs * num_batches(len(rows), batch_size)
    return MatchState(inner.prepare(ctx, variables), *placed, jnp.zeros(steps, jnp.float32))

  def batches(ctx: Context, epoch: int) -> Iterator[dict]:
    """Shuffled, padded indices into the state's fine-tuning rows."""
    n = len(ctx.forget) + _retain_take(ctx, retain_multiplier)
    yield from ctx.batches_of({'i': np.arange(n, dtype=np.int32)}, batch_size, epoch=epoch)

  def update(task, state: MatchState, batch):
    rows = {**jax.tree.map(lambda a: a[batch['i']], state.rows),
            't': state.targets[batch['i']], 'w': batch['w']}
    inner_state, stats = inner.update(task, state.inner, rows)
    losses = state.losses.at[state.inner.step].set(stats['loss'])
    return MatchState(inner_state, state.rows, state.targets, losses), stats

  def report(state: MatchState) -> dict:
    per_epoch = state.losses.reshape(epochs, -1).mean(axis=1)
    return {'match_loss_first_epoch': per_epoch[0], 'match_loss_last_epoch': per_epoch[-1]}

  return Method(prepare, update, lambda s: inner.result(s.inner), stream, report=report,
                batches=batches)


def _recipe(optimizer: str, learning_rate: float, batch_size: int, epochs: int):
  return ml_collections.ConfigDict(dict(
      optimizer=optimizer, learning_rate=learning_rate, momentum=0.9, weight_decay=0.0,
      schedule='constant', batch_size=batch_size, epochs=epochs))


def _ensemble(ctx: Context, data: Examples, masks: np.ndarray, recipe) -> dict:
  """Fresh members (the task's init) trained on data[masks[m]]."""
  seeds = [ctx.seed * 1000 + 1 + m for m in range(len(masks))]
  return ensembles.train_ensemble(ctx.task, recipe, data, seeds=seeds, masks=masks,
                                  mesh=ctx.mesh)


class Attribution(NamedTuple):
  members: dict    # stacked ensemble the attribution was computed on
  tangents: Any    # stacked parameter tangents: Σ_{j∈D_f} β_j(x) by one JVP each


def forget_attribution(ctx: Context, *, num_models: int,
                       subset_fraction: float, proj_dim: int, lam: float,
                       chunk_size: int, recipe) -> Attribution:
  """TRAK on an ensemble trained on random subsets of D, summed over D_f.

  The ensemble and its TRAK state depend on D, not on the request: D is taken
  in canonical row order and both are cached under `ctx.cache_dir`.
  """
  union = ctx.arrays('union')
  data = Examples({k: union[k] for k in ctx.task.keys})
  order = cache.canonical_order(data.arrays())
  data = data.take(order)
  forget_rows = np.flatnonzero(union['f'][order] > 0)
  proj = trak.Projection(dim=proj_dim, seed=ctx.seed)
  path = None
  if ctx.cache_dir:
    # 'subset-rows': members see only their subset's rows (`ensembles.train_ensemble`).
    key = cache.fingerprint(ctx, 'trak', 'subset-rows', num_models, subset_fraction, proj, lam,
                            ctx.seed, sorted(recipe.items()))
    path = os.path.join(ctx.cache_dir, f'dmm_trak-{key}')
  saved = cache.load(path) if path else None
  if saved is not None:
    members = sharding.replicate(saved['members'], ctx.mesh)
    state = trak.TrakState(**{k: jnp.asarray(v) for k, v in saved['trak'].items()})
  else:
    masks = ensembles.subset_masks(len(data), num_models, subset_fraction, ctx.seed)
    members = _ensemble(ctx, data, masks, recipe)
    state = trak.fit(ctx.task, members, data, lam=lam, proj=proj,
                     chunk_size=chunk_size, mesh=ctx.mesh)
    if path:
      cache.save(path, {'members': members, 'trak': state._asdict()})
  return Attribution(members, trak.removal_tangents(state, forget_rows, members, proj))


def datamodel_removal(ctx: Context, rows: Examples, *, num_models: int,
                      subset_fraction: float, regression: str, reg: float,
                      recipe) -> np.ndarray:
  """Σ_{j∈D_f} β_j(x) [N, C]: datamodels of every output at the rows, fit on subsets of D."""
  union = ctx.arrays('union')   # D_f first: columns :|D_f| of β are the forget rows
  dm = datamodels.estimate(ctx.task, recipe, Examples({k: union[k] for k in ctx.task.keys}),
                           rows, num_models=num_models,
                           fraction=subset_fraction, output='logits', regression=regression,
                           reg=reg, seed=ctx.seed, mesh=ctx.mesh)
  return dm.beta[:, :, :len(ctx.forget)].sum(-1)


def predicted_oracle_logits(task, variables, attribution: Attribution, batch,
                            multiplier: float = 1.0) -> jax.Array:
  """f̂(x) = f(x) − multiplier · Σ_{j∈D_f} β_j(x), eval mode."""
  logits, _ = task.apply(variables, batch, False)
  removed = trak.directional_outputs(task, attribution.members, attribution.tangents, batch)
  return logits - multiplier * removed


def predicted_oracle_apply(task, multiplier: float) -> Callable:
  """f̂ as a forward pass: forward(variables {'model', 'members', 'tangents'}, batch, train)."""
  def forward(variables, batch, train):
    del train
    attribution = Attribution(variables['members'], variables['tangents'])
    return predicted_oracle_logits(task, variables['model'], attribution, batch,
                                   multiplier), {}
  return forward


def _targets(ctx: Context, task, variables, rows: Examples) -> np.ndarray:
  """Eval-mode outputs of `task` on the fine-tuning rows, in sharded batches."""
  return predict_outputs(task, variables, rows, batch_size=TARGET_BATCH_SIZE, mesh=ctx.mesh)


def _attribution_kwargs(num_models, subset_fraction, proj_dim, lam, chunk_size,
                        ensemble_optimizer, ensemble_learning_rate, ensemble_batch_size,
                        ensemble_epochs):
  return dict(num_models=num_models, subset_fraction=subset_fraction, proj_dim=proj_dim,
              lam=lam, chunk_size=chunk_size,
              recipe=_recipe(ensemble_optimizer, ensemble_learning_rate,
                             ensemble_batch_size, ensemble_epochs))


def dmm(*, learning_rate: float = LEARNING_RATE, epochs: int = EPOCHS,
        batch_size: int = BATCH_SIZE, optimizer: str = OPTIMIZER,
        retain_multiplier: float = RETAIN_MULTIPLIER,
        multiplier: float = 1.0,          # reference `dm_matching`: dm_multiplier=1.0
        estimator: str = 'datamodel',     # reference `dm_direct`: estimator="datamodel"
        num_models: int | None = None,
        subset_fraction: float = 0.5,     # datamodels (Ilyas et al. 2022)/TRAK: α = 0.5
        datamodel_regression: str = 'ridge',
        datamodel_reg: float = DATAMODEL_REG,
        proj_dim: int = 2048,             # MadryLab/trak TRAKer: proj_dim=2048
        lam: float = 0.0,                 # MadryLab/trak finalize_features: (ΦᵀΦ)⁻¹, no ridge
        chunk_size: int = 64,
        ensemble_optimizer: str = ENSEMBLE_OPTIMIZER,
        ensemble_learning_rate: float = ENSEMBLE_LEARNING_RATE,
        ensemble_batch_size: int = ENSEMBLE_BATCH_SIZE,
        ensemble_epochs: int | None = None) -> Method:
  """Fine-tunes toward predicted oracle logits (datamodels or TRAK) on D_f and a retain subset.

  num_models, subset_fraction and the ensemble_* recipe apply to both
  estimators (num_models and ensemble_epochs default per estimator);
  datamodel_* to 'datamodel' only; proj_dim, lam and chunk_size to 'trak' only.
  """
  if estimator not in ESTIMATORS:
    raise MuJaxError(f'Unknown dmm estimator {estimator!r}; valid: {", ".join(ESTIMATORS)}.')
  datamodel = estimator == 'datamodel'
  if num_models is None:
    num_models = DATAMODEL_NUM_MODELS if datamodel else NUM_MODELS
  if ensemble_epochs is None:
    ensemble_epochs = DATAMODEL_ENSEMBLE_EPOCHS if datamodel else ENSEMBLE_EPOCHS
  kwargs = _attribution_kwargs(num_models, subset_fraction, proj_dim, lam, chunk_size,
                               ensemble_optimizer, ensemble_learning_rate,
                               ensemble_batch_size, ensemble_epochs)

  def make_targets(ctx, variables, rows):
    if not datamodel:
      attribution = forget_attribution(ctx, **kwargs)
      return _targets(ctx, ctx.task.with_forward(predicted_oracle_apply(ctx.task, multiplier)),
                      {'model': variables, **attribution._asdict()}, rows)
    removed = datamodel_removal(ctx, rows, num_models=num_models,
                                subset_fraction=subset_fraction,
                                regression=datamodel_regression, reg=datamodel_reg,
                                recipe=kwargs['recipe'])
    return _targets(ctx, ctx.task, variables, rows) - multiplier * removed

  method = matching_method(make_targets, learning_rate=learning_rate, epochs=epochs,
                           batch_size=batch_size, optimizer=optimizer,
                           retain_multiplier=retain_multiplier)
  # Linear datamodels fit one ridge regression per output of each row: a vector per example
  # (classes, targets). A language model's row has length x vocabulary logits (56 x 2,048
  # in the LM benchmark, ~115k per row), too many outputs to attribute this way.
  return method._replace(requires=(OUTPUT_VECTOR,) if datamodel else (CLASS_LABELS,))


def oracle_matching(*, learning_rate: float = LEARNING_RATE, epochs: int = EPOCHS,
                    batch_size: int = BATCH_SIZE, optimizer: str = OPTIMIZER,
                    retain_multiplier: float = RETAIN_MULTIPLIER,
                    num_models: int = NUM_MODELS,
                    ensemble_optimizer: str = ENSEMBLE_OPTIMIZER,
                    ensemble_learning_rate: float = ENSEMBLE_LEARNING_RATE,
                    ensemble_batch_size: int = ENSEMBLE_BATCH_SIZE,
                    ensemble_epochs: int = ENSEMBLE_EPOCHS) -> Method:
  """Fine-tunes toward the mean logits of `num_models` oracles trained on D_r."""
  recipe = _recipe(ensemble_optimizer, ensemble_learning_rate, ensemble_batch_size,
                   ensemble_epochs)

  def make_targets(ctx, variables, rows):
    del variables
    oracles = _ensemble(ctx, ctx.retain, np.ones((num_models, len(ctx.retain)), bool), recipe)
    mean = lambda v, batch, train: (jnp.mean(ensembles.ensemble_apply(ctx.task, v, batch), 0),
                                    {})
    return _targets(ctx, ctx.task.with_forward(mean), oracles, rows)

  return matching_method(make_targets, learning_rate=learning_rate, epochs=epochs,
                         batch_size=batch_size, optimizer=optimizer,
                         retain_multiplier=retain_multiplier)


def dm_direct(*, multiplier: float = 1.0,   # reference `dm_direct`: multiplier=1.0
              num_models: int = NUM_MODELS, subset_fraction: float = 0.5,
              proj_dim: int = 2048, lam: float = 0.0, chunk_size: int = 64,
              ensemble_optimizer: str = ENSEMBLE_OPTIMIZER,
              ensemble_learning_rate: float = ENSEMBLE_LEARNING_RATE,
              ensemble_batch_size: int = ENSEMBLE_BATCH_SIZE,
              ensemble_epochs: int = ENSEMBLE_EPOCHS) -> Method:
  """The predicted oracle f̂ itself: variables {'model', 'members', 'tangents'}."""
  kwargs = _attribution_kwargs(num_models, subset_fraction, proj_dim, lam, chunk_size,
                               ensemble_optimizer, ensemble_learning_rate,
                               ensemble_batch_size, ensemble_epochs)

  def prepare(ctx, variables):
    attribution = forget_attribution(ctx, **kwargs)
    return {'model': variables, 'members': attribution.members,
            'tangents': attribution.tangents}

  def update(task, state, batch):
    del task, batch
    return state, {'loss': jnp.zeros(())}

  return Method(prepare, update, lambda s: s, Stream('none'),
                make_apply=lambda task: predicted_oracle_apply(task, multiplier),
                requires=(CLASS_LABELS,))
