"""Language modelling: next-token logits [N, L, V] against the tokens 'x', scored where 'm' says.

A batch holds `x` int32 [N, L] (BOS, prompt, answer, EOS, right-padded with 0)
and `m` float32 [N, L], 1 on the positions t whose token x[:, t] the model is
scored on (predicted from position t − 1): the answer and its EOS for a
question, every token but the first for plain text (`mu_jax.data.text.sequences`).
The per-example loss is the mean token NLL over those positions, the
length-normalised loss that TOFU's answer probability and truth ratio are
written on. Training averages it over sequences; a Hugging Face causal-LM
loss (TOFU's fine-tuning) averages over the batch's tokens instead, which
weighs a long answer more. Questions of one template family have near-equal
lengths, so the two differ little; the per-sequence mean keeps every gradient
method's weights per example, as on the other tasks.
"""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.tasks.base import ACCURACY, LINEAR_HEAD, TOKENS, Task, mean_of


def token_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
  """−log p(x[:, t] | x[:, <t]) at every position t ≥ 1, and 0 at t = 0: [N, L] float32.

  Scores every position against the token after it and drops the last one's
  score, rather than slicing the logits [N, L, V]: their copy and, in the
  gradient, its padding back cost the default LM's training step 3% on a CPU.
  """
  logits = logits.astype(jnp.float32)
  following = jnp.pad(x[:, 1:], ((0, 0), (0, 1)))
  nll = (jax.nn.logsumexp(logits, -1)
         - jnp.take_along_axis(logits, following[..., None], -1)[..., 0])
  return jnp.pad(nll[:, :-1], ((0, 0), (1, 0)))


@dataclasses.dataclass(frozen=True)
class LanguageModel(Task):
  """A causal language model over a vocabulary of `vocab_size` tokens."""
  vocab_size: int = 2

  name = 'language_model'
  capabilities = frozenset({TOKENS, ACCURACY, LINEAR_HEAD})
  keys = ('x', 'm')
  sequence_keys = ('x', 'm')
  metric_columns = {'F-NLL': ('forget', 'nll'), 'R-NLL': ('retain', 'nll'),
                    'T-NLL': ('test', 'nll')}
  table_metrics = ('F-NLL', 'R-NLL', 'T-NLL', 'MIA')
  gap_metrics = ('F-NLL', 'R-NLL', 'T-NLL', 'MIA')
  mia_statistic = 'loss'
  evaluators = {'nll': mean_of('loss')}

  @classmethod
  def create(cls, model, input_shape, outputs):
    return cls(model, input_shape, vocab_size=outputs)

  def init(self, rng):
    return self.model.init(rng, jnp.zeros((1, *self.input_shape), jnp.int32))

  def apply(self, variables, batch, train):
    if self.forward is not None:
      return self.forward(variables, batch, train)
    chex.assert_rank(batch['x'], 2)
    return self.model.apply(variables, batch['x'], train)

  def losses(self, outputs, batch):
    chex.assert_rank(outputs, 3)                  # logits [N, L, V]
    m = batch['m'].astype(jnp.float32)
    return jnp.sum(token_nll(outputs, batch['x']) * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)

  def sequence_nll(self, outputs, batch):
    """The summed NLL of the scored tokens (open-unlearning `compute_batch_nll`)."""
    return jnp.sum(token_nll(outputs, batch['x']) * batch['m'].astype(jnp.float32), -1)

  def statistics(self, outputs, batch):
    m = batch['m'].astype(jnp.float32)
    nll = token_nll(outputs, batch['x'])
    hits = jnp.pad(jnp.argmax(outputs[:, :-1], -1) == batch['x'][:, 1:], ((0, 0), (1, 0)))
    tokens = jnp.sum(m, -1)
    return {'loss': jnp.sum(nll * m, -1) / jnp.maximum(tokens, 1.0),
            'nll_sum': jnp.sum(nll * m, -1), 'tokens': tokens,
            'correct': jnp.sum(hits * m, -1) / jnp.maximum(tokens, 1.0)}   # token accuracy

  def head_targets(self, batch):
    """One-hot next tokens [N, L, V]: position t's features predict x[:, t + 1]."""
    following = jnp.pad(batch['x'][:, 1:], ((0, 0), (0, 1)))
    return jax.nn.one_hot(following, self.vocab_size, dtype=jnp.float32)

  def head_mask(self, batch):
    """Position t is a head row where x[:, t + 1] is scored ('m')."""
    return jnp.pad(batch['m'][:, 1:].astype(jnp.float32), ((0, 0), (0, 1)))

  def lengths(self, arrays):
    """One past each row's last scored position: later tokens are padding or, under the
    causal mask, reach no scored prediction."""
    scored = np.asarray(arrays['m']) > 0
    last = scored.shape[1] - np.argmax(scored[:, ::-1], axis=1)
    return np.where(scored.any(axis=1), last, 1)

  def check_examples(self, examples, what):
    """Token rows no longer than the model's context; any shorter length is fine."""
    missing = [k for k in self.keys if k not in examples]
    if missing:
      raise MuJaxError(f'The {what} examples lack {missing[0]!r}, which the {self.name} '
                       f'task needs (it reads {", ".join(self.keys)}).')
    length, context = examples['x'].shape[1], self.input_shape[0]
    if examples['x'].ndim != 2 or length > context:
      raise MuJaxError(f'The {what} token rows have shape {examples["x"].shape[1:]}; the '
                       f'model takes rows of at most {context} tokens.')
