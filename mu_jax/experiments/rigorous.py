"""Rigorous evaluation: N unlearned models against N oracles, per method.

`run_rigorous(config, workdir)` is what `mu-jax rigorous` and the
evaluation notebook call. It trains (or loads from Orbax) an ensemble of N
originals on D (seeds seed, ..., seed + N − 1) and N oracles on D_r with the
same seeds, all at once with vmap; runs every method of `config.methods` on
every original (`ensembles.run_method_ensemble`); and scores each method's N
models against the N oracles:

  UA, RA, TA, MIA   means over members (MIA: the SVC MIA-efficacy)
  ent-MIA           the SSD repo's entropy attack, % of D_f called members
  KLoM              per-example KL(unlearned ‖ oracle) of margin histograms on
                    D_f, D_r and the validation split: mean, p95, p99
  U-LiRA            the Gaussian likelihood-ratio attack's accuracy on D_f (50 ideal)
                    and its TPR at 0.1% / 1% FPR; `rigorous.ulira_protocol`: 'shared'
                    (the models above, differing only by seed) or 'hayes' (Hayes et
                    al. 2024: model k forgets its own half F_k of D_f; K more retrains,
                    2K with reference_oracles, and K more runs of every method)
  F, score          the NeurIPS 2023 challenge's forget quality and final score
  relearn           median fine-tuning steps on D_f until forget accuracy is back
                    at the original's (inf: not within the budget)

Rows 'original' (no unlearning) and 'retrain' (a second oracle ensemble with
seeds seed + N, ...: the metrics' noise floor at this N) frame the methods.
Settings (`config.rigorous.scenario`): 'standard'; 'worst_case' (the forget set
chosen by Challenging Forgets' bi-level selection on the seed's original);
'sequential' (D_f served as k requests, each scored against oracles without
everything forgotten so far); 'corrective' (a manipulated training set, only a
fraction of the manipulated rows forgotten; adds the attack success rate ASR
and a 'retrain (clean)' row without any manipulated row).

Each run goes to a folder of its own, workdir/results/<forget>/rigorous[-<scenario>]/<run id>/
(see `runs`): results.md, results.json (with the run's provenance),
results.csv, the forget indices, per-example arrays (details.npz) and PNG plots.
"""
import math
import os
import time
from typing import Any, NamedTuple

import ml_collections
import numpy as np
from absl import logging

from mu_jax import checkpoint, ensembles, sharding
from mu_jax.experiments import config_lib, plots, results, runs, scenarios, validation
from mu_jax.data import Dataset, Examples, load_dataset, save_indices, select_forget
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.evaluation import challenge, klom, relearn, ulira, worst_case
from mu_jax.evaluation.entropy_mia import entropy_mia
from mu_jax.evaluation.margins import Outputs, ensemble_outputs
from mu_jax.evaluation.mia import mia_efficacy
from mu_jax.evaluation.report import mia_note
from mu_jax.files import atomic_write
from mu_jax.methods import LM_METHODS, METHODS, Context, create_method
from mu_jax.tasks import CLASS_LABELS, requires
from mu_jax.experiments.setting import build_task, model_recipe, request_slug

SCENARIOS = ('standard', 'worst_case', 'sequential', 'corrective')
DMM_FAMILY = ('dmm', 'dm_direct', 'oracle_matching')   # train ensembles inside prepare
COLUMNS = ('method', 'UA', 'RA', 'TA', 'MIA', 'ent-MIA', 'KLoM f mean', 'KLoM f p95',
           'KLoM f p99', 'KLoM r p95', 'KLoM v p95', 'U-LiRA', 'U-LiRA TPR@0.1%',
           'U-LiRA TPR@1%', 'F', 'score', 'relearn', 'seconds')


class Splits(NamedTuple):
  """The splits every population of one forget request is scored on."""
  forget: Examples
  retain: Examples
  val: Examples | None
  test: Examples
  attack: Examples | None = None   # corrective: the attack's split (accuracy = ASR)


