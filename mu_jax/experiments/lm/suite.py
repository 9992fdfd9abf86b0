"""The LM evaluation suite: TOFU's and MUSE's scores and the MIAs, for one model.

`measure` runs a model over the evaluation sets once (per-token statistics in
sharded, fixed-size batches; greedy answers and continuations with the KV
cache); `score` turns a measurement into the results row, given the retain
model's measurement (forget quality and PrivLeak compare against it) and the
base model's statistics (the reference-model attack). The definitions live in
`mu_jax.evaluation.lm`; the columns:

  forget quality   KS p-value, forget-set truth ratios vs the retain model's (TOFU)
  model utility    harmonic mean of probability, ROUGE-L recall and truth ratio on
                   retain, known-people and world-facts QA (TOFU)
  F-/R-ROUGE       ROUGE-L recall of greedy answers, forget / retain QA (TOFU)
  F-prob, F-TR     forget answer probability and truth-ratio score (TOFU)
  VerbMem          ROUGE-L F1 of continuations of a forget passage's prefix (MUSE)
  KnowMem F/R      ROUGE-L F1 of greedy answers, forget / retain QA (MUSE)
  PrivLeak         Min-K% AUC gap to the retain model, forget vs held-out passages (MUSE)
  AUC <attack>     forget QA (members) vs held-out authors' QA: LOSS, zlib, Min-K%,
                   Min-K%++ and the reference (base) model
"""
import functools
from typing import NamedTuple

import jax
import numpy as np

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.evaluation.lm import mia, muse, tofu
from mu_jax.evaluation.lm.tokens import token_statistics
from mu_jax.experiments.lm.data import EvalSets, QASet
from mu_jax.models import decoding

QA_SETS = ('forget', 'retain', 'known_people', 'world_facts')
UTILITY_SETS = ('retain', 'known_people', 'world_facts')
ATTACK_NAMES = {'loss': 'LOSS', 'zlib': 'zlib', 'min_k': 'Min-K', 'min_k++': 'Min-K++',
                'ref': 'ref'}
COLUMNS = ('forget quality', 'model utility', 'F-ROUGE', 'R-ROUGE', 'F-prob', 'F-TR',
           'VerbMem', 'KnowMem F', 'KnowMem R', 'PrivLeak',
           *(f'AUC {name}' for name in ATTACK_NAMES.values()), 'TPR@1% Min-K++')


class Measured(NamedTuple):
  """One model's raw evaluation: per-set arrays and texts."""
  sets: dict               # name -> {'answer_nll', 'paraphrased_nll', 'perturbed_nll', 'answers'}
  forget_stats: dict       # token statistics of the forget answers (MIA members)
  holdout_stats: dict      # ... of the held-out authors' answers (non-members)
  passage_min_k: tuple     # Min-K% scores of forget and held-out passages (PrivLeak)
  verbmem: tuple[str, ...]   # continuations of the forget passages' prefixes


@functools.partial(jax.jit, static_argnums=0)
def _statistics(task, variables, batch):
  return token_statistics(task.apply(variables, batch, False)[0], batch['x'], batch['m'])


def token_pass(task, variables, examples: Examples, *, batch_size: int, mesh) -> dict:
  """`token_statistics` of every row, as host arrays, in sharded fixed-size batches."""
  batches = epoch_batches({'x': examples['x'], 'm': examples['m']}, batch_size, shuffle=False)
  out = sharding.to_host([_statistics(task, variables, sharding.shard_batch(b, mesh))
                          for b in batches])
  return {k: np.concatenate([o[k] for o in out])[:len(examples)] for k in out[0]}


def generation_shape(sets: EvalSets) -> tuple[int, int]:
  """(prompt width, new tokens) that fit every prompt and answer of the suite: one shape,
  so greedy decoding compiles once for all of them."""
  probes = [getattr(sets, n).answer for n in QA_SETS] + [sets.verbmem]
  return (max(int(e['p'].max()) for e in probes if len(e)),
          max(int(e['m'].sum(1).max()) for e in probes if len(e)) + 1)


def greedy(task, variables, examples: Examples, tokenizer, *, batch_size: int,
           shape: tuple[int, int]) -> list[str]:
  """Greedy text after each row's prompt x[:, :p], `shape` = (prompt width, new tokens)."""
  width, steps = shape
  texts = []
  for start in range(0, len(examples), batch_size):
    rows = np.arange(start, start + batch_size).clip(max=len(examples) - 1)
    part = examples.take(rows)
    tokens = decoding.generate(decoding.task_model(task), variables, part['x'][:, :width], part['p'], steps,
                               tokenizer.eos_id, tokenizer.pad_id)
    texts += [tokenizer.decode(t).strip() for t in np.asarray(tokens)]
  return texts[:len(examples)]


def qa_set_pass(task, variables, qa: QASet, tokenizer, *, batch_size, mesh, paraphrased: bool,
                shape):
  """({answer_nll, perturbed_nll, paraphrased_nll, answers}, the answers' token statistics)
  of one QA set."""
  run = functools.partial(token_pass, task, variables, batch_size=batch_size, mesh=mesh)
  answer = run(qa.answer)
  n = len(qa.answer)
  perturbed = run(qa.perturbed)['nll_mean'].reshape(n, -1)
  out = {'answer_nll': answer['nll_mean'], 'perturbed_nll': perturbed,
         'paraphrased_nll': run(qa.paraphrased)['nll_mean'] if paraphrased else None,
         'answers': greedy(task, variables, qa.answer, tokenizer, batch_size=batch_size,
                           shape=shape)}
  return out, answer


