"""Training the original model on D and the oracle on D_r, resumably and sharded.

`train_model` is a Python epoch loop around one pure, jitted train step with
declared shardings (batch split over the mesh's 'data' axis, state replicated
or, for large leaves, split over 'model'; see `mu_jax.sharding`). The step
donates the state it replaces, sums the epoch's statistics on device, and is
traced once per run: the loop does no implicit host transfers (batches are
placed with an explicit device_put; statistics are fetched once per epoch).
It checkpoints through `CheckpointStore` so a killed run resumes from its last
finished epoch and a finished run is loaded, not retrained.
`prepare_setting` / `train_and_evaluate` build the whole unlearning setting
(data, forget set, original, oracle) that methods and metrics work on.
"""
import os
import re
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from mu_jax import checkpoint, sharding
from mu_jax.data import Dataset, Split, load_dataset, save_indices, select_forget
from mu_jax.data.batching import epoch_batches, num_batches
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.evaluation import evaluate_model
from mu_jax.models import Model, create_model, merge_variables, split_variables
from mu_jax.optim import (
    batch_stats, gradient_norm_sum, make_optimizer, weighted_cross_entropy)


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any


class Trained(NamedTuple):
  variables: dict
  train_seconds: float   # wall time of all epochs, summed over resumed runs
  epochs: int
  directory: str = ''    # its checkpoint folder; statistics of it may be cached beside


def optimizer_from_config(train_cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  return make_optimizer(
      train_cfg.optimizer, train_cfg.learning_rate,
      total_steps=steps_per_epoch * train_cfg.epochs,
      momentum=train_cfg.momentum, weight_decay=train_cfg.weight_decay,
      schedule=train_cfg.schedule)


def make_train_step(apply_fn: Callable, tx: optax.GradientTransformation,
                    gradient_restriction: float = 0.0):
  """One pure SGD-family step on a weighted batch {'x', 'y', 'w'}.

  With `gradient_restriction` α > 0 the objective is IAU's GR loss
  ℓ + α·Σ_tensors ‖∇_θ ℓ‖₂, differentiated through (double backprop), which
  trains an "IAU-ready" model; the returned stats are those of ℓ alone.
  """

  def loss_fn(params, model_state, batch):
    logits, new_model_state = apply_fn(merge_variables(params, model_state), batch['x'], True)
    loss = weighted_cross_entropy(logits, batch['y'], batch['w'])
    return loss, (loss, logits, new_model_state)

  def restricted_loss_fn(params, model_state, batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, model_state, batch)
    return loss + gradient_restriction * gradient_norm_sum(grads), aux

  objective = restricted_loss_fn if gradient_restriction else loss_fn

  def step(state: TrainState, batch):
    (_, (loss, logits, new_model_state)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params, state.model_state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = new_model_state or state.model_state
    new_state = TrainState(state.step + 1, params, model_state, opt_state)
    return new_state, batch_stats(logits, batch['y'], batch['w'], loss)

  return step


def _summing_stats(step: Callable) -> Callable:
  """(state, totals, batch) -> (state, totals + the step's batch statistics)."""

  def run(state, totals, batch):
    state, stats = step(state, batch)
    return state, jax.tree.map(jnp.add, totals, stats)

  return run


def zero_stats(mesh) -> dict[str, jax.Array]:
  """Replicated zero sums for `sharded_training`'s step to add a batch's statistics to."""
  return sharding.replicate({k: np.zeros((), np.float32)
                             for k in ('loss_sum', 'correct', 'count')}, mesh)


def init_state(model: Model, tx, sample_x: np.ndarray, seed: int) -> TrainState:
  variables = model.init(jax.random.PRNGKey(seed), jnp.asarray(sample_x[:1]))
  params, model_state = split_variables(variables)
  return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))


