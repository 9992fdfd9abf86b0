"""Knowledge recovery after corrective unlearning (RESTOR: Rezaei et al., "RESTOR: Knowledge
Recovery through Machine Unlearning", 2024, arXiv:2411.00204).

RESTOR asks more of unlearning than forgetting: a model that knew some facts is
corrupted by training on wrong versions of them, and unlearning the corrupted data
should bring the original facts back, not only remove the wrong ones. Here:

- the first `lm.restor_authors` trained authors (retain authors in every split) have
  their QA corrupted: each answer states another value of the same attribute (one of the
  question's multiple-choice options, drawn from the corpus seed), in the same sentence;
- the *corrupted* model is the target fine-tuned `lm.restor_epochs` more epochs, with the
  fine-tuning recipe, on the corrupted QA amid the rest of D (every row but those
  authors' true QA: RESTOR mixes its corrupted documents with unrelated clean text), and
  cached beside the target;
- each method unlearns the corrupted rows (D_f), with the rest of D as D_r (those
  authors' passages included, their true QA not), starting from the corrupted model;
- every model is asked the corrupted authors' questions, greedily: `true value` is the
  share of answers that state the original value, `corrupt value` the share that state
  the corrupted one, `true prob` / `corrupt prob` the mean answer probabilities of the
  two sentences, `R-ROUGE` the ROUGE-L recall on the other retain authors' QA, and
  `restored` = (true value − the corrupted model's) / (the target's − the corrupted
  model's): 1 is full recovery, 0 none. The target (`clean`) is the model to recover.

`lm.restor=True` turns `mu-jax benchmark` into this run (results in
<workdir>/results/restor/).
"""
import os
import time

import ml_collections
import numpy as np
from absl import logging

from mu_jax import sharding
from mu_jax.data import Examples, concat
from mu_jax.data import text
from mu_jax.errors import MuJaxError
from mu_jax.evaluation.lm import tofu
from mu_jax.experiments import config_lib, runs
from mu_jax.experiments.lm import suite
from mu_jax.experiments.lm.benchmark import LMSetting, prepare_lm_setting
from mu_jax.experiments.lm.data import QASet, qa_rows, qa_set, spread
from mu_jax.experiments.results import write_results
from mu_jax.experiments.setting import train_or_load
from mu_jax.methods import Context, create_method, run_method

COLUMNS = ('method', 'true value', 'corrupt value', 'restored', 'true prob', 'corrupt prob',
           'R-ROUGE', 'seconds')


def corrupted_answers(qas, tokenizer, length: int, seed: int) -> list[tuple[str, str]]:
  """(answer, wrong value) per QA: its answer with the value replaced by another of its
  options (seeded) whose row fits `length` tokens."""
  rng = np.random.default_rng([seed, 0x52535452])   # 'RSTR'
  out = []
  for qa in qas:
    others = [o for o in qa.options if o != qa.value]
    for option in rng.permutation(others):
      answer = qa.answer.replace(qa.value, str(option))
      if text.padded_length(tokenizer, [text.qa_text(qa.question, answer)], 1) <= length:
        out.append((answer, str(option)))
        break
    else:
      raise MuJaxError(f'No wrong value of "{qa.question}" fits a row of {length} tokens.')
  return out


class Corruption:
  """The corrupted authors' QA, true and corrupted, and the rows of the corrupting fine-tune."""

  def __init__(self, setting: LMSetting):
    config, data = setting.config, setting.data
    corpus, lm = data.corpus, config.lm
    retained = corpus.retain_authors('forget10')
    if not 0 < lm.restor_authors <= len(retained):
      raise MuJaxError(f'lm.restor_authors must lie in 1..{len(retained)} (the authors every '
                       f'split retains), got {lm.restor_authors}.')
    self.authors = list(range(lm.restor_authors))
    self.qas = [q.qa for q in corpus.author_qas(self.authors)]
    wrong = corrupted_answers(self.qas, data.tokenizer, data.length, config.data.corpus_seed)
    self.wrong_values = [value for _, value in wrong]
    qa_count = len(corpus.author_qas(range(corpus.num_trained)))
    true_rows = np.isin(data.owner, self.authors) & (np.arange(len(data.train)) < qa_count)
    self.kept_idx = np.flatnonzero(~true_rows)
    self.true_idx = np.flatnonzero(true_rows)
    self.rows = qa_rows(data.tokenizer, self.qas, data.length, [a for a, _ in wrong])
    self.truth = qa_set(data.tokenizer, self.qas, data.length)
    others = [q.qa for q in corpus.author_qas(retained[len(self.authors):])]
    self.others = qa_set(data.tokenizer, spread(others, lm.retain_eval_size), data.length)

  def forget(self, data) -> Examples:
    """The corrupted rows as a request's D_f: with the true rows' refusals (same questions)."""
    return self.rows.with_arrays(xa=data.alternate['xa'][self.true_idx],
                                 ma=data.alternate['ma'][self.true_idx])


