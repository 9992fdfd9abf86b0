"""Run unlearning methods on a setting and compare them with the oracle.

`run_benchmark(config, workdir)` is what `mu-jax benchmark` and the Colab
quickstart call (a language-model config goes to `mu_jax.experiments.lm.benchmark`): it trains or loads the original and the oracle, runs every
method in `config.methods`, and writes a run folder
(workdir/results/<forget>/<run id>/, see `runs`) with results.{md,csv,json},
the forget indices, one JSON per method and the methods' loss curves; trained
models are cached under workdir/models/ and shared by all requests.
"""
import json
import math
import os
import time
from typing import Sequence

from absl import logging

from mu_jax.experiments import config_lib
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.evaluation import avg_gap, mia_note, table_columns
from mu_jax import logs
from mu_jax.data import save_indices
from mu_jax.experiments import runs, validation
from mu_jax.experiments.lm import benchmark as lm_benchmark
from mu_jax.experiments.lm import restor, sequential, trajectory
from mu_jax.experiments.results import atomic_write, mark_chance, write_results
from mu_jax.methods import Context, create_method, run_method
from mu_jax.tasks import TASKS, LanguageModel
from mu_jax.experiments.setting import Setting, evaluate_on_setting, prepare_setting


def request_context(setting: Setting, cache_dir: str | None = None) -> Context:
  """The unlearning request of a setting; statistics cached beside the original by default."""
  return Context(setting.task, setting.forget, setting.retain, setting.mesh, setting.config.seed,
                 cache_dir=cache_dir or os.path.join(setting.original.directory, 'statistics'),
                 forget_ids=setting.forget_idx, retain_ids=setting.retain_idx)


def unlearn(setting: Setting, name: str, ctx: Context | None = None):
  """Runs method `name` (with the config's overrides) on the original model."""
  method = create_method(name, **config_lib.method_hparams(setting.config, name))
  return run_method(method, setting.original.variables, ctx or request_context(setting), name)


def _row(task, name: str, metrics: dict, oracle: dict, seconds: float,
         speed_up: float) -> dict:
  return {'method': name, **metrics, 'Avg. Gap': avg_gap(metrics, oracle, task.gap_metrics),
          'seconds': seconds, 'speed-up': speed_up}


def unlearn_and_evaluate(setting: Setting, name: str, oracle_metrics: dict,
                         run_dir: str) -> dict:
  """One table row for method `name`; also written to <run_dir>/runs/<name>.json, with the
  method's loss curve in <run_dir>/logs/<name>/."""
  with logs.writing_to(os.path.join(run_dir, 'logs', name)):
    out = unlearn(setting, name)
  metrics = evaluate_on_setting(setting, out.variables, out.task)
  row = _row(setting.task, name, metrics, oracle_metrics, out.seconds,
             setting.oracle.train_seconds / out.seconds)
  row.update(steps=out.steps, **out.info)
  record = {'row': row, 'hparams': config_lib.method_hparams(setting.config, name),
            'forget': setting.config.forget, 'forget_indices': 'forget_indices.npy'}
  atomic_write(os.path.join(run_dir, 'runs', f'{name}.json'), json.dumps(record, indent=2) + '\n')
  logging.info('%s: %s', name, {k: round(v, 2) for k, v in metrics.items()})
  return row


def write_run(setting: Setting, rows: list[dict], run_dir: str, started: float) -> None:
  """The run's tables, forget indices and provenance into its folder."""
  save_indices(os.path.join(run_dir, 'forget_indices.npy'), setting.forget_idx)
  write_results(rows, run_dir, extra={
      'kind': 'benchmark', 'config': setting.config.to_dict(),
      'forget_size': int(len(setting.forget_idx)), 'retain_size': int(len(setting.retain_idx)),
      'test_size': int(len(setting.data.test)), 'forget_indices': 'forget_indices.npy',
      'forget_indices_sha256': runs.indices_hash(setting.forget_idx),
      'columns': list(table_columns(setting.task)), 'provenance': runs.provenance(started)},
      columns=table_columns(setting.task), note=mia_note(setting.config.eval))


def columns(config) -> tuple[str, ...]:
  """The results table's columns for the config's task."""
  if config.task == LanguageModel.name:
    if config.lm.restor:
      return restor.COLUMNS
    if config.lm.trajectory:
      return trajectory.COLUMNS
    return sequential.COLUMNS if config.lm.sequential else lm_benchmark.COLUMNS
  return table_columns(TASKS.get(config.task))


def run_benchmark(config, workdir: str, methods: Sequence[str] | None = None) -> dict:
  """Original, retrain and every method of `methods` (default: `config.methods`) as rows.

  Returns {'rows': the rows, 'directory': the run folder they were written to}.
  """
  if config.task == LanguageModel.name:
    chosen = [k for k in ('sequential', 'trajectory', 'restor') if config.lm[k]]
    if len(chosen) > 1:
      raise MuJaxError(f'lm.{chosen[0]} and lm.{chosen[1]} are two different runs; set one '
                       'of them.')
    if config.lm.restor:
      return restor.run_restor(config, workdir, methods)
    if config.lm.trajectory:
      return trajectory.run_trajectory(config, workdir, methods)
    if config.lm.sequential:
      return sequential.run_sequential(config, workdir, methods)
    return lm_benchmark.run_lm_benchmark(config, workdir, methods)
  started = time.time()
  validation.check_config(config)
  methods = config_lib.method_names(config) if methods is None else list(methods)
  setting = prepare_setting(config, workdir, config_lib.capability_check(config, methods))
  oracle = evaluate_on_setting(setting, setting.oracle.variables)
  rows = [
      _row(setting.task, 'original', evaluate_on_setting(setting, setting.original.variables),
           oracle, setting.original.train_seconds, math.nan),
      _row(setting.task, 'retrain', oracle, oracle, setting.oracle.train_seconds, 1.0),
  ]
  with runs.new_run(setting.request_dir, config) as run:
    for name in methods:
      try:
        rows.append(unlearn_and_evaluate(setting, name, oracle, run.path))
      except NonFiniteError as e:   # one diverging method must not sink the table
        logging.warning('%s', e)
        rows.append({'method': name, 'status': 'diverged', 'error': str(e)})
    mark_chance(rows, setting.task, setting.data.test)
    write_run(setting, rows, run.path, started)
  return {'rows': rows, 'directory': run.path}