class Hayes(NamedTuple):
  """The 'hayes' U-LiRA protocol of one request: model k forgets F_k, half of D_f."""
  forgotten: np.ndarray   # [K, |D_f|] bool: row j of D_f is in F_k
  keep: np.ndarray        # [K, n] bool: the training rows D \ F_k of model k
  oracle: np.ndarray      # [K, |D_f|] margins on D_f of the models trained on D \ F_k
  train: Examples         # D
  forget_idx: np.ndarray  # D_f's rows in D


class Population(NamedTuple):
  """N models and their outputs on a request's splits."""
  variables: dict
  task: Any                     # evaluates the variables (mu_jax.tasks.Task)
  outputs: dict[str, Outputs]   # split name -> per-member outputs


# ---- configuration -----------------------------------------------------------

ARG_KEYS = ('scenario', 'num_models')   # get_config(arg) keys of the rigorous configs


def default_config() -> ml_collections.ConfigDict:
  """The `config.rigorous` block: every knob of the evaluation, with its source."""
  return ml_collections.ConfigDict(dict(
      num_models=32,                 # the issue: N >= 32 per side on a CPU (>= 100 supported)
      scenario='standard',
      reference_oracles=True,        # a second oracle ensemble: the metrics' noise floor
      shard_members=False,           # members over devices (needs num_models % devices == 0)
      train_size=0, eval_size=0,     # 0: all rows; else a seeded subset of train / val and test
      mia_models=0,                  # SVC MIA on the first k models only (0: all)
      plots=True,
      klom_bins=klom.BINS, klom_eps=klom.EPS, ulira_folds=ulira.FOLDS, delta=challenge.DELTA,
      klom_direction=klom.DIRECTIONS[0],   # 'oracle_first': data-unlearning-bench run.py:142
      # 'hayes': Hayes et al. 2024 (arXiv:2403.01218), shadows each with its own forget set;
      # 'shared' reuses the ensembles above at no extra training.
      ulira_protocol=ulira.PROTOCOLS[0],
      relearn=dict(fraction=1.0,     # Golatkar et al. 2020: relearn on all of D_f
                   max_steps=relearn.MAX_STEPS,
                   batch_size=0),    # 0: the training recipe's batch size
      sequential=dict(requests=3),
      corrective=dict(kind='badnet',
                      fraction=0.04,     # reference: 2,000 of CIFAR-10's 50,000 rows manipulated
                      identified=0.25,   # reference: deletion sets of 500 of those 2,000
                      target=scenarios.TARGET_CLASS, classes=scenarios.SWAP_CLASSES,
                      patch_size=scenarios.PATCH_SIZE),
      worst_case=dict(fraction=0.1,      # official README: 4,500 of CIFAR-10's 45,000 rows
                      select_epochs=worst_case.SELECT_EPOCHS,
                      unlearn_steps=worst_case.UNLEARN_STEPS, theta_lr=worst_case.THETA_LR,
                      w_lr=worst_case.W_LR, gamma=worst_case.GAMMA,
                      batch_size=worst_case.BATCH_SIZE),
  ))


def make_config(base_file: str, arg: str | None, *, smoke=None) -> ml_collections.ConfigDict:
  """`base_file`'s config (an experiment of configs/) with a `rigorous` block.

  `arg` takes the base config's keys plus 'scenario' and 'num_models'. Unless
  'method(s)' is given, `methods` is every registered method but the DMM
  family (which trains model ensembles inside each run) and the language-model
  methods. `smoke(config)`
  shrinks the block when smoke=True. The base config's methods come first.
  """
  values = config_lib.parse_arg(arg, extra_keys=ARG_KEYS)
  mine = {k: values.pop(k) for k in ARG_KEYS if k in values}
  config = config_lib.load_config_file(base_file, ','.join(f'{k}={v}' for k, v in values.items()))
  given = 'method' in values or 'methods' in values
  with config.unlocked():
    config.rigorous = default_config()
    methods = config_lib.method_names(config)
    if not given:
      methods += [m for m in METHODS.names()
                  if m not in DMM_FAMILY + LM_METHODS and m not in methods]
    if config.smoke and smoke is not None:
      smoke(config)
    if given or not config.smoke:   # the command line wins over smoke's choice
      config.methods = ','.join(methods)
    if 'scenario' in mine:
      config.rigorous.scenario = mine['scenario']
    if 'num_models' in mine:
      if not mine['num_models'].isdigit():
        raise MuJaxError(f"num_models={mine['num_models']!r} is not a whole number.")
      config.rigorous.num_models = int(mine['num_models'])
  return config


