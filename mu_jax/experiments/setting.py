"""The unlearning setting of a config: data, forget set, task, original and oracle.

`prepare_setting` loads the data, selects D_f, builds the task and trains (or
loads from the Orbax cache under the workdir) the original model on D and the
oracle on D_r; `evaluate_on_setting` scores any variables on its splits.
"""
import os
import re
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from mu_jax import checkpoint, sharding
from mu_jax.data import Dataset, Examples, load_dataset, save_indices, select_forget
from mu_jax.errors import MuJaxError
from mu_jax.evaluation import evaluate_model
from mu_jax.models import create_model
from mu_jax.tasks import Task, create_task
from mu_jax.train import Trained, train_model


class Setting(NamedTuple):
  """Everything an unlearning experiment needs, built once per config."""
  config: ml_collections.ConfigDict
  workdir: str
  data: Dataset
  task: Task
  mesh: Any
  forget_idx: np.ndarray
  retain_idx: np.ndarray
  forget: Examples     # D_f: the training rows at forget_idx
  retain: Examples     # D_r: the training rows at retain_idx
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


def build_task(config, data: Dataset) -> Task:
  """The config's task around its model, for the data set's inputs and outputs."""
  name = config.task
  if name != data.task:
    raise MuJaxError(f'The {name} task cannot use {data.name}, a {data.task} data set; '
                     f'set task={data.task} or pick a {name} data set.')
  model = create_model(config.model.name, data.outputs, **config.model.kwargs.to_dict())
  return create_task(name, model, data.train['x'].shape[1:], data.outputs)


def train_or_load(config, task: Task, data: Examples, *, role: str, key_payload,
                  workdir: str, mesh) -> Trained:
  """Returns the cached model for this recipe, training (or resuming) it if needed."""
  directory = os.path.join(workdir, 'models', f'{role}-{checkpoint.config_key(key_payload)}')
  store = checkpoint.CheckpointStore(directory)
  try:
    trained = train_model(task, config.train, data, seed=config.seed, mesh=mesh,
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
  task = build_task(config, data)
  num_classes = data.outputs if data.task == 'classification' else 0
  forget_idx = select_forget(config.forget, data.train['y'], num_classes, config.seed)
  retain_idx = np.setdiff1d(np.arange(len(data.train)), forget_idx)
  recipe = model_recipe(config)
  original = train_or_load(config, task, data.train, role='original',
                           key_payload=recipe, workdir=workdir, mesh=mesh)
  retain = data.train.take(retain_idx)
  forget = data.train.take(forget_idx)
  oracle = train_or_load(config, task, retain, role='oracle',
                         key_payload=dict(recipe, forget=forget_idx), workdir=workdir,
                         mesh=mesh)
  setting = Setting(config, workdir, data, task, mesh, forget_idx, retain_idx, forget, retain,
                    original, oracle)
  if sharding.is_primary():   # multi-host: one process writes files
    save_indices(os.path.join(setting.results_dir, 'forget_indices.npy'), forget_idx)
  return setting


def evaluate_on_setting(setting: Setting, variables, task: Task | None = None) -> dict[str, float]:
  """The task's metrics (e.g. FA/UA, RA, TA, MIA) of `variables` on this setting's splits.

  `task` defaults to the setting's; methods that change the architecture
  pass theirs (`Unlearned.task`).
  """
  cfg = setting.config.eval
  return evaluate_model(
      task or setting.task, variables,
      {'forget': setting.forget, 'retain': setting.retain, 'test': setting.data.test},
      mesh=setting.mesh, batch_size=cfg.batch_size, seed=setting.config.seed,
      mia_max_per_side=cfg.mia_max_per_side)


def train_and_evaluate(config, workdir: str) -> dict[str, dict[str, float]]:
  """Trains (or loads) the original model and the oracle and evaluates both."""
  setting = prepare_setting(config, workdir)
  return {'original': evaluate_on_setting(setting, setting.original.variables),
          'retrain': evaluate_on_setting(setting, setting.oracle.variables)}
