"""A SentencePiece BPE tokenizer trained on the generated corpus, kept in one file.

Why SentencePiece BPE rather than bytes: the made-up names and template phrases
become a few pieces each, so sequences are several times shorter than in bytes
and a small transformer trains and evaluates faster on a CPU; and real LLMs (e.g.
Gemma) ship SentencePiece models, so the same `Tokenizer` interface serves them.

Training is deterministic: one thread, the input in its given order, no sampling
or shuffling of sentences, so the same texts give a byte-identical model file.
"""
import io
import os
import string

import sentencepiece as spm

from mu_jax import files
from mu_jax.errors import MuJaxError

# Choice of this library: the default corpus (about 1,200 distinct words) supports up
# to about 8,000 pieces; 2,048 already makes the frequent names and template words
# single pieces (about 1.8 tokens a word) and keeps the embedding table small for CPU.
VOCAB_SIZE = 2048
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3   # pad=0 so zero-filled arrays are padding
# Every printable ASCII character and the newline of the prompt format gets a
# piece even when the training texts lack it, so no ASCII text maps to unk.
REQUIRED_CHARS = ''.join(c for c in string.printable if c not in ' \t\r\x0b\x0c')


class Tokenizer:
  """Text to ids and back with a SentencePiece model file."""

  def __init__(self, path: str):
    try:
      with open(path, 'rb') as f:
        proto = f.read()
      self._sp = spm.SentencePieceProcessor(model_proto=proto)
    except (OSError, RuntimeError) as e:
      raise MuJaxError(f'Cannot read a SentencePiece model from {path} ({e}); train one with '
                       f'train_tokenizer or pass the path of an existing .model file.') from e
    self.path = path

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  def encode(self, text: str) -> list[int]:
    """The ids of `text`, without BOS or EOS."""
    return self._sp.encode(text, out_type=int)

  def decode(self, ids) -> str:
    """The text of `ids`, skipping padding (BOS and EOS decode to nothing)."""
    return self._sp.decode([int(i) for i in ids if int(i) != self.pad_id])


def train_tokenizer(texts: list[str], path: str, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
  """Trains a BPE model on `texts`, writes it atomically to `path`, and loads it.

  Texts are kept as they are (no normalisation, no dummy leading space), so
  `decode(encode(text)) == text` and a prompt and its answer tokenised apart join
  up exactly as the whole text would; digits are split so years share pieces.
  """
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type='bpe',
        vocab_size=vocab_size, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
        character_coverage=1.0, required_chars=REQUIRED_CHARS, split_digits=True,
        normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=False, max_sentence_length=1 << 16, input_sentence_size=0,
        shuffle_input_sentence=False, num_threads=1, minloglevel=2)
  except RuntimeError as e:
    raise MuJaxError(f'SentencePiece could not train a {vocab_size}-piece vocabulary on these '
                     f'texts ({e}); pick a vocab_size the texts support.') from e
  files.atomic_write(path, model.getvalue())
  return Tokenizer(path)


def load_tokenizer(path: str) -> Tokenizer:
  """The tokenizer saved at `path`; a missing or unreadable file is refused."""
  if not os.path.isfile(path):
    raise MuJaxError(f'No tokenizer file at {path}; train one with train_tokenizer first.')
  return Tokenizer(path)