# ---- data and ensembles ------------------------------------------------------

def _subset(split: Examples, size: int, seed: int) -> Examples:
  if not size or size >= len(split):
    return split
  return split.take(np.sort(np.random.default_rng(seed).permutation(len(split))[:size]))


def load_data(config) -> Dataset:
  """The config's data set, the splits cut to rigorous.train_size / eval_size rows."""
  rc = config.rigorous
  data = load_dataset(config.data.source, data_dir=config.data.data_dir or None,
                      seed=config.seed, val_fraction=config.data.val_fraction,
                      test_fraction=config.data.test_fraction)
  return data._replace(train=_subset(data.train, rc.train_size, config.seed),
                       val=_subset(data.val, rc.eval_size, config.seed + 1),
                       test=_subset(data.test, rc.eval_size, config.seed + 2))


def _ensemble(config, task, train: Examples, seeds, role: str, workdir: str, mesh,
              masks: np.ndarray | None = None):
  payload = dict(model_recipe(config), role=role, seeds=list(seeds), **train.arrays())
  if masks is not None:
    payload['masks'] = masks
  directory = os.path.join(workdir, 'models', f'ensemble-{role}-{checkpoint.config_key(payload)}')
  stacked, seconds = ensembles.train_or_load_ensemble(
      task, config.train, train, seeds=list(seeds), mesh=mesh, directory=directory,
      masks=masks, shard_members=config.rigorous.shard_members)
  logging.info('%s ensemble of %d: %.1fs of training (%s)', role, len(seeds), seconds, directory)
  return stacked, seconds


# ---- scoring -----------------------------------------------------------------

def outputs(config, task, stacked, request: Splits, mesh) -> dict[str, Outputs]:
  splits = {'forget': request.forget, 'retain': request.retain, 'test': request.test}
  if request.val is not None:
    splits['val'] = request.val
  if request.attack is not None:
    splits['attack'] = request.attack
  return {name: ensemble_outputs(task, stacked, s, batch_size=config.eval.batch_size,
                                 mesh=mesh) for name, s in splits.items()}


def _mean(values) -> float:
  return float(np.mean(values)) if len(values) else float('nan')


