"""The unlearning setting of a config: data, forget set, task, original and oracle.

`prepare_setting` loads the data, selects D_f, builds the task and trains (or
loads from the Orbax cache under the workdir) the original model on D and the
oracle on D_r; `evaluate_on_setting` scores any variables on its splits.
"""
import math
import os
import re
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from mu_jax import checkpoint, logs, sharding
from mu_jax.data import Dataset, Examples, load_dataset, select_forget
from mu_jax.errors import MuJaxError
from mu_jax.experiments import validation
from mu_jax.evaluation import evaluate_model
from mu_jax.models import create_model, external
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
  def request_dir(self) -> str:
    """Where this forget request's runs go, each in a folder of its own (`runs.new_run`)."""
    return os.path.join(self.workdir, 'results', request_slug(self.config.forget))


def request_slug(forget_spec: str) -> str:
  """A folder name for a forget spec: 'class:0' -> 'class-0'."""
  kind, _, value = forget_spec.partition(':')
  if kind == 'file':
    value = os.path.basename(value)
  return re.sub(r'[^A-Za-z0-9.]+', '-', f'{kind}-{value}').strip('-')


def model_recipe(config) -> dict:
  """The parts of a config that determine a trained model (its cache key).

  `model.checkpoint` is left out: it replaces the original, never changes how
  a model is trained, so the oracles of every checkpoint of one architecture
  are one cached model.
  """
  model = {k: v for k, v in config.model.to_dict().items() if k != 'checkpoint'}
  train = config.train.to_dict()
  if not train.get('microbatch'):   # whole batches: the key of every model cached before it
    train.pop('microbatch', None)
  return {'data': config.data.to_dict(), 'model': model, 'train': train, 'seed': config.seed}


def build_task(config, data: Dataset) -> Task:
  """The config's task around its model, for the data set's inputs and outputs."""
  name = config.task
  if name != data.task:
    raise MuJaxError(f'The {name} task cannot use {data.name}, a {data.task} data set; '
                     f'set task={data.task} or pick a {name} data set.')
  kwargs = config.model.kwargs.to_dict()
  if external.is_import_path(config.model.name):
    kwargs = external.fitting_kwargs(config.model.name, kwargs)
  model = create_model(config.model.name, data.outputs, **kwargs)
  return create_task(name, model, data.train['x'].shape[1:], data.outputs)


def train_or_load(config, task: Task, data: Examples, *, role: str, key_payload,
                  workdir: str, mesh, train_cfg=None, start=None, seed=None) -> Trained:
  """Returns the cached model for this recipe, training (or resuming) it if needed.

  The recipe is `config.train` and the seed `config.seed` unless `train_cfg` or
  `seed` is given; `start` are variables to fine-tune (`train.train_model`).
  `key_payload` must determine all of them.

  Its training curves go to `logs/` beside the checkpoint (`mu_jax.logs`). The
  store holds the model's lock throughout: another process that needs the
  same model waits, then loads it (`mu_jax.locks`).
  """
  directory = os.path.join(workdir, 'models', f'{role}-{checkpoint.config_key(key_payload)}')
  store = checkpoint.CheckpointStore(directory)
  try:
    with logs.writing_to(os.path.join(directory, 'logs')):
      trained = train_model(task, train_cfg or config.train, data,
                            seed=config.seed if seed is None else seed, mesh=mesh,
                            store=store, name=role, start=start)
  finally:
    store.close()
  return trained._replace(directory=directory)


def load_original(path: str, task: Task, *, seed: int, key_payload, workdir: str) -> Trained:
  """The original model trained outside mu_jax, from its variables at `path`.

  It was not trained here: its train_seconds are NaN ('—' in the tables; the
  speed-up column divides by the oracle's time only) and its epochs 0. The
  statistics methods cache beside it go to a folder keyed by its weights, so
  a file rewritten in place never reuses another model's.
  """
  variables = checkpoint.load_variables(path, task.init(jax.random.PRNGKey(seed)))
  weights = jax.tree.leaves(sharding.to_host(variables))
  key = checkpoint.config_key(dict(key_payload, weights=weights))
  logging.info('original: the variables in %s (not trained here)', path)
  return Trained(variables, math.nan, 0, os.path.join(workdir, 'models', f'original-{key}'))


def prepare_setting(config, workdir: str,
                    check: Callable[[Task], None] | None = None) -> Setting:
  """Loads data, selects D_f, and trains or loads the original and the oracle.

  With `config.model.checkpoint` set, the original is the model saved there
  (trained elsewhere); the oracle is still trained on D_r with the config's recipe.
  `check(task)` runs before any training, to refuse what cannot run on the task.
  """
  validation.check_config(config)
  if config.task == 'language_model':
    raise MuJaxError('A language-model config runs with `mu-jax benchmark` (its target, retain '
                     'models and methods) or `mu-jax unlearn`; this command is for the '
                     'image and regression tasks.')
  mesh = sharding.make_mesh(config.mesh)
  data = load_dataset(config.data.source, data_dir=config.data.data_dir or None,
                      seed=config.seed, val_fraction=config.data.val_fraction,
                      test_fraction=config.data.test_fraction)
  task = build_task(config, data)
  if check is not None:
    check(task)
  num_classes = data.outputs if data.task == 'classification' else 0
  forget_idx = select_forget(config.forget, data.train['y'], num_classes, config.seed,
                             data.train['x'])
  retain_idx = np.setdiff1d(np.arange(len(data.train)), forget_idx)
  recipe = model_recipe(config)
  if config.model.checkpoint:
    original = load_original(config.model.checkpoint, task, seed=config.seed,
                             key_payload=recipe, workdir=workdir)
  else:
    original = train_or_load(config, task, data.train, role='original',
                             key_payload=recipe, workdir=workdir, mesh=mesh)
  retain = data.train.take(retain_idx)
  forget = data.train.take(forget_idx)
  oracle = train_or_load(config, task, retain, role='oracle',
                         key_payload=dict(recipe, forget=forget_idx), workdir=workdir,
                         mesh=mesh)
  return Setting(config, workdir, data, task, mesh, forget_idx, retain_idx, forget, retain,
                 original, oracle)


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
      mia_max_per_side=cfg.mia_max_per_side, mia_members=cfg.mia_members)


def train_and_evaluate(config, workdir: str) -> dict[str, dict[str, float]]:
  """Trains (or loads) the original model and the oracle and evaluates both."""
  setting = prepare_setting(config, workdir)
  return {'original': evaluate_on_setting(setting, setting.original.variables),
          'retrain': evaluate_on_setting(setting, setting.oracle.variables)}
