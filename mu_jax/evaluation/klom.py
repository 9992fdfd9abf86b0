"""KLoM: per-example KL divergence of margins, unlearned models vs oracles.

Georgiev et al. 2024 ("Attribute-to-Delete: Machine Unlearning via Datamodel
Matching", arXiv:2410.23232; reference code data-unlearning-bench
`compute_binned_KL_div` / `kl_from_margins`): for each example, the margins
of N unlearned models and of N oracles are binned into one histogram each
over `bins` equal bins spanning their joint range, and

  KLoM(x) = KL(P_unlearned ‖ P_oracle) = Σ_b p_b log(p_b / q̃_b),

where q is floored at `eps` in every bin that p occupies and renormalised
(scipy.stats.entropy normalises both arguments, as the reference does).

Direction (`direction`): 'unlearned_first', the default, is KL(unlearned ‖
oracle), the expected log-likelihood ratio per margin an auditor observes
from the unlearned models, large exactly when unlearning produces outputs
that retraining would (almost) never produce: evidence that the forget set
still shows. 'oracle_first' is KL(oracle ‖ unlearned) (eps then floors the
unlearned histogram), which penalises oracle outputs the unlearned models
miss; it is what the reference reports: its driver (`run.py` `load_klom`)
calls `kl_from_margins(oracle_margins, margins)`, whose first argument is
the KL's first distribution.

One deviation: the last bin is closed on the right (np.histogram's
convention), where the reference's `np.digitize` (right=False) gives the
samples equal to the joint maximum index bins + 1, which no bin counts: unless
all samples are equal, at least one is dropped from every example's histograms.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax.errors import MuJaxError

BINS = 20     # data-unlearning-bench compute_binned_KL_div: bin_count=20
EPS = 1e-5    # data-unlearning-bench compute_binned_KL_div: eps=1e-5
# 'unlearned_first' (the default, on purpose: see the docstring); 'oracle_first':
# data-unlearning-bench `run.py:142`, kl_from_margins(oracle_margins, margins).
DIRECTIONS = ('unlearned_first', 'oracle_first')


def _histogram(values: jax.Array, lo: jax.Array, hi: jax.Array, bins: int) -> jax.Array:
  """Probabilities of `bins` equal bins over [lo, hi], the last bin closed."""
  edges = jnp.linspace(lo, hi, bins + 1)
  index = jnp.clip(jnp.searchsorted(edges, values, side='right') - 1, 0, bins - 1)
  counts = jnp.sum(index[:, None] == jnp.arange(bins), 0).astype(jnp.float32)
  return counts / values.shape[0]


def _kl_one(p_samples: jax.Array, q_samples: jax.Array, bins: int, eps: float) -> jax.Array:
  lo = jnp.minimum(p_samples.min(), q_samples.min())
  hi = jnp.maximum(p_samples.max(), q_samples.max())
  hi = jnp.where(hi > lo, hi, lo + 1.0)   # all samples equal: one unit-wide range
  p = _histogram(p_samples, lo, hi, bins)
  q = _histogram(q_samples, lo, hi, bins)
  q = jnp.where(p > 0, jnp.maximum(q, eps), q)
  q = q / jnp.sum(q)
  return jnp.sum(jnp.where(p > 0, p * jnp.log(p / jnp.where(p > 0, q, 1.0)), 0.0))


@jax.jit(static_argnames=('bins',))
def _klom(unlearned, oracle, *, bins: int, eps):
  return jax.vmap(lambda p, q: _kl_one(p, q, bins, eps), in_axes=(1, 1))(unlearned, oracle)


def klom(unlearned, oracle, *, bins: int = BINS, eps: float = EPS,
         direction: str = 'unlearned_first') -> np.ndarray:
  """Per-example KLoM [S] from margins [M_u, S] of unlearned models and [M_o, S] of oracles.

  `direction`: 'unlearned_first' is KL(unlearned ‖ oracle), 'oracle_first'
  KL(oracle ‖ unlearned), the reference driver's.
  """
  if direction not in DIRECTIONS:
    raise MuJaxError(f'KLoM direction {direction!r} (rigorous.klom_direction) is unknown; '
                     f'valid: {", ".join(DIRECTIONS)}.')
  unlearned, oracle = np.asarray(unlearned, np.float32), np.asarray(oracle, np.float32)
  if unlearned.ndim != 2 or oracle.ndim != 2 or unlearned.shape[1] != oracle.shape[1]:
    raise MuJaxError(f'KLoM needs margins [models, examples] for the same examples on both '
                     f'sides; got {unlearned.shape} and {oracle.shape}.')
  if min(unlearned.shape[0], oracle.shape[0]) < 2:
    raise MuJaxError('KLoM needs at least 2 models per side to form histograms; '
                     'raise the number of models.')
  if unlearned.shape[1] == 0:
    return np.zeros(0, np.float32)
  first, second = (oracle, unlearned) if direction == 'oracle_first' else (unlearned, oracle)
  return np.asarray(_klom(first, second, bins=bins, eps=jnp.float32(eps)))


class Summary(NamedTuple):
  mean: float
  p95: float
  p99: float


def summarize(values: np.ndarray) -> Summary:
  """Mean and 95th / 99th percentiles (NaN for no values): how KLoM is reported."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return Summary(float('nan'), float('nan'), float('nan'))
  return Summary(float(values.mean()), float(np.percentile(values, 95)),
                 float(np.percentile(values, 99)))