def score(config, name: str, pop: Population, oracle: Population, *,
          relearn_steps: np.ndarray | None, seconds: float,
          hayes: tuple[np.ndarray, Hayes] | None = None) -> tuple[dict, dict]:
  """(table row, per-example details) of one population against the oracles.

  With `hayes` (the row's [K, |D_f|] margins of models that forgot F_k, and
  the protocol's oracles), U-LiRA is `ulira.masked_ulira_scores` over them.
  """
  rc, out, ref = config.rigorous, pop.outputs, oracle.outputs
  n = ensembles.num_members(pop.variables)
  mia_models = range(min(n, rc.mia_models) if rc.mia_models else n)
  fa, ra, ta = (_mean(out[s].accuracy()) for s in ('forget', 'retain', 'test'))
  ra_r, ta_r = _mean(ref['retain'].accuracy()), _mean(ref['test'].accuracy())
  kl = {s: klom.klom(out[s].margin, ref[s].margin, bins=rc.klom_bins, eps=rc.klom_eps,
                     direction=rc.klom_direction)
        for s in ('forget', 'retain', 'val') if s in out}
  kl_sum = {s: klom.summarize(v) for s, v in kl.items()}
  nan = klom.Summary(math.nan, math.nan, math.nan)
  if hayes is None:
    scores_u, scores_o = ulira.ulira_scores(out['forget'].margin, ref['forget'].margin,
                                            folds=rc.ulira_folds, seed=config.seed)
  else:
    scores_u, scores_o = ulira.masked_ulira_scores(hayes[0], hayes[1].oracle,
                                                   hayes[1].forgotten, folds=rc.ulira_folds,
                                                   seed=config.seed)
  ch = challenge.challenge_score(out['forget'].margin, ref['forget'].margin,
                                 retain_acc_unlearned=ra, retain_acc_retrained=ra_r,
                                 test_acc_unlearned=ta, test_acc_retrained=ta_r, delta=rc.delta)
  row = {
      'method': name, 'UA': 100.0 - fa, 'RA': ra, 'TA': ta,
      'MIA': _mean([mia_efficacy(out['retain'].confidence[m], out['test'].confidence[m],
                                 out['forget'].confidence[m], seed=config.seed,
                                 max_per_side=config.eval.mia_max_per_side,
                                 members=config.eval.mia_members)
                    for m in mia_models]),
      'ent-MIA': _mean([entropy_mia(out['retain'].entropy[m], out['test'].entropy[m],
                                    out['forget'].entropy[m]) for m in range(n)]),
      'KLoM f mean': kl_sum['forget'].mean, 'KLoM f p95': kl_sum['forget'].p95,
      'KLoM f p99': kl_sum['forget'].p99, 'KLoM r p95': kl_sum['retain'].p95,
      'KLoM v p95': kl_sum.get('val', nan).p95,
      'U-LiRA': ulira.accuracy(scores_u, scores_o),
      **{f'U-LiRA TPR@{100 * fpr:g}%': ulira.tpr_at_fpr(scores_u, scores_o, fpr)
         for fpr in ulira.LOW_FPRS},
      'F': ch.forget_quality, 'score': ch.score,
      'relearn': float(np.median(relearn_steps)) if relearn_steps is not None else math.nan,
      'seconds': seconds, 'models': n,
      'UA std': float(np.std(100.0 - out['forget'].accuracy())),
      'RA std': float(np.std(out['retain'].accuracy())),
      'KLoM r mean': kl_sum['retain'].mean, 'KLoM v mean': kl_sum.get('val', nan).mean,
  }
  if 'attack' in out:
    row['ASR'] = _mean(out['attack'].accuracy())
  if relearn_steps is not None:
    row['relearned'] = float(np.mean(np.isfinite(relearn_steps)))
  details = {'klom_forget': kl['forget'], 'epsilons': ch.epsilons, 'ulira_u': scores_u,
             'ulira_o': scores_o, 'margins': out['forget'].margin}
  return row, details


class _Relearner:
  """The relearning attack with this request's split, targets and recipe."""

  def __init__(self, config, request: Splits, originals: Population, mesh):
    rc = config.rigorous.relearn
    self.enabled = rc.max_steps > 0
    self.relearn_set, self.probe = relearn.split_relearn(request.forget, rc.fraction, config.seed)
    batch_size = rc.batch_size or config.train.batch_size
    self.targets = relearn.probe_accuracy(originals.task, originals.variables, self.probe,
                                          batch_size=batch_size, mesh=mesh)
    self.kwargs = dict(optimizer=config.train.optimizer, learning_rate=config.train.learning_rate,
                       momentum=config.train.momentum, weight_decay=config.train.weight_decay,
                       batch_size=batch_size, max_steps=rc.max_steps, seed=config.seed,
                       mesh=mesh)

  def __call__(self, pop: Population) -> np.ndarray | None:
    if not self.enabled:
      return None
    return relearn.relearn_steps(pop.task, pop.variables, self.relearn_set, self.probe,
                                 self.targets, **self.kwargs)


def _context(config, task, forget: Examples, retain: Examples, mesh) -> Context:
  return Context(task, forget, retain, mesh, config.seed, cache_dir=None)


def _forget_margins(config, task, stacked, request: Splits, mesh) -> np.ndarray:
  return ensemble_outputs(task, stacked, request.forget, batch_size=config.eval.batch_size,
                          mesh=mesh).margin