def scored_texts(examples: Examples, tokenizer) -> list[str]:
  """The scored tokens of each row as text (zlib's input)."""
  return [tokenizer.decode(x[m > 0]) for x, m in zip(examples['x'], examples['m'])]


def measure(task, variables, sets: EvalSets, tokenizer, *, batch_size: int, mesh,
            k: float) -> Measured:
  """One pass of the model over every evaluation set."""
  variables = sharding.replicate(variables, mesh)
  out, forget_stats, shape = {}, None, generation_shape(sets)
  for name in QA_SETS:
    out[name], stats = qa_set_pass(task, variables, getattr(sets, name), tokenizer,
                                    batch_size=batch_size, mesh=mesh,
                                    paraphrased=name in ('forget', 'retain'), shape=shape)
    if name == 'forget':
      forget_stats = stats
  run = functools.partial(token_pass, task, variables, batch_size=batch_size, mesh=mesh)
  passages = tuple(mia.min_k_score(s['logp'], s['mask'], k=k)
                   for s in (run(sets.forget_passages), run(sets.holdout_passages)))
  return Measured(out, forget_stats, run(sets.holdout), passages,
                  tuple(greedy(task, variables, sets.verbmem, tokenizer, batch_size=batch_size,
                               shape=shape)))


def reference_stats(task, variables, sets: EvalSets, *, batch_size: int, mesh) -> tuple:
  """The reference (base) model's statistics on the MIA members and non-members."""
  variables = sharding.replicate(variables, mesh)
  run = functools.partial(token_pass, task, variables, batch_size=batch_size, mesh=mesh)
  return run(sets.forget.answer), run(sets.holdout)


def truth_ratios(measured: Measured, name: str) -> np.ndarray:
  """The truth ratio of each question of set `name`; the utility sets compare the
  perturbed answers with the answer itself (TOFU's eval_everything.yaml)."""
  s = measured.sets[name]
  base = s['paraphrased_nll'] if s['paraphrased_nll'] is not None else s['answer_nll']
  return tofu.truth_ratio(base, s['perturbed_nll'])


def utility_values(measured: Measured, sets: EvalSets) -> dict[str, float]:
  """The nine values TOFU's model utility is the harmonic mean of."""
  values = {}
  for name in UTILITY_SETS:
    s = measured.sets[name]
    prob = (tofu.probability(s['answer_nll']) if name == 'retain' else
            tofu.normalized_probability(s['answer_nll'], s['perturbed_nll']))
    values[f'{name}_probability'] = float(np.mean(prob))
    values[f'{name}_rouge_l_recall'] = float(np.mean(
        tofu.rouge_l(s['answers'], getattr(sets, name).answers)['recall']))
    values[f'{name}_truth_ratio'] = tofu.truth_ratio_score(truth_ratios(measured, name), False)
  return values


def score(measured: Measured, sets: EvalSets, tokenizer, *, oracle: Measured,
          reference: tuple | None, k: float) -> dict[str, float]:
  """The results row of `measured` against the retain model's measurement `oracle`."""
  forget, retain = measured.sets['forget'], measured.sets['retain']
  utility = utility_values(measured, sets)
  members, nonmembers = scored_texts(sets.forget.answer, tokenizer), scored_texts(
      sets.holdout, tokenizer)
  attacks = mia.evaluate_attacks(
      measured.forget_stats, measured.holdout_stats, member_texts=members,
      nonmember_texts=nonmembers, member_reference=reference[0] if reference else None,
      nonmember_reference=reference[1] if reference else None, k=k)
  privacy = [mia.auc(*m.passage_min_k) for m in (measured, oracle)]
  row = {
      'forget quality': tofu.forget_quality(truth_ratios(measured, 'forget'),
                                            truth_ratios(oracle, 'forget')),
      'model utility': tofu.model_utility(utility),
      'F-ROUGE': float(np.mean(tofu.rouge_l(forget['answers'], sets.forget.answers)['recall'])),
      'R-ROUGE': utility['retain_rouge_l_recall'],
      'F-prob': float(np.mean(tofu.probability(forget['answer_nll']))),
      'F-TR': tofu.truth_ratio_score(truth_ratios(measured, 'forget'), True),
      'VerbMem': muse.verbmem(measured.verbmem, sets.verbmem_references),
      'KnowMem F': muse.knowmem(forget['answers'], sets.forget.answers),
      'KnowMem R': muse.knowmem(retain['answers'], sets.retain.answers),
      # Undefined when the retain model tells every forget passage apart (MUSE-oriented AUC
      # 0, e.g. a forget set of one passage): not a number, rather than a failed run.
      'PrivLeak': muse.privleak(*privacy) if privacy[1] < 1.0 else float('nan'),
  }
  for attack, result in attacks.items():
    row[f'AUC {ATTACK_NAMES[attack]}'] = result['auc']
  row['TPR@1% Min-K++'] = attacks['min_k++']['tpr_at_fpr']
  return {**row, **{f'utility/{k}': v for k, v in utility.items()}}
