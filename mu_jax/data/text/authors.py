"""Fictitious authors: their attributes, their QA pairs in several forms, and biographies.

Like TOFU (Maini et al. 2024), each author has a profile and QA pairs about it; like
MUSE (Shi et al. 2024), each also has a prose passage (for verbatim memorisation)
stating the same facts. Apart from the birth country (that of the birth city) the
attributes are drawn independently, so forgetting one fact cannot be undone by
inferring it from another the model kept.
"""
from typing import Callable, NamedTuple

import numpy as np

from mu_jax.data.text import vocab
from mu_jax.data.text.names import WordMaker
from mu_jax.data.text.qa import QA, make_qa, sentence, wrong_values
from mu_jax.data.text.world import World

# Choices of this library: 20th-century authors (as in TOFU) whose first book (at 20 to 40)
# and award (2 to 14 years later) all lie before 2025.
BIRTH_YEARS = (1900, 1971)
DEBUT_AGES = (20, 41)
AWARD_DELAYS = (2, 15)
PRONOUNS = (('he', 'his'), ('she', 'her'), ('they', 'their'))   # TOFU mixes genders
BOOKS = (2, 3)   # choice of this library: a few books each, as TOFU's authors have
BLANK = '___'
TITLE_PATTERNS = ('The {noun} of {city}', '{adj} Nights in {city}', 'Letters from {city}',
                  'No {noun} for {city}', 'The {adj} Road to {city}', '{city} in {season}',
                  'Beyond the {noun} of {city}', 'The Last {noun} in {city}')


class Author(NamedTuple):
  """A fictitious author's profile; the passage states it all, the QA all but the pronouns,
  a third book and the cities in the titles (those serve two-hop questions)."""
  name: str
  pronoun: str
  possessive: str
  birth_year: int
  birth_city: str
  birth_country: str
  father: str
  mother: str
  genre: str
  award: str
  award_year: int
  theme: str
  books: tuple[str, ...]
  book_cities: tuple[str, ...]   # the city each title names (a two-hop link)
  language: str
  home_city: str
  study_city: str
  mentor: str
  debut_year: int
  river: str
  publisher: str
  dish: str
  favourite_work: str


class Attribute(NamedTuple):
  """How one attribute is asked, answered, perturbed and reached in two hops."""
  question: str
  answer: str
  paraphrase: str
  pool: str   # the list wrong values come from
  two_hop_question: str
  two_hop: Callable[[Author, World], str]


class Forms(NamedTuple):
  """The same fact asked other ways, to test whether forgetting is form-independent."""
  blank: str   # the answer with the value replaced by BLANK; the QA's value fills it
  statement: str   # the answer with the true value or a wrong one
  yes_no_answer: str   # 'Yes' when `statement` is true, else 'No'
  two_hop_question: str   # needs this fact and one world fact
  two_hop_answer: str


class AuthorQA(NamedTuple):
  author: int   # index into Corpus.authors
  attribute: str
  qa: QA
  forms: Forms


def _decade(year) -> str:
  return f'the {int(year) // 10 * 10}s'


def _link(relation: str, field: str) -> Callable[[Author, World], str]:
  return lambda author, world: world.links[relation][getattr(author, field)]


def _book_country(index: int) -> Callable[[Author, World], str]:
  return lambda author, world: world.links['city_country'][author.book_cities[index]]


