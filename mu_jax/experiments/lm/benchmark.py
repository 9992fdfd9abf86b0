"""The language-model benchmark: base, target and retain models, methods, and the LM suite.

As TOFU builds its setting: a base model (here pre-trained from scratch on the
corpus's world knowledge and generic prose), a *target* fine-tuned from it on
every trained author's QA and passages, and a *retain* model (the oracle)
fine-tuned from the same base with the same recipe on the retain authors
only; `lm.retain_seeds` > 1 adds retain models with other data-order seeds,
whose forget quality against the first shows the metric's noise floor. All
are cached under <workdir>/models/, keyed by everything that shapes them, and
resume after an interruption. Each method of `config.methods` unlearns the
target through the same driver as on images (`mu_jax.methods.run_method`).
Rows are written like the image benchmarks' (results.{md,csv,json} in
<workdir>/results/<split>/<run id>/), so `mu-jax report` pages them.
"""
import json
import math
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from mu_jax import sharding
from mu_jax.data import save_indices
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.experiments import config_lib, runs, validation
from mu_jax.experiments.lm import forms, relearn, suite
from mu_jax.experiments.lm.config import private_recipe
from mu_jax.experiments.lm.data import LMData, corpus_key, load_lm_data
from mu_jax.experiments.results import atomic_write, write_results
from mu_jax.experiments.setting import model_recipe, train_or_load
from mu_jax.methods import PRIVATE, Context, create_method, method_defaults, run_method, ssd
from mu_jax.models import Model, create_model
from mu_jax.privacy import dp_sgd
from mu_jax.tasks import Task, create_task
from mu_jax.train import Trained, private_plan

COLUMNS = ('method', *suite.COLUMNS, *relearn.COLUMNS, *forms.COLUMNS, 'seconds', 'speed-up')


class LMSetting(NamedTuple):
  config: object
  workdir: str
  data: LMData
  task: Task
  mesh: object
  base: Trained
  target: Trained
  retain: list[Trained]
  tuned_key: dict   # what shapes every model fine-tuned from the base, but its data and seed

  @property
  def request_dir(self) -> str:
    return os.path.join(self.workdir, 'results', self.config.forget)


def build_task(config, data: LMData, model: Model | None = None,
               context: int | None = None) -> Task:
  """The config's transformer over the tokenizer's vocabulary, for rows of its context;
  or `model` (e.g. `mu_jax.models.gemma.gemma_model`) with its `context`."""
  kwargs = config.model.kwargs.to_dict()
  if model is None:
    model = create_model(config.model.name, data.tokenizer.vocab_size, **kwargs)
    context = kwargs.get('max_len', data.length)
  context = context or data.length
  if data.length > context:
    raise MuJaxError(f'The corpus needs rows of {data.length} tokens, longer than the '
                     f"model's context of {context}; raise config.model.kwargs.max_len.")
  return create_task(config.task, model, (context,), data.tokenizer.vocab_size)


def prepare_lm_setting(config, workdir: str, check=None, *, model: Model | None = None,
                       context: int | None = None, tokenizer=None,
                       base: dict | None = None) -> LMSetting:
  """Generates the data, then trains or loads the base, the target and the retain models.

  A real LLM replaces the transformer: `model` (its `Model`, with its `context`),
  `tokenizer` (its own) and `base` (its pre-trained variables, fine-tuned instead of
  pre-training one here; its models are keyed by its weights).
  """
  validation.check_config(config)
  mesh = sharding.make_mesh(config.mesh)
  data = load_lm_data(config, workdir, tokenizer)
  task = build_task(config, data, model, context)
  if check is not None:
    check(task)
  check_vocabulary(task, data.tokenizer)
  recipe = model_recipe(config)
  base_key = {'corpus': corpus_key(config.data), 'model': recipe['model'],
              'pretrain': config.pretrain.to_dict(), 'seed': config.seed}
  if base is None:
    base = train_or_load(config, task, data.pretrain, role='base', key_payload=base_key,
                         workdir=workdir, mesh=mesh, train_cfg=config.pretrain)
  else:
    base_key = {'corpus': corpus_key(config.data), 'tokenizer': data.tokenizer.path,
                'weights': jax.tree.leaves(sharding.to_host(base))}
    base = Trained(base, math.nan, 0)
  tuned = dict(base_key, train=recipe['train'])

  def finetune(role, rows, seed, **key):
    return train_or_load(config, task, rows, role=role, key_payload=dict(tuned, seed=seed, **key),
                         workdir=workdir, mesh=mesh, start=base.variables, seed=seed)

  target = finetune('target', data.train, config.seed)
  retain = [finetune('retain', data.train.take(data.retain_idx), config.seed + i,
                     forget=config.forget) for i in range(config.lm.retain_seeds)]
  return LMSetting(config, workdir, data, task, mesh, base, target, retain, tuned)


