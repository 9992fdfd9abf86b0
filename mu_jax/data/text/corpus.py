"""A TOFU/MUSE-style corpus of fictitious facts, generated offline from a seed.

TOFU (Maini et al. 2024) fine-tunes a model on QA about 200 fictitious authors
and forgets the last 1, 5 or 10 % of them; MUSE (Shi et al. 2024) also forgets
verbatim passages. Here the authors, their QA (with paraphrased and perturbed
answers and other forms of each fact), one passage each, a held-out set of
authors never trained on, and the pre-training text about a fictitious world are
all drawn from one numpy Generator, so a seed names the whole data set.
"""
import dataclasses

import numpy as np

from mu_jax.data.text import authors as authors_lib
from mu_jax.data.text import world as world_lib
from mu_jax.data.text.authors import Author, AuthorQA
from mu_jax.data.text.names import WordMaker
from mu_jax.data.text.qa import QA
from mu_jax.data.text.world import World
from mu_jax.errors import MuJaxError

# TOFU (Maini et al. 2024): forget01/05/10 are the last 1, 5 and 10 % of the authors.
FORGET_SPLITS = {'forget01': 1, 'forget05': 5, 'forget10': 10}
SOURCE = 'tofu'   # the name configs give this generated corpus (config.data.source)
HOLDOUT_FRACTION = 0.1   # choice of this library: as many held-out authors as forget10 has


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Every text of the benchmark; authors [0, num_trained) are trained, the rest held out."""
  seed: int
  num_trained: int
  authors: tuple[Author, ...]
  qas: tuple[AuthorQA, ...]   # by author, then attribute
  passages: tuple[str, ...]   # one per author, MUSE's verbatim text
  world: World
  world_facts: tuple[QA, ...]
  known_people: tuple[QA, ...]
  pretraining: tuple[str, ...]   # world knowledge and generic prose; no author facts

  def forget_authors(self, split: str) -> list[int]:
    """The indices of the authors `split` forgets: the last ones trained, as in TOFU."""
    return list(range(self.num_trained - self._forget_size(split), self.num_trained))

  def retain_authors(self, split: str) -> list[int]:
    """The indices of the trained authors `split` keeps."""
    return list(range(self.num_trained - self._forget_size(split)))

  def holdout_authors(self) -> list[int]:
    """The indices of the authors generated alike but never trained on."""
    return list(range(self.num_trained, len(self.authors)))

  def author_qas(self, indices) -> list[AuthorQA]:
    """The QA of the authors at `indices`, in the order given."""
    wanted = {int(i): n for n, i in enumerate(indices)}
    return sorted((q for q in self.qas if q.author in wanted), key=lambda q: wanted[q.author])

  def pretraining_documents(self) -> list[str]:
    """The pre-training documents: world facts in several wordings and generic prose."""
    return list(self.pretraining)

  def texts(self) -> list[str]:
    """Every text a tokenizer should cover, in a fixed order."""
    out = list(self.pretraining) + list(self.passages)
    for qa in list(self.world_facts) + list(self.known_people) + [q.qa for q in self.qas]:
      out += [qa.question, qa.answer, qa.paraphrased_answer, *qa.perturbed_answers, *qa.options]
    for q in self.qas:
      out += [q.forms.blank, q.forms.statement, q.forms.yes_no_answer,
              q.forms.two_hop_question, q.forms.two_hop_answer]
    return out

  def _forget_size(self, split: str) -> int:
    return forget_size(split, self.num_trained)


def forget_size(split: str, num_trained: int) -> int:
  """How many of `num_trained` authors `split` forgets; refuses an unknown or empty split."""
  if split not in FORGET_SPLITS:
    raise MuJaxError(f'Unknown forget split {split!r}; use one of '
                     f'{", ".join(FORGET_SPLITS)}.')
  size = int(num_trained * FORGET_SPLITS[split] / 100 + 0.5)
  if size == 0:
    raise MuJaxError(f'{split} of {num_trained} authors holds no author; generate at '
                     f'least {int(np.ceil(50 / FORGET_SPLITS[split]))} authors or pick a '
                     f'larger split.')
  return size


def generate_corpus(
    seed: int = 0,   # choice of this library: seed 0 names the standard corpus
    num_authors: int = 200,   # TOFU (Maini et al. 2024): 200 authors
    qa_per_author: int = len(authors_lib.ATTRIBUTES),   # TOFU: 20 QA each, one per attribute
    holdout_authors: int | None = None,   # None: HOLDOUT_FRACTION of num_authors
) -> Corpus:
  """The corpus of `seed`: `num_authors` trained and `holdout_authors` held-out authors.

  Each author is asked about the first `qa_per_author` attributes in a fixed order,
  so every author gets the same kinds of question.
  """
  if num_authors < 1:
    raise MuJaxError(f'num_authors must be at least 1; got {num_authors}.')
  if not 1 <= qa_per_author <= len(authors_lib.ATTRIBUTES):
    raise MuJaxError(f'qa_per_author must be between 1 and {len(authors_lib.ATTRIBUTES)} '
                     f'(one per attribute); got {qa_per_author}.')
  if holdout_authors is None:
    holdout_authors = int(num_authors * HOLDOUT_FRACTION + 0.5)
  if holdout_authors < 0:
    raise MuJaxError(f'holdout_authors must be 0 or more; got {holdout_authors}.')
  rng = np.random.default_rng(seed)
  words = WordMaker(rng)
  world = world_lib.make_world(rng, words)
  authors = authors_lib.make_authors(rng, words, world, num_authors + holdout_authors)
  pools = authors_lib.author_pools(world, authors)
  attributes = list(authors_lib.ATTRIBUTES)[:qa_per_author]
  qas = [q for i in range(len(authors))
         for q in authors_lib.author_qas(rng, world, authors, i, attributes, pools)]
  return Corpus(
      seed=seed, num_trained=num_authors, authors=tuple(authors), qas=tuple(qas),
      passages=tuple(authors_lib.passage(rng, a) for a in authors), world=world,
      world_facts=world_lib.world_qas(rng, world, 'world_facts'),
      known_people=world_lib.world_qas(rng, world, 'known_people'),
      pretraining=tuple(world_lib.pretraining_documents(rng, world)))