def sharded_training(model: Model, train_cfg, steps_per_epoch: int, sample_x: np.ndarray, *,
                     seed: int, mesh) -> tuple[TrainState, Callable]:
  """The initial state, placed with its shardings, and the jitted step.

  step(state, totals, batch) -> (state, totals + batch statistics) takes a
  batch split over 'data' (`sharding.shard_batch`), donates the state and
  totals it replaces, and keeps the state's shardings (`sharding.state_sharding`).
  The state is initialized by one jitted call straight into those shardings,
  so a state split over 'model' is never whole on one device.
  """
  tx = optimizer_from_config(train_cfg, steps_per_epoch)
  init = lambda seed_, sample: init_state(model, tx, sample, seed_)
  seed_, sample = sharding.replicate((np.uint32(seed), sample_x[:1]), mesh)
  state_shardings = sharding.state_sharding(jax.eval_shape(init, seed_, sample), mesh)
  state = jax.jit(init, out_shardings=state_shardings)(seed_, sample)
  step = jax.jit(
      _summing_stats(make_train_step(model.apply, tx,
                                     train_cfg.get('gradient_restriction', 0.0))),
      in_shardings=(state_shardings, sharding.replicated(mesh), sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0, 1))
  return state, step


def train_model(model: Model, train_cfg, data: Split, *, seed: int,
                mesh, store: checkpoint.CheckpointStore | None = None,
                name: str = 'model') -> Trained:
  """Trains `model` on `data` with the recipe `train_cfg`, resuming from `store`."""
  if len(data.y) == 0:
    raise MuJaxError(f'Cannot train the {name}: its training set is empty.')
  sharding.check_batch_size(train_cfg.batch_size, mesh)
  steps = num_batches(len(data.y), train_cfg.batch_size)
  state, step_fn = sharded_training(model, train_cfg, steps, data.x, seed=seed, mesh=mesh)
  start, seconds = 0, 0.0
  if store is not None and store.latest_step() is not None:
    state, meta = store.restore(store.latest_step(), state)
    start, seconds = meta['epoch'], meta['train_seconds']
    if start:
      logging.info('%s: resuming after epoch %d from %s', name, start, store.directory)
  arrays = {'x': data.x, 'y': data.y}
  for epoch in range(start, train_cfg.epochs):
    began = time.perf_counter()
    totals = zero_stats(mesh)
    batches = epoch_batches(arrays, train_cfg.batch_size, seed=seed, epoch=epoch)
    for batch in tqdm(batches, total=steps, leave=False, disable=not sys.stderr.isatty(),
                      desc=f'{name} epoch {epoch + 1}/{train_cfg.epochs}'):
      state, totals = sharding.pace(step_fn(state, totals, sharding.shard_batch(batch, mesh)),
                                    mesh)
    totals = sharding.to_host(totals)
    seconds += time.perf_counter() - began
    loss = float(totals['loss_sum'] / totals['count'])
    if not np.isfinite(loss):
      raise NonFiniteError(
          f'The {name} reached a non-finite training loss in epoch {epoch + 1}; '
          'lower the learning rate (nothing was saved for this epoch).')
    logging.info('%s epoch %d/%d: loss %.4f, train acc %.2f%% (%.1fs)', name,
                 epoch + 1, train_cfg.epochs, loss,
                 100 * totals['correct'] / totals['count'], time.perf_counter() - began)
    last = epoch + 1 == train_cfg.epochs
    if store is not None and (last or (epoch + 1) % train_cfg.checkpoint_every == 0):
      store.save(epoch + 1, state, {'epoch': epoch + 1, 'train_seconds': seconds,
                                    'complete': last})
  variables = merge_variables(state.params, state.model_state)
  return Trained(variables, seconds, train_cfg.epochs)


class Setting(NamedTuple):
  """Everything an unlearning experiment needs, built once per config."""
  config: ml_collections.ConfigDict
  workdir: str
  data: Dataset
  model: Model
  mesh: Any
  forget_idx: np.ndarray
  retain_idx: np.ndarray
  forget: Split        # D_f: the training rows at forget_idx
  retain: Split        # D_r: the training rows at retain_idx
  original: Trained
  oracle: Trained

  @property
  def results_dir(self) -> str:
    """Where this forget request's indices and results go: one folder per request."""
    return os.path.join(self.workdir, 'results', request_slug(self.config.forget))