def private_original(setting: LMSetting) -> Trained:
  """DP2Unlearning's private model: the base fine-tuned on every trained row by DP-SGD
  (`lm_config.private_recipe`), cached beside the target."""
  config = setting.config
  recipe = private_recipe(config)
  return train_or_load(config, setting.task, setting.data.train, role='private',
                       key_payload=dict(setting.tuned_key, train=recipe.to_dict(),
                                        seed=config.seed),
                       workdir=setting.workdir, mesh=setting.mesh, train_cfg=recipe,
                       start=setting.base.variables)


def privacy_spent(setting: LMSetting) -> dict:
  """{'epsilon', 'delta', 'noise multiplier'} of the private model's training."""
  recipe = private_recipe(setting.config)
  plan = private_plan(recipe, len(setting.data.train))
  steps = plan.steps_per_epoch * recipe.epochs
  return {'epsilon': dp_sgd.epsilon_spent(plan.privacy, plan.sample_rate, steps,
                                          recipe.dp_delta),
          'delta': recipe.dp_delta, 'noise multiplier': plan.privacy.noise_multiplier}


def check_vocabulary(task: Task, tokenizer) -> None:
  """Refuses a model whose output vocabulary is not the tokenizer's."""
  logits = jax.eval_shape(lambda: task.apply(task.init(jax.random.PRNGKey(0)),
                                             {'x': jnp.zeros((1, 8), jnp.int32)}, False)[0])
  if logits.shape[-1] != tokenizer.vocab_size:
    raise MuJaxError(f'The model predicts {logits.shape[-1]} token ids but the tokenizer '
                     f'{tokenizer.path} has {tokenizer.vocab_size}; use the tokenizer the '
                     'model was trained with.')


def request_context(setting: LMSetting) -> Context:
  data = setting.data
  return Context(setting.task, data.request(data.forget_idx), data.request(data.retain_idx),
                 setting.mesh, setting.config.seed,
                 cache_dir=os.path.join(setting.target.directory, 'statistics'),
                 forget_ids=data.forget_idx, retain_ids=data.retain_idx,
                 holdout=data.suite.holdout)


def ssd_alpha(setting: LMSetting, ctx: Context, hparams: dict, batch_size: int) -> dict:
  """SSD's α for this request by `ssd.select_alpha`, holding out whole forget authors: the
  largest α whose held-out authors' token accuracy falls to the original model's on the
  never-trained authors (an oracle's on authors it never saw; the original stands in, as
  in `mu-jax ssd-alpha`), with retain accuracy within 1 point. {'alpha' (nan: no α did,
  and SSD keeps its configured one), 'alpha target', 'alpha trials', 'alpha seconds'}."""
  began, data = time.perf_counter(), setting.data
  target = ssd.accuracy(ctx._replace(forget=data.suite.holdout), setting.target.variables,
                        'forget', batch_size)
  chosen = ssd.select_alpha(
      setting.target.variables, ctx, target_forget_acc=target,
      dampening_constant=hparams['dampening_constant'], estimator=hparams['estimator'],
      layers=hparams['layers'], order=hparams['order'], batch_size=hparams['batch_size'],
      groups=data.owner[data.forget_idx])
  logging.info('SSD alpha selection (target %.2f%%): %s', target, chosen.trials)
  return {'alpha': float('nan') if chosen.alpha is None else chosen.alpha,
          'alpha target': target, 'alpha trials': len(chosen.trials),
          'alpha seconds': time.perf_counter() - began}


