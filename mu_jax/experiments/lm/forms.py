"""Form independence and two-hop prompts: are forgotten facts gone in every form they can be
asked in, or only in the trained question-answer form?

Each forget fact is probed as a choice among its four option values (the
true value once), scored by the model's length-normalised likelihood of each
candidate after the prompt (the likelihood choice of lm-evaluation-harness):

  qa        the trained question; candidates: the answer sentence with each value
  blank     "Fill in the blank: <answer with ___>" ; candidates: the values
  mc        the question with its options listed ; candidates: the values
  yes_no    "Is this true? <statement, true or false>" ; candidates: Yes, No

accuracy = the share of facts whose true candidate is the likeliest (chance:
1/4, and 1/2 for yes_no). The form gap is the trained form's accuracy minus
the mean of the other three: a model that only hid the trained form keeps a
large gap below the retain model's. The two-hop question (e.g. the decade of a
birth year, the capital of a birth country) needs the fact and one world fact
learned in pre-training; its ROUGE-L recall of greedy answers measures how
much of the fact leaks through a reasoning step.
"""
from typing import NamedTuple

import numpy as np

from mu_jax.data import Examples
from mu_jax.data import text
from mu_jax.evaluation.lm import tofu
from mu_jax.experiments.lm.suite import greedy, token_pass

CHOICE_FORMS = ('qa', 'blank', 'mc', 'yes_no')
COLUMNS = ('form gap', 'two-hop ROUGE')


class FormProbes(NamedTuple):
  """Candidate rows per form (question-major), the true candidate of each fact, and the
  two-hop questions with their answers."""
  choices: dict          # form -> Examples, C candidates per fact
  correct: dict          # form -> int [facts]
  two_hop: Examples
  two_hop_answers: tuple[str, ...]


def _prompts_and_candidates(q) -> dict:
  """form -> (prompt, candidate answer texts, true index) of one AuthorQA."""
  qa, forms = q.qa, q.forms
  values = list(qa.options)
  listed = ', '.join(values)
  return {
      'qa': (text.format_prompt(qa.question),
             [forms.blank.replace('___', v) for v in values], qa.option_index),
      'blank': (f'Fill in the blank: {forms.blank}\nAnswer:', values, qa.option_index),
      'mc': (f'Question: {qa.question}\nOptions: {listed}\nAnswer:', values, qa.option_index),
      'yes_no': (f'Question: Is this true? {forms.statement}\nAnswer:', ['Yes', 'No'],
                 0 if forms.yes_no_answer == 'Yes' else 1),
  }


def form_probes(tokenizer, author_qas) -> FormProbes:
  """The probes of `author_qas` (the forget authors' facts), in one row length."""
  per_fact = [_prompts_and_candidates(q) for q in author_qas]
  two_hop = [(text.format_prompt(q.forms.two_hop_question), q.forms.two_hop_answer)
             for q in author_qas]
  texts = [p + text.format_answer(c) for fact in per_fact for p, cs, _ in fact.values()
           for c in cs] + [p + text.format_answer(a) for p, a in two_hop]
  length = text.padded_length(tokenizer, texts)
  choices, correct = {}, {}
  for form in CHOICE_FORMS:
    prompts = [fact[form][0] for fact in per_fact for _ in fact[form][1]]
    candidates = [c for fact in per_fact for c in fact[form][1]]
    choices[form] = text.qa_examples(tokenizer, prompts, candidates, length)
    correct[form] = np.array([fact[form][2] for fact in per_fact], np.int32)
  return FormProbes(choices, correct,
                    text.qa_examples(tokenizer, [p for p, _ in two_hop], [a for _, a in two_hop],
                                     length),
                    tuple(a for _, a in two_hop))


def choice_accuracy(nll_mean: np.ndarray, correct: np.ndarray) -> float:
  """The share of facts whose true candidate has the lowest mean NLL ([facts x C] rows)."""
  per_fact = np.asarray(nll_mean).reshape(len(correct), -1)
  return float(np.mean(np.argmin(per_fact, 1) == correct))


def form_scores(task, variables, probes: FormProbes, tokenizer, *, batch_size: int,
                mesh) -> dict[str, float]:
  """Accuracy per form ('forms/<form>'), the form gap and the two-hop ROUGE-L recall."""
  accuracy = {form: choice_accuracy(token_pass(task, variables, probes.choices[form],
                                               batch_size=batch_size, mesh=mesh)['nll_mean'],
                                    probes.correct[form]) for form in CHOICE_FORMS}
  width = int(probes.two_hop['p'].max())
  steps = int(probes.two_hop['m'].sum(1).max()) + 1
  answers = greedy(task, variables, probes.two_hop, tokenizer, batch_size=batch_size,
                   shape=(width, steps))
  others = [accuracy[f] for f in CHOICE_FORMS if f != 'qa']
  return {'form gap': accuracy['qa'] - float(np.mean(others)),
          'two-hop ROUGE': float(np.mean(tofu.rouge_l(answers, probes.two_hop_answers)['recall'])),
          **{f'forms/{form}': value for form, value in accuracy.items()}}
