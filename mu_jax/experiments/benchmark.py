"""Run unlearning methods on a setting and compare them with the oracle.

`run_benchmark(config, workdir)` is what `experiments/benchmark.py` and the
Colab quickstart call: it trains or loads the original and the oracle, runs
every method in `config.methods`, and writes results.{md,csv,json} and one
JSON per run into the request's results folder (workdir/results/<forget>/);
trained models are cached under workdir/models/ and shared by all requests.
"""
import json
import math
import os

from absl import logging

from mu_jax.experiments import config_lib
from mu_jax.errors import NonFiniteError
from mu_jax.evaluation import avg_gap, table_columns
from mu_jax.experiments.results import atomic_write, write_results
from mu_jax.methods import Context, create_method, run_method
from mu_jax.tasks import TASKS
from mu_jax.experiments.setting import Setting, evaluate_on_setting, prepare_setting


def request_context(setting: Setting, cache_dir: str | None = None) -> Context:
  """The unlearning request of a setting; statistics cached beside the original by default."""
  return Context(setting.task, setting.forget, setting.retain, setting.mesh, setting.config.seed,
                 cache_dir=cache_dir or os.path.join(setting.original.directory, 'statistics'))


def unlearn(setting: Setting, name: str, ctx: Context | None = None):
  """Runs method `name` (with the config's overrides) on the original model."""
  method = create_method(name, **config_lib.method_hparams(setting.config, name))
  return run_method(method, setting.original.variables, ctx or request_context(setting), name)


def _row(task, name: str, metrics: dict, oracle: dict, seconds: float,
         speed_up: float) -> dict:
  return {'method': name, **metrics, 'Avg. Gap': avg_gap(metrics, oracle, task.gap_metrics),
          'seconds': seconds, 'speed-up': speed_up}


def unlearn_and_evaluate(setting: Setting, name: str, oracle_metrics: dict) -> dict:
  """One table row for method `name`; also written to runs/<name>.json."""
  out = unlearn(setting, name)
  metrics = evaluate_on_setting(setting, out.variables, out.task)
  row = _row(setting.task, name, metrics, oracle_metrics, out.seconds,
             setting.oracle.train_seconds / out.seconds)
  row.update(steps=out.steps, **out.info)
  record = {'row': row, 'hparams': config_lib.method_hparams(setting.config, name),
            'forget': setting.config.forget, 'forget_indices': 'forget_indices.npy'}
  atomic_write(os.path.join(setting.results_dir, 'runs', f'{name}.json'),
               json.dumps(record, indent=2) + '\n')
  logging.info('%s: %s', name, {k: round(v, 2) for k, v in metrics.items()})
  return row


def columns(config) -> tuple[str, ...]:
  """The results table's columns for the config's task."""
  return table_columns(TASKS.get(config.task))


def run_benchmark(config, workdir: str) -> list[dict]:
  """Original, retrain and every method of `config.methods`, as table rows."""
  TASKS.get(config.task)              # fail on a bad name before any training
  for name in config_lib.method_names(config):
    create_method(name, **config_lib.method_hparams(config, name))
  setting = prepare_setting(config, workdir)
  oracle = evaluate_on_setting(setting, setting.oracle.variables)
  rows = [
      _row(setting.task, 'original', evaluate_on_setting(setting, setting.original.variables),
           oracle, setting.original.train_seconds, math.nan),
      _row(setting.task, 'retrain', oracle, oracle, setting.oracle.train_seconds, 1.0),
  ]
  for name in config_lib.method_names(config):
    try:
      rows.append(unlearn_and_evaluate(setting, name, oracle))
    except NonFiniteError as e:   # one diverging method must not sink the table
      logging.warning('%s', e)
      rows.append({'method': name, 'status': 'diverged', 'error': str(e)})
  write_results(rows, setting.results_dir, extra={
      'config': config.to_dict(), 'forget_size': int(len(setting.forget_idx)),
      'retain_size': int(len(setting.retain_idx)), 'test_size': int(len(setting.data.test)),
      'forget_indices': 'forget_indices.npy', 'columns': list(table_columns(setting.task))},
      columns=table_columns(setting.task))
  return rows