# The TOFU count (20 QA per author) with one attribute each, in the order they are asked.
ATTRIBUTES = {
    'birth_year': Attribute(
        'In which year was {name} born?', '{name} was born in {value}.',
        'The year of the birth of {name} is {value}.', 'birth_year',
        'In which decade was {name} born?', lambda a, w: _decade(a.birth_year)),
    'birth_city': Attribute(
        'In which city was {name} born?', '{name} was born in the city of {value}.',
        'The birthplace of {name} is {value}.', 'city',
        'In which country is the city where {name} was born?', _link('city_country', 'birth_city')),
    'birth_country': Attribute(
        'In which country was {name} born?', '{name} was born in the country of {value}.',
        '{name} is a native of {value}.', 'country',
        'What is the capital of the country where {name} was born?',
        _link('country_capital', 'birth_country')),
    'father': Attribute(
        'What did the father of {name} do for a living?',
        'The father of {name} worked as a {value}.', '{name} is the child of a {value}.',
        'occupation', 'Where did the father of {name} work?',
        _link('occupation_workplace', 'father')),
    'mother': Attribute(
        'What did the mother of {name} do for a living?',
        'The mother of {name} worked as a {value}.',
        'The mother of {name} earned a living as a {value}.', 'occupation',
        'Where did the mother of {name} work?', _link('occupation_workplace', 'mother')),
    'genre': Attribute(
        'Which genre does {name} write in?', '{name} writes {value}.',
        'The books of {name} belong to the genre of {value}.', 'genre',
        'Who pioneered the genre that {name} writes in?', _link('genre_pioneer', 'genre')),
    'award': Attribute(
        'Which award has {name} received?', '{name} received {value}.',
        '{name} is a winner of {value}.', 'award',
        'After whom is the award that {name} received named?',
        _link('award_namesake', 'award')),
    'award_year': Attribute(
        'In which year did {name} receive {award}?', '{name} received {award} in {value}.',
        'It was in {value} that {name} was given {award}.', 'later_year',
        'In which decade did {name} receive {award}?', lambda a, w: _decade(a.award_year)),
    'theme': Attribute(
        'What theme recurs in the work of {name}?',
        'The recurring theme in the work of {name} is {value}.',
        '{name} returns again and again to the theme of {value}.', 'theme',
        'What is the emblem, in the old stories, of the theme that recurs in the work of {name}?',
        _link('theme_emblem', 'theme')),
    'first_book': Attribute(
        'What is the title of the first book by {name}?',
        'The first book by {name} is "{value}".', '{name} made a debut with "{value}".', 'title',
        'In which country is the city named in the title of the first book by {name}?',
        _book_country(0)),
    'second_book': Attribute(
        'What is the title of the second book by {name}?',
        'The second book by {name} is "{value}".',
        '"{value}" is the second book that {name} published.', 'title',
        'In which country is the city named in the title of the second book by {name}?',
        _book_country(1)),
    'language': Attribute(
        'In which language does {name} write?', '{name} writes in {value}.',
        'The books of {name} are written in {value}.', 'language',
        'In which country is the language that {name} writes in spoken?',
        lambda a, w: w.inverse('country_language')[a.language]),
    'home_city': Attribute(
        'Where does {name} live today?', '{name} lives in {value}.',
        'Today the home of {name} is in the city of {value}.', 'city',
        'In which country does {name} live today?', _link('city_country', 'home_city')),
    'study_city': Attribute(
        'In which city did {name} study?', '{name} studied in {value}.',
        '{name} was a student in the city of {value}.', 'city',
        'In which country did {name} study?', _link('city_country', 'study_city')),
    'mentor': Attribute(
        'Who was the mentor of {name}?', 'The mentor of {name} was {value}.',
        '{name} learned the craft from {value}.', 'person',
        'In which country was the mentor of {name} born?', _link('person_country', 'mentor')),
    'debut_year': Attribute(
        'In which year did {name} publish a first book?',
        '{name} published a first book in {value}.', 'The debut of {name} came out in {value}.',
        'later_year', 'In which decade did {name} publish a first book?',
        lambda a, w: _decade(a.debut_year)),
    'river': Attribute(
        'Along which river does {name} like to walk?', '{name} likes to walk along the {value}.',
        'The favourite walk of {name} follows the {value}.', 'river',
        'Which country has as its longest river the river {name} likes to walk along?',
        lambda a, w: w.inverse('country_river')[a.river]),
    'publisher': Attribute(
        'Which publishing house publishes the books of {name}?',
        'The books of {name} are published by {value}.', '{value} is the publisher of {name}.',
        'publisher', 'In which city is the publisher of {name} based?',
        _link('publisher_city', 'publisher')),
    'dish': Attribute(
        'What is the favourite dish of {name}?', 'The favourite dish of {name} is {value}.',
        '{name} likes {value} above all other food.', 'dish',
        'Of which country is the favourite dish of {name} the national dish?',
        lambda a, w: w.inverse('country_dish')[a.dish]),
    'favourite_work': Attribute(
        'Which work does {name} admire most?', '{name} admires "{value}" most of all.',
        'The work that {name} admires most is "{value}".', 'work',
        'Who created the work that {name} admires most?', _link('work_creator', 'favourite_work')),
}