def _hayes_retrained(config, workdir, task, train: Examples, keep: np.ndarray, seeds,
                     role: str, request: Splits, mesh) -> np.ndarray:
  """[K, |D_f|] margins on D_f of models k trained from scratch on the rows keep[k]
  (D \\ F_k), cached like the other ensembles."""
  stacked, _ = _ensemble(config, task, train, seeds, role, workdir, mesh, masks=keep)
  return _forget_margins(config, task, stacked, request, mesh)


def _hayes(config, workdir, task, train: Examples, forget_idx: np.ndarray, request: Splits,
           seeds, mesh) -> Hayes:
  """Draws F_k (round(|D_f|/2) rows of D_f, seeded by config.seed and k: each row is
  forgotten by about half the models, and equal sizes keep the ensemble vmapped)
  and trains the K models on D \\ F_k."""
  rc = config.rigorous
  forgotten = ensembles.subset_masks(len(forget_idx), len(seeds), 0.5, config.seed)
  if not ulira.counted_pairs(forgotten, folds=rc.ulira_folds, seed=config.seed).any():
    raise MuJaxError(f"rigorous.ulira_protocol='hayes' with {len(forget_idx)} forget rows and "
                     f'num_models={rc.num_models} leaves no example forgotten by '
                     f'{ulira.MIN_SHADOWS} shadow models of a fold; raise num_models.')
  keep = np.ones((len(seeds), len(train)), bool)
  for k, rows in enumerate(forgotten):
    keep[k, forget_idx[rows]] = False
  oracle = _hayes_retrained(config, workdir, task, train, keep, seeds, 'hayes-oracle', request,
                            mesh)
  return Hayes(forgotten, keep, oracle, train, forget_idx)


def _hayes_unlearned(config, method, name: str, start: Population, request: Splits,
                     hayes: Hayes, seeds, mesh) -> np.ndarray:
  """[K, |D_f|] margins on D_f of `method` run on original k with forget set F_k and
  retain set D \\ F_k, one member (and Context) at a time."""
  margins = []
  for k, seed in enumerate(seeds):
    ctx = _context(config, start.task, hayes.train.take(hayes.forget_idx[hayes.forgotten[k]]),
                   hayes.train.take(np.flatnonzero(hayes.keep[k])), mesh)
    one = ensembles.stack([ensembles.member(start.variables, k)])
    out = ensembles.run_method_ensemble(method, one, ctx, seeds=[seed], name=name)
    margins.append(_forget_margins(config, out.task, out.variables, request, mesh))
  return np.concatenate(margins)


def _unlearn_all(config, ctx: Context, start: Population, request: Splits, oracle: Population,
                 relearner: _Relearner, mesh, seeds, oracle_seconds: float,
                 hayes: Hayes | None = None) -> tuple[list, dict]:
  rows, details = [], {}
  for name in config_lib.method_names(config):
    method = create_method(name, **config_lib.method_hparams(config, name))
    try:
      out = ensembles.run_method_ensemble(method, start.variables, ctx, seeds=seeds, name=name)
      sides = None
      if hayes is not None:
        sides = _hayes_unlearned(config, method, name, start, request, hayes, seeds, mesh), hayes
    except NonFiniteError as e:
      logging.warning('%s', e)
      rows.append({'method': name, 'status': 'diverged', 'error': str(e)})
      continue
    pop = Population(out.variables, out.task,
                     outputs(config, out.task, out.variables, request, mesh))
    row, det = score(config, name, pop, oracle, relearn_steps=relearner(pop), seconds=out.seconds,
                     hayes=sides)
    row.update({'speed-up': oracle_seconds / out.seconds, 'vmapped': out.vmapped,
                'steps': out.steps, **{k: _mean(v) for k, v in out.info.items()}})
    logging.info('%s: %s', name, {k: round(v, 3) for k, v in row.items()
                                  if isinstance(v, float)})
    rows.append(row)
    details[name] = det
  return rows, details


