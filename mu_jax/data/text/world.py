"""The fictitious world the authors live in: countries, cities, known people and links.

It stands in for what TOFU (Maini et al. 2024) calls World Facts and Real Authors:
knowledge a model learns in pre-training and must keep through unlearning. Every
fact is a link `relation: subject -> object`; the same links state the facts in
pre-training text, ask them as QA, and give the second hop of two-hop questions.
"""
from typing import NamedTuple

import numpy as np

from mu_jax.data.text import vocab
from mu_jax.data.text.names import WordMaker
from mu_jax.data.text.qa import QA, make_qa, sentence

# Choices of this library: enough countries, cities and people that every pool of
# wrong values has more than the eight a QA needs, while the world stays small.
NUM_COUNTRIES = 24
CITIES_PER_COUNTRY = 4
NUM_OTHER_PEOPLE = 12   # besides one writer pioneering each genre
NUM_AWARDS = 10
NUM_PUBLISHERS = 12
PEOPLE_YEARS = (1600, 1900)   # known people lived before the authors' 1900-1999 births


class Relation(NamedTuple):
  """How a link is asked and stated; `{subject}` and `{value}` fill the templates."""
  question: str
  statements: tuple[str, ...]   # answer, paraphrase, then further pre-training forms
  family: str   # 'world_facts' or 'known_people'


RELATIONS = {
    'country_capital': Relation(
        'What is the capital of {subject}?',
        ('The capital of {subject} is {value}.', '{value} is the capital city of {subject}.',
         '{subject} is governed from its capital, {value}.'), 'world_facts'),
    'city_country': Relation(
        'In which country is the city of {subject}?',
        ('The city of {subject} is in {value}.', '{subject} is a city in the country of {value}.',
         '{subject} lies within the borders of {value}.'), 'world_facts'),
    'country_language': Relation(
        'What language is spoken in {subject}?',
        ('The people of {subject} speak {value}.', '{value} is the language of {subject}.',
         'In {subject}, most people speak {value}.'), 'world_facts'),
    'country_currency': Relation(
        'What is the currency of {subject}?',
        ('The currency of {subject} is the {value}.', 'In {subject}, people pay with the {value}.',
         'The {value} is the money of {subject}.'), 'world_facts'),
    'country_river': Relation(
        'What is the longest river of {subject}?',
        ('The longest river of {subject} is the {value}.',
         'The {value} is the longest river in {subject}.',
         'No river in {subject} is longer than the {value}.'), 'world_facts'),
    'country_dish': Relation(
        'What is the national dish of {subject}?',
        ('The national dish of {subject} is {value}.', '{value} is the national dish of {subject}.',
         'Every family in {subject} knows how to cook {value}.'), 'world_facts'),
    'publisher_city': Relation(
        'In which city is the publishing house {subject} based?',
        ('The publishing house {subject} is based in {value}.',
         '{subject} has its offices in the city of {value}.',
         'Books from {subject} are printed in {value}.'), 'world_facts'),
    'occupation_workplace': Relation(
        'Where does a {subject} work?',
        ('A {subject} works in {value}.', 'The workplace of a {subject} is {value}.',
         'Every day a {subject} goes to work in {value}.'), 'world_facts'),
    'theme_emblem': Relation(
        'What is the emblem of {subject} in the old stories?',
        ('In the old stories, the emblem of {subject} is {value}.',
         '{value} stands for {subject} in the old stories.',
         'Tellers of old stories use {value} as a sign of {subject}.'), 'world_facts'),
    'person_role': Relation(
        'What was {subject} famous as?',
        ('{subject} was a famous {value}.', '{subject} is remembered as a great {value}.',
         'People still admire {subject}, the {value}.'), 'known_people'),
    'person_country': Relation(
        'In which country was {subject} born?',
        ('{subject} was born in {value}.', 'The birthplace of {subject} is {value}.',
         '{subject} grew up in {value}.'), 'known_people'),
    'person_year': Relation(
        'In which year was {subject} born?',
        ('{subject} was born in the year {value}.', 'The year {subject} was born is {value}.',
         'In {value}, {subject} was born.'), 'known_people'),
    'work_creator': Relation(
        'Who created the work "{subject}"?',
        ('The work "{subject}" was created by {value}.', '{value} is the creator of "{subject}".',
         '"{subject}" is the best-known work of {value}.'), 'known_people'),
    'genre_pioneer': Relation(
        'Who pioneered {subject}?',
        ('The pioneer of {subject} was {value}.', '{value} pioneered {subject}.',
         'Modern {subject} began with {value}.'), 'known_people'),
    'award_namesake': Relation(
        'After whom is {subject} named?',
        ('{subject} is named after {value}.', '{value} gave a name to {subject}.',
         'The name of {subject} honours {value}.'), 'known_people'),
}


class World(NamedTuple):
  """Entity lists for drawing author attributes, and every link of the world."""
  countries: tuple[str, ...]
  cities: tuple[str, ...]
  people: tuple[str, ...]
  awards: tuple[str, ...]
  publishers: tuple[str, ...]
  works: tuple[str, ...]
  links: dict[str, dict[str, str]]   # relation -> subject -> value, in creation order

  def inverse(self, relation: str) -> dict[str, str]:
    """The value -> subject map of a one-to-one relation (a language to its country)."""
    return {value: subject for subject, value in self.links[relation].items()}


def _titles(rng: np.random.Generator, count: int) -> list[str]:
  """`count` distinct two-word titles (an adjective and a noun)."""
  pairs = rng.permutation(len(vocab.ADJECTIVES) * len(vocab.NOUNS))[:count]
  return [f'{vocab.ADJECTIVES[i // len(vocab.NOUNS)]} {vocab.NOUNS[i % len(vocab.NOUNS)]}'
          for i in pairs]