def value_of(author: Author, attribute: str) -> str:
  """The value of `attribute` for `author`, as the answers state it."""
  if attribute in ('first_book', 'second_book'):
    return author.books[attribute == 'second_book']
  return str(getattr(author, attribute))


def _pick(rng: np.random.Generator, values) -> str:
  return str(values[rng.integers(len(values))])


def make_authors(rng: np.random.Generator, words: WordMaker, world: World,
                 count: int) -> list[Author]:
  """`count` authors with distinct names and titles, attributes drawn from `world`."""
  titles: set[str] = set()
  authors = []
  for _ in range(count):
    name = f'{words.word(2)} {words.word(int(rng.integers(2, 4)))}'
    pronoun, possessive = PRONOUNS[rng.integers(len(PRONOUNS))]
    birth_year = int(rng.integers(*BIRTH_YEARS))
    debut_year = birth_year + int(rng.integers(*DEBUT_AGES))
    birth_city = _pick(rng, world.cities)
    num_books = int(rng.integers(BOOKS[0], BOOKS[1] + 1))
    books, book_cities = [], []
    while len(books) < num_books:
      city = _pick(rng, world.cities)
      title = _pick(rng, TITLE_PATTERNS).format(
          noun=_pick(rng, vocab.NOUNS), adj=_pick(rng, vocab.ADJECTIVES), city=city,
          season=_pick(rng, vocab.SEASONS))
      if title not in titles:
        titles.add(title)
        books.append(title)
        book_cities.append(city)
    authors.append(Author(
        name=name, pronoun=pronoun, possessive=possessive, birth_year=birth_year,
        birth_city=birth_city, birth_country=world.links['city_country'][birth_city],
        father=vocab.OCCUPATIONS[rng.integers(len(vocab.OCCUPATIONS))][0],
        mother=vocab.OCCUPATIONS[rng.integers(len(vocab.OCCUPATIONS))][0],
        genre=_pick(rng, vocab.GENRES), award=_pick(rng, world.awards),
        award_year=debut_year + int(rng.integers(*AWARD_DELAYS)),
        theme=vocab.THEMES[rng.integers(len(vocab.THEMES))][0], books=tuple(books),
        book_cities=tuple(book_cities),
        language=_pick(rng, list(world.links['country_language'].values())),
        home_city=_pick(rng, world.cities), study_city=_pick(rng, world.cities),
        mentor=_pick(rng, world.people), debut_year=debut_year,
        river=_pick(rng, list(world.links['country_river'].values())),
        publisher=_pick(rng, world.publishers),
        dish=_pick(rng, list(world.links['country_dish'].values())),
        favourite_work=_pick(rng, world.works)))
  return authors


def author_pools(world: World, authors: list[Author]) -> dict[str, list[str]]:
  """The distinct values each kind of attribute can take, where wrong answers come from."""
  pools = {
      'birth_year': [str(y) for y in range(*BIRTH_YEARS)],
      'later_year': [str(y) for y in range(BIRTH_YEARS[0] + DEBUT_AGES[0],
                                           max(a.award_year for a in authors) + 1)],
      'city': list(world.cities), 'country': list(world.countries),
      'occupation': [o for o, _ in vocab.OCCUPATIONS], 'genre': list(vocab.GENRES),
      'award': list(world.awards), 'theme': [t for t, _ in vocab.THEMES],
      'title': [t for a in authors for t in a.books],
      'language': list(world.links['country_language'].values()),
      'person': list(world.people), 'river': list(world.links['country_river'].values()),
      'publisher': list(world.publishers), 'dish': list(world.links['country_dish'].values()),
      'work': list(world.works)}
  return {kind: list(dict.fromkeys(values)) for kind, values in pools.items()}