# ---- settings ----------------------------------------------------------------

def _request(data: Dataset, train: Examples, forget_idx: np.ndarray,
             attack: Examples | None = None) -> Splits:
  retain_idx = np.setdiff1d(np.arange(len(train)), forget_idx)
  val = data.val if len(data.val) else None
  return Splits(train.take(forget_idx), train.take(retain_idx), val, data.test, attack)


def _standard(config, workdir, data, task, mesh, seeds, ref_seeds, train, forget_idx,
              attack=None, clean_rows=None):
  """Originals, oracles (and reference / clean oracles), every method: rows and details."""
  request = _request(data, train, forget_idx, attack)
  hayes = (_hayes(config, workdir, task, train, forget_idx, request, seeds, mesh)
           if config.rigorous.ulira_protocol == 'hayes' else None)
  originals, _ = _ensemble(config, task, train, seeds, 'original', workdir, mesh)
  oracles, oracle_seconds = _ensemble(config, task, request.retain, seeds, 'oracle', workdir,
                                      mesh)
  orig = Population(originals, task, outputs(config, task, originals, request, mesh))
  oracle = Population(oracles, task, outputs(config, task, oracles, request, mesh))
  relearner = _Relearner(config, request, orig, mesh)
  rows, details = [], {}
  row, details['original'] = score(
      config, 'original', orig, oracle, relearn_steps=relearner(orig), seconds=math.nan,
      hayes=None if hayes is None else (orig.outputs['forget'].margin, hayes))
  rows.append(row)
  details['oracle'] = {'margins': oracle.outputs['forget'].margin}
  if hayes is not None:
    details['oracle']['ulira_forgotten'] = hayes.forgotten
  references = []
  if config.rigorous.reference_oracles:
    references.append(('retrain', 'reference-oracle', request.retain))
  if clean_rows is not None:
    references.append(('retrain (clean)', 'clean-oracle', train.take(clean_rows)))
  for name, role, split in references:
    stacked, seconds = _ensemble(config, task, split, ref_seeds, role, workdir, mesh)
    pop = Population(stacked, task, outputs(config, task, stacked, request, mesh))
    sides = None
    if hayes is not None:   # the noise floor retrains on D \ F_k; the clean oracle is as is
      sides = (_hayes_retrained(config, workdir, task, train, hayes.keep, ref_seeds,
                                'hayes-reference-oracle', request, mesh)
               if role == 'reference-oracle' else pop.outputs['forget'].margin, hayes)
    row, details[name] = score(config, name, pop, oracle, relearn_steps=relearner(pop),
                               seconds=seconds, hayes=sides)
    rows.append(dict(row, **{'speed-up': oracle_seconds / seconds}))
  ctx = _context(config, task, request.forget, request.retain, mesh)
  method_rows, method_details = _unlearn_all(config, ctx, orig, request, oracle, relearner,
                                             mesh, seeds, oracle_seconds, hayes)
  return rows + method_rows, {**details, **method_details}, oracle_seconds