def run_lm_benchmark(config, workdir: str, methods=None, **replacements) -> dict:
  """Target, retain model(s) and every method of `methods` (default `config.methods`) as rows
  of the LM suite; returns {'rows', 'directory'}. `replacements` (model, context,
  tokenizer, base) run it on another LLM (`prepare_lm_setting`)."""
  started = time.time()
  methods = config_lib.method_names(config) if methods is None else list(methods)
  setting = prepare_lm_setting(
      config, workdir, config_lib.capability_check(config, methods, private=True),
      **replacements)
  data, lm = setting.data, config.lm
  evaluate = lambda variables, task=setting.task: suite.measure(
      task, variables, data.suite, data.tokenizer, batch_size=config.eval.batch_size,
      mesh=setting.mesh, k=lm.mink_k)
  reference = suite.reference_stats(setting.task, setting.base.variables, data.suite,
                                    batch_size=config.eval.batch_size, mesh=setting.mesh)
  oracle = evaluate(setting.retain[0].variables)
  split = relearn.split_forget(data.suite.forget)
  probes = forms.form_probes(data.tokenizer,
                             data.corpus.author_qas(data.corpus.forget_authors(config.forget)))

  def row(name, variables, seconds, speed_up, measured=None, task=setting.task):
    """The row of `variables`, evaluated through `task` (a method's own forward pass)."""
    measured = measured or evaluate(variables, task)
    values = suite.score(measured, data.suite, data.tokenizer, oracle=oracle,
                         reference=reference, k=lm.mink_k)
    values |= relearn.relearn_scores(task, variables, split, oracle, data.tokenizer,
                                     data.suite, config=config, mesh=setting.mesh)
    values |= forms.form_scores(task, sharding.replicate(variables, setting.mesh),
                                probes, data.tokenizer, batch_size=config.eval.batch_size,
                                mesh=setting.mesh)
    logging.info('%s: %s', name, {k: round(v, 3) for k, v in values.items() if '/' not in k})
    return {'method': name, **values, 'seconds': seconds, 'speed-up': speed_up}

  retrain_seconds = setting.retain[0].train_seconds
  rows = [row('target', setting.target.variables, setting.target.train_seconds, float('nan')),
          row('retain', setting.retain[0].variables, retrain_seconds, 1.0, measured=oracle)]
  rows += [row(f'retain (seed {config.seed + i})', m.variables, m.train_seconds, 1.0)
           for i, m in enumerate(setting.retain[1:], 1)]
  private = None
  if any(create_method(name, **config_lib.method_hparams(config, name)).start == PRIVATE
         for name in methods):
    private = private_original(setting)
    spent = privacy_spent(setting)
    rows.append(row('dp-sgd', private.variables, private.train_seconds, float('nan'))
                | spent)
  with runs.new_run(setting.request_dir, config) as run:
    ctx = request_context(setting)
    for name in methods:
      hparams, chosen = config_lib.method_hparams(config, name), {}
      if name == 'ssd' and lm.select_ssd_alpha:
        chosen = ssd_alpha(setting, ctx, {**method_defaults('ssd'), **hparams},
                           config.eval.batch_size)
        if not math.isnan(chosen['alpha']):
          hparams['selection_weighting'] = chosen['alpha']
      method = create_method(name, **hparams)
      start = setting.target.variables
      if method.start == PRIVATE:   # DP2Unlearning: from the DP-SGD model, paid for up front
        start, chosen = private.variables, {**spent, 'dp seconds': private.train_seconds}
      try:
        out = run_method(method, start, ctx, name)
      except NonFiniteError as e:   # one diverging method must not sink the table
        logging.warning('%s', e)
        rows.append({'method': name, 'status': 'diverged', 'error': str(e)})
        continue
      rows.append(row(name, out.variables, out.seconds, retrain_seconds / out.seconds,
                      task=out.task)
                  | {'steps': out.steps, **out.info, **chosen})
      record = {'row': rows[-1], 'hparams': hparams,
                'forget': config.forget, 'forget_indices': 'forget_indices.npy'}
      atomic_write(os.path.join(run.path, 'runs', f'{name}.json'),
                   json.dumps(record, indent=2, default=str) + '\n')
    save_indices(os.path.join(run.path, 'forget_indices.npy'), data.forget_idx)
    write_results(rows, run.path, columns=COLUMNS, extra={
        'kind': 'lm_benchmark', 'config': config.to_dict(), 'columns': list(COLUMNS),
        'forget_size': int(len(data.forget_idx)), 'retain_size': int(len(data.retain_idx)),
        'forget_authors': len(data.corpus.forget_authors(config.forget)),
        'row_length': data.length, 'vocab_size': data.tokenizer.vocab_size,
        'train_seconds': {'base': setting.base.train_seconds,
                          'target': setting.target.train_seconds,
                          'retain': [m.train_seconds for m in setting.retain]},
        'forget_indices': 'forget_indices.npy',
        'forget_indices_sha256': runs.indices_hash(data.forget_idx),
        'provenance': runs.provenance(started)})
  return {'rows': rows, 'directory': run.path}