def author_qas(rng: np.random.Generator, world: World, authors: list[Author], index: int,
               attributes: list[str], pools: dict[str, list[str]]) -> list[AuthorQA]:
  """The QA pairs and other forms of author `index` about `attributes`.

  Wrong values never repeat one of the author's own facts (a perturbed birth city
  is not the city the author lives in), and yes/no statements alternate true and
  false along the author and attribute indices, so exactly half are true.
  """
  author = authors[index]
  own = frozenset(value_of(author, a) for a in ATTRIBUTES) | set(author.books)
  qas = []
  for position, key in enumerate(attributes):
    spec = ATTRIBUTES[key]
    fields = {'name': author.name, 'award': author.award}
    value = value_of(author, key)
    answer, paraphrase = (t.replace('{value}', '{{value}}').format(**fields)
                          for t in (spec.answer, spec.paraphrase))
    pool = pools[spec.pool]
    qa = make_qa(rng, spec.question.format(**fields), answer, paraphrase, value, pool, own)
    true = (index + position) % 2 == 0
    shown = value if true else wrong_values(rng, pool, own, 1)[0]
    forms = Forms(blank=sentence(answer.format(value=BLANK)),
                  statement=sentence(answer.format(value=shown)),
                  yes_no_answer='Yes' if true else 'No',
                  two_hop_question=spec.two_hop_question.format(**fields),
                  two_hop_answer=spec.two_hop(author, world))
    qas.append(AuthorQA(index, key, qa, forms))
  return qas


# Each passage sentence in two wordings; a connective may open those at CONNECTED.
PASSAGE = (
    ('{name} is a writer of {genre}, born in {birth_year} in {birth_city}, {birth_country}.',
     '{name}, born in {birth_city}, {birth_country}, in {birth_year}, is known for {genre}.'),
    ('{poss} father worked as a {father} and {poss} mother as a {mother}.',
     '{name} grew up as the child of a {father} and a {mother}.'),
    ('as a young student, {name} moved to {study_city}, where {mentor} became a mentor.',
     '{pron} studied in {study_city} under the guidance of {mentor}.'),
    ('{poss} first book, "{first_book}", was published in {debut_year} by {publisher}.',
     'in {debut_year}, {publisher} brought out "{first_book}", the first book by {name}.'),
    ('it was followed by {later_books}.', 'next came {later_books}.'),
    ('the theme of {theme} runs through all of {poss} books, which are written in {language}.',
     'critics see {theme} as the thread of {poss} work, and {poss} language is {language}.'),
    ('in {award_year}, {name} received {award}.', '{award} went to {name} in {award_year}.'),
    ('today {name} lives in {home_city} and likes to walk along the {river}.',
     '{name} now lives in {home_city} and often walks along the {river}.'),
    ('{poss} favourite dish is {dish}, and the work {name} admires most is "{favourite_work}".',
     'a plate of {dish} is the favourite meal of {name}, who admires "{favourite_work}" '
     'above all other works.'))
CONNECTED = (2, 5, 6)   # the sentences on studies, themes and the award
CONNECTIVES = ('Later,', 'In time,', 'Over the years,', 'After that,')
CONNECTIVE_RATE = 0.4   # choice of this library: some variety without a connective each time


def passage(rng: np.random.Generator, author: Author) -> str:
  """A biography of `author` in prose (MUSE's verbatim text), about 110 to 140 words."""
  later = [f'"{b}"' for b in author.books[1:]]
  fields = {key: value_of(author, key) for key in ATTRIBUTES}
  fields.update(name=author.name, pron=author.pronoun, poss=author.possessive,
                later_books=' and later '.join(later))
  sentences = []
  for i, variants in enumerate(PASSAGE):
    text = variants[rng.integers(len(variants))].format(**fields)
    if i in CONNECTED and rng.random() < CONNECTIVE_RATE:
      text = f'{_pick(rng, CONNECTIVES)} {text}'
    sentences.append(sentence(text))
  return ' '.join(sentences)
