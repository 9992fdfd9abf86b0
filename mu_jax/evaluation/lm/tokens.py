"""Per-token log-probability statistics of a causal LM batch, the input of every LM metric.

Index t of each [N, L] array describes predicting x[:, t] from logits[:, t - 1]
(the shift of TOFU's `get_batch_loss` and open-unlearning's `evaluate_probability`);
index 0 and every position with m == 0 hold 0. `mu`/`sigma` are the mean and
standard deviation of log p(z) under z ~ p(. | prefix), which Min-K%++ needs
(mink-plus-plus run.py:99-100, open-unlearning mia/min_k_plus_plus.py:26-29).
"""
import jax
import jax.numpy as jnp

from mu_jax.errors import MuJaxError
from mu_jax.tasks.language_model import token_nll


@jax.jit
def token_statistics(logits: jax.Array, x: jax.Array, m: jax.Array) -> dict[str, jax.Array]:
  """logp, mu, sigma, mask [N, L] and nll_sum, count, nll_mean [N] of a batch.

  `x` is BOS + prompt + answer + EOS right-padded with 0; `m` is 1 on the
  positions to score (answer and EOS) and 0 at t = 0. A row with nothing to
  score gets nll_mean 0. All arithmetic is float32. Compiled, so that XLA fuses
  the softmax into the two vocabulary sums instead of keeping p over [N, L, V].
  """
  if logits.ndim != 3 or x.shape != logits.shape[:2] or m.shape != x.shape:
    raise MuJaxError(f'token_statistics needs logits [N, L, V] with x and m [N, L]; got '
                     f'{logits.shape}, {x.shape} and {m.shape}.')
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise MuJaxError(f'token_statistics needs integer token ids; got {x.dtype}.')
  mask = m.astype(jnp.float32)
  logq = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  q = jnp.exp(logq)
  mu = jnp.sum(q * logq, axis=-1)
  var = jnp.sum(q * jnp.square(logq), axis=-1) - jnp.square(mu)
  sigma = jnp.sqrt(jnp.maximum(var, 0.0))
  # Position t predicts x[:, t] from logits[:, t - 1]: shift right, zero off the mask.
  mu, sigma = (jnp.pad(a, ((0, 0), (1, 0))) * mask for a in (mu, sigma))
  logp = -token_nll(logits, x) * mask   # the task's loss terms, the same shift
  nll_sum = -jnp.sum(logp, axis=1)
  count = jnp.sum(mask, axis=1)
  return {'logp': logp, 'mu': mu, 'sigma': sigma, 'mask': mask, 'nll_sum': nll_sum,
          'count': count, 'nll_mean': nll_sum / jnp.maximum(count, 1.0)}