def request_slug(forget_spec: str) -> str:
  """A folder name for a forget spec: 'class:0' -> 'class-0'."""
  kind, _, value = forget_spec.partition(':')
  if kind == 'file':
    value = os.path.basename(value)
  return re.sub(r'[^A-Za-z0-9.]+', '-', f'{kind}-{value}').strip('-')


def model_recipe(config) -> dict:
  """The parts of a config that determine a trained model (its cache key)."""
  return {'data': config.data.to_dict(), 'model': config.model.to_dict(),
          'train': config.train.to_dict(), 'seed': config.seed}


def build_model(config, num_classes: int) -> Model:
  return create_model(config.model.name, num_classes, **config.model.kwargs.to_dict())


def train_or_load(config, model: Model, data: Split, *, role: str, key_payload,
                  workdir: str, mesh) -> Trained:
  """Returns the cached model for this recipe, training (or resuming) it if needed."""
  directory = os.path.join(workdir, 'models', f'{role}-{checkpoint.config_key(key_payload)}')
  store = checkpoint.CheckpointStore(directory)
  try:
    trained = train_model(model, config.train, data, seed=config.seed, mesh=mesh,
                          store=store, name=role)
  finally:
    store.close()
  return trained._replace(directory=directory)


def prepare_setting(config, workdir: str) -> Setting:
  """Loads data, selects D_f, and trains or loads the original and the oracle."""
  mesh = sharding.make_mesh(config.mesh)
  data = load_dataset(config.data.source, data_dir=config.data.data_dir or None,
                      seed=config.seed, val_fraction=config.data.val_fraction,
                      test_fraction=config.data.test_fraction)
  forget_idx = select_forget(config.forget, data.train.y, data.num_classes, config.seed)
  retain_idx = np.setdiff1d(np.arange(len(data.train.y)), forget_idx)
  model = build_model(config, data.num_classes)
  recipe = model_recipe(config)
  original = train_or_load(config, model, data.train, role='original',
                           key_payload=recipe, workdir=workdir, mesh=mesh)
  retain = Split(data.train.x[retain_idx], data.train.y[retain_idx])
  forget = Split(data.train.x[forget_idx], data.train.y[forget_idx])
  oracle = train_or_load(config, model, retain, role='oracle',
                         key_payload=dict(recipe, forget=forget_idx), workdir=workdir,
                         mesh=mesh)
  setting = Setting(config, workdir, data, model, mesh, forget_idx, retain_idx, forget, retain,
                    original, oracle)
  if sharding.is_primary():   # multi-host: one process writes files
    save_indices(os.path.join(setting.results_dir, 'forget_indices.npy'), forget_idx)
  return setting


def evaluate_on_setting(setting: Setting, variables, apply_fn=None) -> dict[str, float]:
  """FA/UA, RA, TA and MIA-efficacy of `variables` on this setting's splits.

  `apply_fn` defaults to the setting's model; methods that change the
  architecture pass their own.
  """
  cfg = setting.config.eval
  return evaluate_model(
      apply_fn or setting.model.apply, variables,
      {'forget': setting.forget, 'retain': setting.retain, 'test': setting.data.test},
      mesh=setting.mesh, batch_size=cfg.batch_size, seed=setting.config.seed,
      mia_max_per_side=cfg.mia_max_per_side)


def train_and_evaluate(config, workdir: str) -> dict[str, dict[str, float]]:
  """Trains (or loads) the original model and the oracle and evaluates both."""
  setting = prepare_setting(config, workdir)
  return {'original': evaluate_on_setting(setting, setting.original.variables),
          'retrain': evaluate_on_setting(setting, setting.oracle.variables)}