def corrupted_model(setting: LMSetting, corruption: Corruption):
  """The target fine-tuned on the corrupted QA amid the rest of D, cached."""
  config, data = setting.config, setting.data
  recipe = config.train.to_dict() | {'epochs': config.lm.restor_epochs}
  mix = concat(corruption.rows, data.train.take(corruption.kept_idx))
  key = dict(setting.tuned_key, seed=config.seed, restor={
      'authors': config.lm.restor_authors, 'epochs': config.lm.restor_epochs,
      'recipe': recipe})
  return train_or_load(config, setting.task, mix, role='corrupted', key_payload=key,
                       workdir=setting.workdir, mesh=setting.mesh,
                       train_cfg=ml_collections.ConfigDict(recipe),
                       start=setting.target.variables)


def scores(setting: LMSetting, corruption: Corruption, task, variables) -> dict[str, float]:
  """The recovery columns of one model (all but `restored`)."""
  config, data = setting.config, setting.data
  batch, mesh = config.eval.batch_size, setting.mesh
  variables = sharding.replicate(variables, mesh)
  shape = suite.generation_shape(data.suite)
  asked, _ = suite.qa_set_pass(task, variables, corruption.truth, data.tokenizer,
                               batch_size=batch, mesh=mesh, paraphrased=False, shape=shape)
  wrong = suite.token_pass(task, variables, corruption.rows, batch_size=batch, mesh=mesh)
  others, _ = suite.qa_set_pass(task, variables, corruption.others, data.tokenizer,
                                batch_size=batch, mesh=mesh, paraphrased=False, shape=shape)
  states = lambda values: float(np.mean([v in a for v, a in zip(values, asked['answers'])]))
  return {
      'true value': states([q.value for q in corruption.qas]),
      'corrupt value': states(corruption.wrong_values),
      'true prob': float(np.mean(tofu.probability(asked['answer_nll']))),
      'corrupt prob': float(np.mean(tofu.probability(wrong['nll_mean']))),
      'R-ROUGE': float(np.mean(tofu.rouge_l(others['answers'],
                                            corruption.others.answers)['recall'])),
  }


def restored(value: float, clean: float, corrupted: float) -> float:
  """(value − corrupted) / (clean − corrupted): 1 where the clean model's share of true values
  is back, 0 where the corruption stays; NaN where corrupting changed nothing."""
  return (value - corrupted) / (clean - corrupted) if clean != corrupted else float('nan')


def run_restor(config, workdir: str, methods=None) -> dict:
  """Every method of `methods` (default `config.methods`) on the corrective request; returns
  {'rows', 'directory'}."""
  started = time.time()
  methods = config_lib.method_names(config) if methods is None else list(methods)
  setting = prepare_lm_setting(config, workdir, config_lib.capability_check(config, methods))
  corruption = Corruption(setting)
  corrupted = corrupted_model(setting, corruption)
  data = setting.data
  rows = [{'method': 'clean', **scores(setting, corruption, setting.task,
                                       setting.target.variables),
           'seconds': setting.target.train_seconds},
          {'method': 'corrupted', **scores(setting, corruption, setting.task,
                                           corrupted.variables),
           'seconds': corrupted.train_seconds}]
  ctx = Context(setting.task, corruption.forget(data), data.request(corruption.kept_idx),
                setting.mesh, config.seed,
                cache_dir=os.path.join(corrupted.directory, 'statistics'),
                forget_ids=len(data.train) + np.arange(len(corruption.rows)),
                retain_ids=corruption.kept_idx, holdout=data.suite.holdout)
  for name in methods:
    method = create_method(name, **config_lib.method_hparams(config, name))
    out = run_method(method, corrupted.variables, ctx, name)
    rows.append({'method': name, **scores(setting, corruption, out.task, out.variables),
                 'seconds': out.seconds, 'steps': out.steps, **out.info})
    logging.info('%s: %s', name, {k: round(v, 3) for k, v in rows[-1].items()
                                  if isinstance(v, float)})
  for row in rows:
    row['restored'] = restored(row['true value'], rows[0]['true value'], rows[1]['true value'])
  saved = config.to_dict() | {'forget': f'restor-{config.lm.restor_authors}'}
  with runs.new_run(os.path.join(workdir, 'results', 'restor'), config) as run:
    write_results(rows, run.path, columns=COLUMNS, extra={
        'kind': 'lm_restor', 'config': saved, 'columns': list(COLUMNS),
        'corrupted_rows': len(corruption.rows), 'retain_size': int(len(corruption.kept_idx)),
        'provenance': runs.provenance(started)})
  return {'rows': rows, 'directory': run.path}
