"""One question-answer pair in TOFU's form, built from sentence templates.

TOFU (Maini et al. 2024) pairs each question with its answer, a paraphrased
answer and perturbed answers (the paraphrase with wrong facts) for the truth
ratio; its world-facts and real-authors sets add four multiple-choice options.
Every family of this corpus uses the same record so the metrics treat them alike.
"""
from typing import AbstractSet, NamedTuple, Sequence

import numpy as np

# TOFU (Maini et al. 2024): five perturbed answers per question.
NUM_PERTURBED = 5
# TOFU (Maini et al. 2024): world facts and real authors have four options each.
NUM_OPTIONS = 4


class QA(NamedTuple):
  """A question, its answer sentence, the forms the truth ratio needs, and options."""
  question: str
  answer: str
  paraphrased_answer: str   # another sentence stating the same value
  perturbed_answers: tuple[str, ...]   # the paraphrase with NUM_PERTURBED wrong values
  value: str   # the fact itself, e.g. a city name or a year
  options: tuple[str, ...]   # NUM_OPTIONS values, `value` once among them
  option_index: int   # where `value` sits in `options`


def sentence(text: str) -> str:
  """`text` with its first letter capitalised (a value may open the sentence)."""
  return text[0].upper() + text[1:]


def wrong_values(rng: np.random.Generator, pool: Sequence[str], excluded: AbstractSet[str],
                 count: int) -> list[str]:
  """`count` distinct values of `pool` not in `excluded`, in random order.

  Draws with rejection (cheap for pools much larger than `count + len(excluded)`,
  which every pool of the corpus is).
  """
  chosen: list[str] = []
  while len(chosen) < count:
    for i in rng.integers(len(pool), size=2 * count):
      if pool[i] not in excluded and pool[i] not in chosen and len(chosen) < count:
        chosen.append(pool[i])
  return chosen


def make_qa(rng: np.random.Generator, question: str, answer: str, paraphrase: str, value: str,
            pool: Sequence[str], excluded: AbstractSet[str]) -> QA:
  """A QA whose answer templates take `{value}`; wrong values come from `pool`.

  `pool` holds distinct values; neither `value` nor any of `excluded` is used as a wrong one.
  """
  excluded = excluded | {value}
  perturbed = wrong_values(rng, pool, excluded, NUM_PERTURBED)
  options = wrong_values(rng, pool, excluded, NUM_OPTIONS - 1)
  index = int(rng.integers(NUM_OPTIONS))
  options.insert(index, value)
  return QA(question=question, answer=sentence(answer.format(value=value)),
            paraphrased_answer=sentence(paraphrase.format(value=value)),
            perturbed_answers=tuple(sentence(paraphrase.format(value=v)) for v in perturbed),
            value=value, options=tuple(options), option_index=index)
