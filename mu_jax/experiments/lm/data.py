"""The language-model benchmark's data: the generated corpus, its tokenizer and token rows.

The corpus is generated from `config.data` (nothing is downloaded); its
SentencePiece tokenizer is trained once and kept in
<workdir>/data/tofu-<key>/tokenizer.model, keyed by everything that shapes
it. Every row has one length, the shortest multiple of 8 that holds every QA
text of the corpus, so each jitted step compiles once:

  pretrain      world knowledge and generic prose in windows of that length
  train         the target's fine-tuning rows: every trained author's QA, then
                each author's passage in windows (MUSE's verbatim text); a
                row's identity is its index here, as in the image benchmarks
  forget_idx    the rows of the split's forget authors (D_f); the rest is D_r
  owner         per train row, its author (SSD's α selection holds authors out)
  alternate     per train row, its question with a refusal as the answer ('xa',
                'ma'; all-zero 'ma' for passage windows, which have no question):
                the preferred answers of the IDK losses and FLAT's templates
  suite         the evaluation sets (`mu_jax.experiments.lm.suite.EvalSets`)
"""
import os
from typing import NamedTuple

import numpy as np

from mu_jax import checkpoint, locks
from mu_jax.data import Examples, concat
from mu_jax.data import text
from mu_jax.data.text import Corpus, Tokenizer


class QASet(NamedTuple):
  """One evaluation family's QA as token rows: the answer, its paraphrase, the perturbed
  answers (K per question, question-major) and the answer texts."""
  answer: Examples
  paraphrased: Examples
  perturbed: Examples
  answers: tuple[str, ...]


class EvalSets(NamedTuple):
  """What the evaluation suite scores a model on."""
  forget: QASet            # the forget authors' QA
  retain: QASet            # `retain_eval_size` retain QA, spread over the retain authors
  known_people: QASet      # utility: facts learned in pre-training (TOFU's real authors)
  world_facts: QASet       # utility: TOFU's world facts
  holdout: Examples        # the held-out authors' QA (MIA non-members)
  forget_passages: Examples    # the first window of each forget author's passage
  holdout_passages: Examples   # ... and of each held-out author's (PrivLeak)
  verbmem: Examples        # forget passages: a prefix to continue, the rest to match
  verbmem_references: tuple[str, ...]


class LMData(NamedTuple):
  corpus: Corpus
  tokenizer: Tokenizer
  length: int              # tokens per row
  pretrain: Examples
  train: Examples
  forget_idx: np.ndarray
  retain_idx: np.ndarray
  suite: EvalSets
  alternate: Examples      # 'xa', 'ma' per train row (module docstring)
  owner: np.ndarray        # per train row, the index of its author

  def request(self, rows: np.ndarray) -> Examples:
    """The train rows `rows` with their alternates, as unlearning methods see them."""
    return self.train.take(rows).with_arrays(xa=self.alternate['xa'][rows],
                                             ma=self.alternate['ma'][rows])


def corpus_key(data_cfg) -> dict:
  """What determines the corpus and its tokenizer."""
  return {k: data_cfg[k] for k in ('num_authors', 'qa_per_author', 'holdout_authors',
                                   'vocab_size', 'corpus_seed')}


def build_corpus(data_cfg) -> Corpus:
  return text.generate_corpus(seed=data_cfg.corpus_seed, num_authors=data_cfg.num_authors,
                              qa_per_author=data_cfg.qa_per_author,
                              holdout_authors=data_cfg.holdout_authors)


def tokenizer_for(corpus: Corpus, data_cfg, workdir: str) -> Tokenizer:
  """The corpus's tokenizer from the workdir, trained (under its lock) the first time."""
  directory = os.path.join(workdir, 'data', f'tofu-{checkpoint.config_key(corpus_key(data_cfg))}')
  path = os.path.join(directory, 'tokenizer.model')
  os.makedirs(directory, exist_ok=True)
  with locks.exclusive(directory, 'the tokenizer'):
    if os.path.isfile(path):
      return text.load_tokenizer(path)
    return text.train_tokenizer(corpus.texts(), path, data_cfg.vocab_size)


def qa_rows(tokenizer: Tokenizer, qas, length: int, answers=None) -> Examples:
  """QA rows of `qas` (QA records) with their answers, or with `answers` in their place."""
  prompts = [text.format_prompt(q.question) for q in qas]
  return text.qa_examples(tokenizer, prompts, list(answers or [q.answer for q in qas]), length)


def qa_set(tokenizer: Tokenizer, qas, length: int) -> QASet:
  k = len(qas[0].perturbed_answers) if qas else 0
  return QASet(
      answer=qa_rows(tokenizer, qas, length),
      paraphrased=qa_rows(tokenizer, qas, length, [q.paraphrased_answer for q in qas]),
      perturbed=text.qa_examples(
          tokenizer, [text.format_prompt(q.question) for q in qas for _ in range(k)],
          [a for q in qas for a in q.perturbed_answers], length),
      answers=tuple(q.answer for q in qas))


