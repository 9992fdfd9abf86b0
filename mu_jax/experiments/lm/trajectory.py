"""Unlearning trajectories: forget quality and model utility after every epoch of a method.

The NPO paper's evidence that gradient ascent and gradient difference lose model utility
long before forget quality approaches the retain model's, while NPO keeps more of it, is
the path each method takes through (forget quality, model utility) as it unlearns (Zhang
et al., "Negative Preference Optimization", COLM 2024, arXiv:2404.05868, figures of TOFU
forget quality against model utility over the unlearning epochs). Here each method of
`config.methods` unlearns the benchmark's request as usual, and the model after every
epoch is scored like a row of the benchmark (forget quality against the retain model,
model utility, forget and retain ROUGE); epoch 0 is the target. `lm.trajectory=True`
turns `mu-jax benchmark` into this run (results in <workdir>/results/trajectory/). The
evaluations run inside the methods, so no seconds are reported.
"""
import os
import time

from absl import logging

from mu_jax.experiments import config_lib, runs
from mu_jax.experiments.lm import suite
from mu_jax.experiments.lm.benchmark import prepare_lm_setting, request_context
from mu_jax.experiments.results import write_results
from mu_jax.methods import create_method, run_method
from mu_jax.methods.base import result_task

SCORES = ('forget quality', 'model utility', 'F-ROUGE', 'R-ROUGE')
COLUMNS = ('method', 'epoch', *SCORES)


def run_trajectory(config, workdir: str, methods=None) -> dict:
  """Every method of `methods` (default `config.methods`), scored after each epoch; returns
  {'rows', 'directory'}."""
  started = time.time()
  methods = config_lib.method_names(config) if methods is None else list(methods)
  setting = prepare_lm_setting(config, workdir, config_lib.capability_check(config, methods))
  data, lm = setting.data, config.lm
  measure = lambda variables, task: suite.measure(
      task, variables, data.suite, data.tokenizer, batch_size=config.eval.batch_size,
      mesh=setting.mesh, k=lm.mink_k)
  oracle = measure(setting.retain[0].variables, setting.task)
  reference = suite.reference_stats(setting.task, setting.base.variables, data.suite,
                                    batch_size=config.eval.batch_size, mesh=setting.mesh)

  def scores(variables, task) -> dict:
    values = suite.score(measure(variables, task), data.suite, data.tokenizer, oracle=oracle,
                         reference=reference, k=lm.mink_k)
    return {k: values[k] for k in SCORES}

  start = scores(setting.target.variables, setting.task)
  rows, ctx = [], request_context(setting)
  for name in methods:
    method = create_method(name, **config_lib.method_hparams(config, name))
    task = result_task(method, ctx.task)

    def on_epoch(epoch, variables, name=name, task=task):
      rows.append({'method': name, 'epoch': epoch, **scores(variables, task)})
      logging.info('%s epoch %d: %s', name, epoch,
                   {k: round(v, 4) for k, v in rows[-1].items() if k in SCORES})

    rows.append({'method': name, 'epoch': 0, **start})
    run_method(method, setting.target.variables, ctx, name, on_epoch=on_epoch)
  saved = config.to_dict() | {'forget': f'{config.forget}-trajectory'}
  with runs.new_run(os.path.join(workdir, 'results', 'trajectory'), config) as run:
    write_results(rows, run.path, columns=COLUMNS, extra={
        'kind': 'lm_trajectory', 'config': saved, 'columns': list(COLUMNS),
        'provenance': runs.provenance(started)})
  return {'rows': rows, 'directory': run.path}