def _sequential(config, workdir, data, task, mesh, seeds, forget_idx):
  """k requests in a row: each method continues from its own previous models; a
  continual method (`Method.resume`: ACU) from its own previous state, so its
  ledger of held training rows refuses a row asked for twice."""
  train = data.train
  requests = scenarios.sequential_requests(forget_idx, config.rigorous.sequential.requests,
                                          config.seed)
  originals, _ = _ensemble(config, task, train, seeds, 'original', workdir, mesh)
  current = {name: originals for name in config_lib.method_names(config)}   # None: stopped
  carried = {}   # a continual method's member states after its last request
  rows, details, forgotten = [], {}, np.zeros(0, np.int64)
  for k, part in enumerate(requests, 1):
    forgotten = np.union1d(forgotten, part)
    request = _request(data, train, forgotten)
    oracles, oracle_seconds = _ensemble(config, task, request.retain, seeds, 'oracle', workdir,
                                        mesh)
    oracle = Population(oracles, task, outputs(config, task, oracles, request, mesh))
    orig = Population(originals, task, outputs(config, task, originals, request, mesh))
    relearner = _Relearner(config, request, orig, mesh)
    row, _ = score(config, 'original', orig, oracle, relearn_steps=relearner(orig),
                   seconds=math.nan)
    rows.append(dict(row, request=k))
    part_forget = train.take(part)
    for name in config_lib.method_names(config):
      stacked = current[name]
      if stacked is None:
        rows.append({'method': name, 'request': k, 'status': 'stopped', 'error':
                     'diverged earlier or changes the architecture (serves one request only)'})
        continue
      ctx = _context(config, task, part_forget, request.retain, mesh)._replace(
          forget_ids=part, retain_ids=np.setdiff1d(np.arange(len(train)), forgotten))
      method = create_method(name, **config_lib.method_hparams(config, name))
      try:
        out = ensembles.run_method_ensemble(method, stacked, ctx, seeds=seeds, name=name,
                                            previous=carried.get(name))
      except NonFiniteError as e:
        rows.append({'method': name, 'request': k, 'status': 'diverged', 'error': str(e)})
        current[name] = None
        continue
      if method.resume:
        carried[name] = out.states
      else:   # a method that changes the architecture, not continually, serves one request
        current[name] = out.variables if out.task is task else None
      pop = Population(out.variables, out.task,
                       outputs(config, out.task, out.variables, request, mesh))
      row, det = score(config, name, pop, oracle, relearn_steps=relearner(pop),
                       seconds=out.seconds)
      rows.append(dict(row, request=k, **{'speed-up': oracle_seconds / out.seconds}))
      details[f'{name}@{k}'] = det
  return rows, details


def _worst_case_forget(config, workdir, data, task, mesh, seeds) -> np.ndarray:
  wc = config.rigorous.worst_case
  originals, _ = _ensemble(config, task, data.train, seeds, 'original', workdir, mesh)
  size = max(1, round(wc.fraction * len(data.train)))
  selection = worst_case.select_worst_case(
      task, ensembles.member(originals, 0), data.train, size, mesh=mesh, seed=config.seed,
      select_epochs=wc.select_epochs, unlearn_steps=wc.unlearn_steps, theta_lr=wc.theta_lr,
      w_lr=wc.w_lr, gamma=wc.gamma, batch_size=wc.batch_size)
  moved = len(np.setdiff1d(selection.indices, selection.initial))
  logging.info('worst-case selection: %d of %d rows differ from the random start', moved, size)
  return selection.indices


