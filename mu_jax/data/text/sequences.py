"""Token-id arrays for the language-model task: QA pairs and documents.

Every builder returns `Examples` with `x` int32 [N, length] (BOS, tokens, EOS, then
pad id 0), `m` float32 [N, length] marking the positions whose token the model is
scored on (predicted from position t - 1, so m[:, 0] is 0), and `p` int32 [N], the
length of the generation prompt x[i, :p[i]]. Too-long sequences are refused, never cut.
"""
import numpy as np

from mu_jax.data.examples import Examples
from mu_jax.data.text.tokenizer import Tokenizer
from mu_jax.errors import MuJaxError

# Plays the role of TOFU's chat template (open-unlearning's TOFU config: "Question: "
# before, "Answer: " after the question); the answer follows as " {answer}".
PROMPT = 'Question: {question}\nAnswer:'
LENGTH_MULTIPLE = 8   # choice of this library: lengths in multiples of 8 suit accelerator tiles


def format_prompt(question: str) -> str:
  """The prompt a QA pair is trained and asked with."""
  return PROMPT.format(question=question)


def format_answer(answer: str) -> str:
  """The answer text as it follows the prompt."""
  return f' {answer}'


def qa_text(question: str, answer: str) -> str:
  """The whole text of a QA pair, for `padded_length`."""
  return format_prompt(question) + format_answer(answer)


def _pack(tokenizer: Tokenizer, prompts: list[list[int]], targets: list[list[int]],
          length: int) -> Examples:
  """Rows BOS + prompt + target + EOS, scored on the target and EOS."""
  x = np.full((len(prompts), length), tokenizer.pad_id, np.int32)
  m = np.zeros((len(prompts), length), np.float32)
  p = np.zeros(len(prompts), np.int32)
  for i, (prompt, target) in enumerate(zip(prompts, targets)):
    row = [tokenizer.bos_id, *prompt, *target, tokenizer.eos_id]
    if len(row) > length:
      raise MuJaxError(f'Sequence {i} needs {len(row)} tokens but length is {length}; pass a '
                       f'length of at least {len(row)} (padded_length gives one for all texts).')
    x[i, :len(row)] = row
    p[i] = 1 + len(prompt)
    m[i, p[i]:len(row)] = 1
  return Examples(x=x, m=m, p=p)


def qa_examples(tokenizer: Tokenizer, prompts: list[str], answers: list[str],
                length: int) -> Examples:
  """QA rows: the prompt (e.g. `format_prompt(q)`) then `format_answer(a)`, scored on the answer."""
  if len(prompts) != len(answers):
    raise MuJaxError(f'Give one answer per prompt; got {len(prompts)} prompts and '
                     f'{len(answers)} answers.')
  return _pack(tokenizer, [tokenizer.encode(q) for q in prompts],
               [tokenizer.encode(format_answer(a)) for a in answers], length)


def lm_examples(tokenizer: Tokenizer, documents: list[str], length: int) -> Examples:
  """Documents as BOS + tokens + EOS, concatenated and cut into windows of `length`.

  Every real token after a window's first position is scored; the last window is
  padded. This is how pre-training text and MUSE's forget passages are trained on.
  """
  if length < 2:
    raise MuJaxError(f'A window needs at least 2 tokens to predict one; got length {length}.')
  stream = np.asarray([t for d in documents
                       for t in (tokenizer.bos_id, *tokenizer.encode(d), tokenizer.eos_id)],
                      np.int32)
  rows = -(-len(stream) // length)
  x = np.full(rows * length, tokenizer.pad_id, np.int32)
  x[:len(stream)] = stream
  x = x.reshape(rows, length)
  m = (x != tokenizer.pad_id).astype(np.float32)
  m[:, 0] = 0
  return Examples(x=x, m=m, p=np.ones(rows, np.int32))


def padded_length(tokenizer: Tokenizer, texts: list[str], multiple: int = LENGTH_MULTIPLE) -> int:
  """The smallest multiple of `multiple` that holds BOS + each text + EOS."""
  if multiple < 1:
    raise MuJaxError(f'multiple must be at least 1; got {multiple}.')
  longest = max(len(tokenizer.encode(t)) for t in texts) + 2
  return -(-longest // multiple) * multiple