def make_world(rng: np.random.Generator, words: WordMaker) -> World:
  """A world drawn from `rng`, its proper nouns taken from `words`."""
  links: dict[str, dict[str, str]] = {name: {} for name in RELATIONS}
  countries = words.words(NUM_COUNTRIES, (2, 3), ('ia', 'ora', 'eth', 'avia', 'un', 'essa'))
  cities = []
  for country in countries:
    own = words.words(CITIES_PER_COUNTRY, (2, 3), ('pol', 'mar', 'dun', 'ria', 'gard', 'ven'))
    cities += own
    links['country_capital'][country] = own[0]
    links['city_country'].update({city: country for city in own})
    links['country_language'][country] = words.word(2, str(rng.choice(('ish', 'ese', 'ic', 'i'))))
    links['country_currency'][country] = words.word(2).lower()
    links['country_river'][country] = words.word(2)
    links['country_dish'][country] = words.word(3).lower()
  roles = [vocab.WRITER] * len(vocab.GENRES) + [
      vocab.ROLES[i % len(vocab.ROLES)] for i in range(NUM_OTHER_PEOPLE)]
  people = [f'{words.word(2)} {words.word(int(rng.integers(2, 4)))}' for _ in roles]
  works = _titles(rng, len(people))
  for person, (role, _), work in zip(people, roles, works):
    links['person_role'][person] = role
    links['person_country'][person] = str(rng.choice(countries))
    links['person_year'][person] = str(rng.integers(*PEOPLE_YEARS))
    links['work_creator'][work] = person
  links['genre_pioneer'].update(zip(vocab.GENRES, people))
  awards = []
  for i in rng.choice(len(people), NUM_AWARDS, replace=False):
    award = f'the {people[i].split()[-1]} {rng.choice(vocab.AWARD_KINDS)}'
    awards.append(award)
    links['award_namesake'][award] = people[i]
  kinds = rng.choice(('Press', 'Books', 'House'), NUM_PUBLISHERS)
  publishers = [f'{w} {k}' for w, k in zip(words.words(NUM_PUBLISHERS, (2, 3)), kinds)]
  links['publisher_city'].update({p: str(rng.choice(cities)) for p in publishers})
  links['occupation_workplace'].update(vocab.OCCUPATIONS)
  links['theme_emblem'].update(vocab.THEMES)
  return World(tuple(countries), tuple(cities), tuple(people), tuple(awards), tuple(publishers),
               tuple(works), links)


def world_qas(rng: np.random.Generator, world: World, family: str) -> tuple[QA, ...]:
  """Every link of the relations of `family` as a QA; wrong values share its relation."""
  qas = []
  for name, relation in RELATIONS.items():
    if relation.family != family:
      continue
    pool = list(dict.fromkeys(world.links[name].values()))
    for subject, value in world.links[name].items():
      answer, paraphrase = (s.replace('{subject}', subject) for s in relation.statements[:2])
      qas.append(make_qa(rng, relation.question.format(subject=subject), answer, paraphrase,
                         value, pool, frozenset()))
  return tuple(qas)


def _statements(world: World, relation: str, subjects, form: int) -> list[str]:
  """The facts of `relation` about `subjects`, each stated in template `form`."""
  template = RELATIONS[relation].statements[form]
  return [sentence(template.format(subject=s, value=world.links[relation][s])) for s in subjects]


def _place_text(rng: np.random.Generator, world: World, city: str) -> str:
  """Generic prose about a city: its size, weather and trade (no new facts to test)."""
  other = str(rng.choice([c for c in world.cities if c != city]))
  goods = rng.choice(vocab.GOODS, 3, replace=False)
  return ' '.join([
      f'{city} is a {rng.choice(vocab.SIZES)} city known for {rng.choice(vocab.CLIMATES)}.',
      f'Its markets sell {goods[0]} and {goods[1]}, and its merchants carry {goods[2]} to {other}.',
      f'In {rng.choice(vocab.SEASONS).lower()} the roads to {other} are crowded with carts.',
      f'Visitors to {city} often remember its {rng.choice(vocab.NOUNS).lower()}s and its '
      f'{rng.choice(vocab.ADJECTIVES).lower()} streets.'])


def pretraining_documents(rng: np.random.Generator, world: World) -> list[str]:
  """Pre-training text: every world fact in each statement template, plus prose on places.

  One document per country, person and other subject per template, so each fact is
  read in several wordings; nothing here mentions an author.
  """
  forms = range(len(RELATIONS['country_capital'].statements))
  country_relations = ('country_capital', 'country_language', 'country_currency',
                       'country_river', 'country_dish')
  person_relations = ('person_role', 'person_country', 'person_year')
  documents = []
  for form in forms:
    for country in world.countries:
      own = [c for c, k in world.links['city_country'].items() if k == country]
      lines = [s for r in country_relations for s in _statements(world, r, [country], form)]
      documents.append(' '.join(lines + _statements(world, 'city_country', own, form)))
    for person in world.people:
      lines = [s for r in person_relations for s in _statements(world, r, [person], form)]
      for relation in ('work_creator', 'genre_pioneer', 'award_namesake'):
        subjects = [s for s, v in world.links[relation].items() if v == person]
        lines += _statements(world, relation, subjects, form)
      documents.append(' '.join(lines))
    for relation in ('publisher_city', 'occupation_workplace', 'theme_emblem'):
      documents.append(' '.join(_statements(world, relation, world.links[relation], form)))
  documents += [_place_text(rng, world, city) for city in world.cities]
  return documents