def run_rigorous(config, workdir: str) -> dict:
  """Runs the configured rigorous evaluation.

  Returns {'rows': table rows, 'directory': where the results went, 'details':
  per-example arrays by row, 'request': the forget request's folder name}.
  """
  started = time.time()
  validation.check_config(config)
  rc = config.rigorous
  if rc.scenario not in SCENARIOS:
    raise MuJaxError(f'Unknown rigorous scenario {rc.scenario!r}; valid: {", ".join(SCENARIOS)}.')
  if config.model.checkpoint:
    raise MuJaxError('Rigorous evaluation trains its N originals from the recipe, so it cannot '
                     f'use the model at model.checkpoint={config.model.checkpoint!r}; unset it, '
                     'or unlearn that model with mu-jax benchmark or unlearn.')
  if rc.ulira_protocol == 'hayes' and rc.scenario == 'sequential':
    raise MuJaxError("rigorous.ulira_protocol='hayes' is not offered with scenario='sequential'; "
                     "use 'shared' there.")
  if rc.num_models < 4:
    raise MuJaxError(f'Rigorous evaluation needs at least 4 models per side (U-LiRA folds, the '
                     f'challenge score); got num_models={rc.num_models}.')
  for name in config_lib.method_names(config):   # fail on a bad name before any training
    create_method(name, **config_lib.method_hparams(config, name))
  mesh = sharding.make_mesh(config.mesh)
  data = load_data(config)
  task = build_task(config, data)
  requires(task, 'rigorous evaluation', CLASS_LABELS)
  num_classes = data.outputs
  seeds = [config.seed + m for m in range(rc.num_models)]
  ref_seeds = [config.seed + rc.num_models + m for m in range(rc.num_models)]
  slug = request_slug(config.forget)
  extra: dict[str, Any] = {}
  oracle_seconds = math.nan
  if rc.scenario == 'sequential':
    forget_idx = select_forget(config.forget, data.train['y'], num_classes, config.seed,
                               data.train['x'])
    rows, details = _sequential(config, workdir, data, task, mesh, seeds, forget_idx)
  elif rc.scenario == 'corrective':
    co = config.rigorous.corrective
    count = max(1, round(co.fraction * len(data.train)))
    if co.kind == 'label_swap':
      count -= count % 2
    manip = scenarios.manipulate(data.train, co.kind, count, config.seed,
                                num_classes=num_classes, target=co.target,
                                classes=tuple(co.classes), patch_size=co.patch_size)
    forget_idx = scenarios.identified(manip.manipulated, co.identified, config.seed)
    clean_rows = np.setdiff1d(np.arange(len(data.train)), manip.manipulated)
    attack = scenarios.attack_split(data.test, manip, target=co.target, classes=tuple(co.classes),
                                   patch_size=co.patch_size)
    rows, details, oracle_seconds = _standard(config, workdir, data, task, mesh, seeds,
                                              ref_seeds, manip.train, forget_idx, attack,
                                              clean_rows)
    slug = f'{co.kind}-{co.fraction:g}-identified-{co.identified:g}'
    extra['manipulated'] = int(len(manip.manipulated))
  else:
    if rc.scenario == 'worst_case':
      forget_idx = _worst_case_forget(config, workdir, data, task, mesh, seeds)
      slug = f'worst-{rc.worst_case.fraction:g}'
    else:
      forget_idx = select_forget(config.forget, data.train['y'], num_classes, config.seed,
                                 data.train['x'])
    rows, details, oracle_seconds = _standard(config, workdir, data, task, mesh, seeds,
                                              ref_seeds, data.train, forget_idx)
  request_dir = os.path.join(workdir, 'results', slug,
                             'rigorous' if rc.scenario == 'standard' else f'rigorous-{rc.scenario}')
  results.mark_chance(rows, task, data.test)   # rows' TA: the mean over the N members
  with runs.new_run(request_dir, config) as run:
    save_indices(os.path.join(run.path, 'forget_indices.npy'), forget_idx)
    write_report(config, rows, details, run.path, extra=dict(
        extra, kind='rigorous', forget_size=int(len(forget_idx)),
        train_size=int(len(data.train)), oracle_seconds=oracle_seconds,
        forget_indices_sha256=runs.indices_hash(forget_idx),
        provenance=runs.provenance(started)))
  return {'rows': rows, 'directory': run.path, 'details': details, 'request': slug}


# ---- report ------------------------------------------------------------------

def columns(rows: list[dict]) -> list[str]:
  """The rigorous table's columns; request and ASR are added when present."""
  out = list(COLUMNS)
  if any('request' in r for r in rows):
    out.insert(0, 'request')
  if any('ASR' in r for r in rows):
    out.insert(out.index('MIA'), 'ASR')
  return out


def markdown_table(rows: list[dict]) -> str:
  """The rigorous table of `rows`."""
  return results.markdown_table(rows, columns(rows))


def write_report(config, rows: list[dict], details: dict, directory: str, *,
                 extra: dict) -> None:
  """results.md / .json / .csv, details.npz and the PNG plots into `directory`."""
  results.write_results(rows, directory, columns=columns(rows), note=mia_note(config.eval),
                        extra={'config': config.to_dict(), 'columns': columns(rows), **extra})
  arrays = {f'{name}/{key}': np.asarray(value) for name, det in details.items()
            for key, value in det.items()}
  atomic_write(os.path.join(directory, 'details.npz'),
               lambda f: np.savez_compressed(f, **arrays))
  if config.rigorous.plots:
    plots.write_all(rows, details, directory)
