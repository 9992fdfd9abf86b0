"""Sequential requests: forget01, then forget05, then forget10, on one model (MUSE's
sustainability: Shi et al. 2024, arXiv:2407.06460, section 5).

The splits are nested (each forgets the last authors trained), so request k
asks the model left by request k − 1 to forget the authors its split adds;
its retain set is everything outside the cumulative forget set. DP2Unlearning instead
fine-tunes its one private model anew for each request (its retain set shrinks). After each
request the model is scored like a row of that split's benchmark, against
that split's retain model (trained, or loaded from the cache, as the
benchmark does); the target's rows give each split's starting point.
`lm.sequential=True` turns `mu-jax benchmark` into this run.
"""
import copy
import os
import time

import numpy as np
from absl import logging

from mu_jax.experiments import config_lib, runs
from mu_jax.experiments.lm import suite
from mu_jax.experiments.lm.benchmark import (
    prepare_lm_setting, private_original, request_context)
from mu_jax.experiments.results import write_results
from mu_jax.methods import PRIVATE, create_method, run_method

SEQUENCE = ('forget01', 'forget05', 'forget10')
COLUMNS = ('method', 'request', 'forget quality', 'model utility', 'F-ROUGE', 'R-ROUGE',
           'KnowMem F', 'PrivLeak', 'seconds')


def split_config(config, split: str):
  """`config` asking for `split`."""
  out = copy.deepcopy(config)
  with out.unlocked():
    out.forget = split
  return out


def run_sequential(config, workdir: str, methods=None) -> dict:
  """Every method of `methods` (default `config.methods`) through SEQUENCE; returns
  {'rows', 'directory'}."""
  started = time.time()
  methods = config_lib.method_names(config) if methods is None else list(methods)
  check = config_lib.capability_check(config, methods, private=True)
  settings = {s: prepare_lm_setting(split_config(config, s), workdir, check) for s in SEQUENCE}
  scorers = {s: _scorer(settings[s], config) for s in SEQUENCE}
  rows = [{'method': 'target', 'request': s, **scorers[s](settings[s].target.variables),
           'seconds': settings[s].target.train_seconds} for s in SEQUENCE]
  for name in methods:
    method = create_method(name, **config_lib.method_hparams(config, name))
    variables, forgotten = settings[SEQUENCE[0]].target.variables, np.array([], int)
    if method.start == PRIVATE:   # every request fine-tunes the one DP-SGD model anew
      private = private_original(settings[SEQUENCE[0]]).variables
    for split in SEQUENCE:
      setting = settings[split]
      ctx = request_context(setting)
      new = ~np.isin(setting.data.forget_idx, forgotten)
      ctx = ctx._replace(forget=ctx.forget.take(np.flatnonzero(new)),
                         forget_ids=setting.data.forget_idx[new])
      if method.start == PRIVATE:
        variables = private
      out = run_method(method, variables, ctx, f'{name} ({split})')
      variables, forgotten = out.variables, setting.data.forget_idx
      rows.append({'method': name, 'request': split, **scorers[split](variables, out.task),
                   'seconds': out.seconds, 'steps': out.steps, 'forget_rows': int(new.sum())})
      logging.info('%s after %s: %s', name, split,
                   {k: round(v, 3) for k, v in rows[-1].items() if isinstance(v, float)})
  saved = config.to_dict() | {'forget': '+'.join(SEQUENCE)}
  directory = os.path.join(workdir, 'results', 'sequential')
  with runs.new_run(directory, config) as run:
    write_results(rows, run.path, columns=COLUMNS, extra={
        'kind': 'lm_sequential', 'config': saved, 'columns': list(COLUMNS),
        'provenance': runs.provenance(started)})
  return {'rows': rows, 'directory': run.path}


def _scorer(setting, config):
  """variables -> the sequential table's scores on `setting`'s split."""
  data, lm = setting.data, config.lm
  measure = lambda variables, task=setting.task: suite.measure(
      task, variables, data.suite, data.tokenizer, batch_size=config.eval.batch_size,
      mesh=setting.mesh, k=lm.mink_k)
  oracle = measure(setting.retain[0].variables)
  reference = suite.reference_stats(setting.task, setting.base.variables, data.suite,
                                    batch_size=config.eval.batch_size, mesh=setting.mesh)

  def score(variables, task=setting.task):
    values = suite.score(measure(variables, task), data.suite, data.tokenizer, oracle=oracle,
                         reference=reference, k=lm.mink_k)
    return {k: values[k] for k in COLUMNS if k in values}

  return score
