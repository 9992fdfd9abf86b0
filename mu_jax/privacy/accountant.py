"""The privacy spent by DP-SGD: Rényi DP of the Poisson-subsampled Gaussian mechanism.

One DP-SGD step releases the sum of per-example gradients clipped to norm C plus
N(0, σ²C²) noise, over a batch in which each example is included with
probability q. Its Rényi DP at an integer order α is (Mironov, Talwar and
Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019,
eq. 3.2 at integer α)

  ε_α = log A_α / (α − 1),  A_α = Σ_{k=0..α} C(α, k) (1 − q)^{α−k} q^k exp((k² − k) / 2σ²),

T steps compose to T·ε_α, and (α, ε_α) converts to (ε, δ)-DP by

  ε = T·ε_α + log((α − 1)/α) − (log δ + log α) / (α − 1)

(Balle et al., "Hypothesis Testing Interpretations and Rényi DP", 2020, Thm. 21;
the conversion Opacus's `get_privacy_spent` uses), minimised over the orders.
Only integer orders are used: each gives a valid bound, so the ε here can only
be a little above an accountant that also tries fractional orders.
"""
import math

import numpy as np
from scipy.special import gammaln, logsumexp

from mu_jax.errors import MuJaxError

ORDERS = tuple(range(2, 257))   # integer Rényi orders; the optimum for ε ≤ 100 lies inside


def check(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> None:
  if not 0 < sample_rate <= 1:
    raise MuJaxError(f'The DP sampling rate must lie in (0, 1], got {sample_rate}.')
  if not noise_multiplier >= 0:
    raise MuJaxError(f'The DP noise multiplier must be ≥ 0, got {noise_multiplier}.')
  if not (isinstance(steps, (int, np.integer)) and steps >= 0):
    raise MuJaxError(f'The number of DP-SGD steps must be an integer ≥ 0, got {steps!r}.')
  if not 0 < delta < 1:
    raise MuJaxError(f'The DP δ must lie in (0, 1), got {delta}.')


def rdp(sample_rate: float, noise_multiplier: float, order: int) -> float:
  """ε_α of one step of the Poisson-subsampled Gaussian mechanism at integer order α ≥ 2."""
  q, sigma, alpha = sample_rate, noise_multiplier, int(order)
  if sigma == 0:
    return math.inf
  if q == 1:   # no subsampling: the Gaussian mechanism's α / 2σ²
    return alpha / (2 * sigma ** 2)
  k = np.arange(alpha + 1, dtype=np.float64)
  log_binom = gammaln(alpha + 1) - gammaln(k + 1) - gammaln(alpha - k + 1)
  log_terms = (log_binom + (alpha - k) * np.log1p(-q) + k * np.log(q)
               + (k * k - k) / (2 * sigma ** 2))
  return float(logsumexp(log_terms)) / (alpha - 1)


def epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float,
            orders=ORDERS) -> tuple[float, int]:
  """(ε, the order that gives it) of `steps` DP-SGD steps at (ε, δ)-DP."""
  check(sample_rate, noise_multiplier, steps, delta)
  if steps == 0:
    return 0.0, int(orders[0])
  best = (math.inf, int(orders[0]))
  for alpha in orders:
    total = steps * rdp(sample_rate, noise_multiplier, alpha)
    eps = total + math.log((alpha - 1) / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)
    best = min(best, (max(eps, 0.0), int(alpha)))
  return best


def noise_multiplier(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                     tolerance: float = 1e-3) -> float:
  """The smallest σ (to a relative `tolerance`) whose `steps` steps spend at most
  `target_epsilon`, by bisection (ε falls as σ grows), as Opacus's `get_noise_multiplier`."""
  check(sample_rate, 1.0, steps, delta)
  if not target_epsilon > 0:
    raise MuJaxError(f'The target ε must be positive, got {target_epsilon}.')
  spent = lambda sigma: epsilon(sample_rate, sigma, steps, delta)[0]
  low, high = 0.0, 1.0
  while spent(high) > target_epsilon:
    low, high = high, 2 * high
    if high > 1e6:
      raise MuJaxError(f'No noise multiplier up to 1e6 reaches ε = {target_epsilon} at '
                       f'δ = {delta} over {steps} steps; raise ε or δ, or take fewer steps.')
  while high - low > tolerance * high:
    middle = (low + high) / 2
    low, high = (middle, high) if spent(middle) > target_epsilon else (low, middle)
  return high