def alternate_rows(tokenizer: Tokenizer, qas, rows: int, length: int, seed: int) -> Examples:
  """'xa', 'ma' for `rows` train rows whose first len(qas) are `qas`: each question with a
  refusal answer (`text.refusal_answers`); the remaining rows (passages) score nothing."""
  refused = qa_rows(tokenizer, qas, length, text.refusal_answers(len(qas), seed))
  xa = np.full((rows, length), tokenizer.pad_id, np.int32)
  ma = np.zeros((rows, length), np.float32)
  xa[:len(qas)], ma[:len(qas)] = refused['x'], refused['m']
  return Examples(xa=xa, ma=ma)


def passage_windows(tokenizer: Tokenizer, passages, length: int) -> list[Examples]:
  """Each passage as BOS + tokens + EOS in windows of `length` (its first window first)."""
  return [text.lm_examples(tokenizer, [p], length) for p in passages]


def verbmem_rows(windows: Examples, prefix: int) -> Examples:
  """Passage windows as VerbMem probes: the first `prefix` tokens after BOS are the prompt,
  the rest of the window the continuation to match. MUSE continues a 32-token prefix by
  128 tokens; here the continuation is what the trained window holds after the prefix."""
  m = windows['m'].copy()
  m[:, :1 + prefix] = 0
  return windows.with_arrays(m=m, p=np.full(len(windows), 1 + prefix, np.int32))


def row_length(corpus: Corpus, tokenizer: Tokenizer) -> int:
  """The shortest multiple of 8 holding every QA text with its answer forms."""
  qas = [q.qa for q in corpus.qas] + list(corpus.world_facts) + list(corpus.known_people)
  texts = [text.qa_text(q.question, a) for q in qas
           for a in (q.answer, q.paraphrased_answer, *q.perturbed_answers)]
  return text.padded_length(tokenizer, texts)


def spread(items: list, count: int) -> list:
  """`count` items evenly spaced over `items` (all of them if there are fewer)."""
  if count >= len(items):
    return list(items)
  return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def load_lm_data(config, workdir: str, tokenizer=None) -> LMData:
  """The corpus, tokenizer, training rows, forget request and evaluation sets of `config`;
  `tokenizer` (e.g. a real LLM's, `mu_jax.models.gemma.GemmaTokenizer`) replaces the
  corpus's own."""
  corpus = build_corpus(config.data)
  tokenizer = tokenizer or tokenizer_for(corpus, config.data, workdir)
  length = row_length(corpus, tokenizer)
  forget_authors = corpus.forget_authors(config.forget)
  trained = list(range(corpus.num_trained))
  qa_parts = [qa_rows(tokenizer, [q.qa for q in corpus.author_qas([a])], length)
              for a in trained]
  windows = passage_windows(tokenizer, [corpus.passages[a] for a in trained], length)
  train = concat(*qa_parts, *windows)
  alternate = alternate_rows(tokenizer, [q.qa for q in corpus.author_qas(trained)], len(train),
                             length, config.data.corpus_seed)
  owner = np.concatenate([np.full(len(part), a) for a, part in
                          zip(trained + trained, qa_parts + windows)])
  forget_idx = np.flatnonzero(np.isin(owner, forget_authors))
  retain_idx = np.flatnonzero(~np.isin(owner, forget_authors))
  lm = config.lm
  retain_qas = spread([q.qa for q in corpus.author_qas(corpus.retain_authors(config.forget))],
                      lm.retain_eval_size)
  holdout = corpus.holdout_authors()
  first = lambda ps: concat(*[w.take([0]) for w in passage_windows(tokenizer, ps, length)])
  forget_passages = first([corpus.passages[a] for a in forget_authors])
  verbmem = verbmem_rows(forget_passages, lm.verbmem_prefix)
  suite = EvalSets(
      forget=qa_set(tokenizer, [q.qa for q in corpus.author_qas(forget_authors)], length),
      retain=qa_set(tokenizer, retain_qas, length),
      known_people=qa_set(tokenizer, spread(list(corpus.known_people), lm.utility_eval_size),
                          length),
      world_facts=qa_set(tokenizer, spread(list(corpus.world_facts), lm.utility_eval_size),
                         length),
      holdout=qa_rows(tokenizer, [q.qa for q in corpus.author_qas(holdout)], length),
      forget_passages=forget_passages,
      holdout_passages=first([corpus.passages[a] for a in holdout]),
      verbmem=verbmem,
      verbmem_references=tuple(tokenizer.decode(row[p:][m[p:] > 0]) for row, p, m in
                               zip(verbmem['x'], verbmem['p'], verbmem['m'])))
  return LMData(corpus, tokenizer, length,
                text.lm_examples(tokenizer, corpus.pretraining_documents(), length),
                train, forget_idx, retain_idx, suite, alternate, owner)
