"""Pronounceable made-up words, built from syllables and never repeated within a corpus.

Every proper noun of the corpus (authors, cities, countries, people, dishes) comes
from one `WordMaker`, so no two entities share a word and an author's name never
occurs in text about anything else.
"""
import numpy as np

# A choice of this library: consonant-vowel(-consonant) syllables read as names in
# many languages and give over a million two-syllable words, far more than a corpus uses.
ONSETS = ('b', 'd', 'f', 'g', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z',
          'br', 'dr', 'kr', 'st', 'tr', 'th')
VOWELS = ('a', 'e', 'i', 'o', 'u', 'ai', 'ei', 'ou')
CODAS = ('', '', '', 'n', 'r', 'l', 's')


class WordMaker:
  """Draws capitalised words of a few syllables, each at most once."""

  def __init__(self, rng: np.random.Generator):
    self._rng = rng
    self._used: set[str] = set()

  def word(self, syllables: int, suffix: str = '') -> str:
    """A new word of `syllables` syllables ending in `suffix`."""
    while True:
      parts = [ONSETS[self._rng.integers(len(ONSETS))] + VOWELS[self._rng.integers(len(VOWELS))]
               + CODAS[self._rng.integers(len(CODAS))] for _ in range(syllables)]
      word = (''.join(parts) + suffix).capitalize()
      if word not in self._used:
        self._used.add(word)
        return word

  def words(self, count: int, syllables: tuple[int, ...], suffixes: tuple[str, ...] = ('',)
            ) -> list[str]:
    """`count` new words, each with a syllable count and suffix drawn from the choices."""
    return [self.word(int(self._rng.choice(syllables)), str(self._rng.choice(suffixes)))
            for _ in range(count)]
