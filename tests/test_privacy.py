"""DP-SGD: the RDP accountant against Opacus and closed forms, the privatised gradient's
per-example clipping bound and noise, Poisson batches, and a private training run."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.batching import poisson_batches
from mu_jax.errors import MuJaxError
from mu_jax.models import create_model
from mu_jax.privacy import accountant, dp_sgd
from mu_jax.tasks import create_task
from mu_jax.train import make_train_step, private_plan, state_from, train_model

# Opacus 1.6.0, opacus.accountants.analysis.rdp: compute_rdp(q, σ, T, orders=range(2, 257))
# then get_privacy_spent(orders, rdp, δ): (q, σ, T, δ) -> (ε, best order).
OPACUS = [((256 / 60000, 1.1, 14040, 1e-5), (2.5948176752361407, 8)),
          ((32 / 4832, 2.0, 1510, 1e-12), (1.0045793030488572, 39)),
          ((0.01, 4.0, 10000, 1e-5), (1.0354900660362476, 17)),
          ((0.5, 0.8, 50, 1e-6), (45.632724167923065, 2)),
          ((1.0, 3.0, 10, 1e-5), (5.030506114597601, 5))]


@pytest.mark.parametrize('args,expected', OPACUS)
def test_epsilon_equals_opacus_rdp_accountant_at_integer_orders(args, expected):
  eps, order = accountant.epsilon(*args)
  assert order == expected[1]
  np.testing.assert_allclose(eps, expected[0], rtol=1e-9)


def test_rdp_without_subsampling_is_the_gaussian_mechanism_closed_form():
  # q = 1: ε_α = α / 2σ², and ε = min_α T α / 2σ² + log((α−1)/α) − (log δ + log α)/(α−1).
  sigma, steps, delta = 3.0, 10, 1e-5
  for alpha in (2, 5, 40):
    np.testing.assert_allclose(accountant.rdp(1.0, sigma, alpha), alpha / (2 * sigma ** 2),
                               rtol=1e-12)
  by_hand = min(steps * a / (2 * sigma ** 2) + math.log((a - 1) / a)
                - (math.log(delta) + math.log(a)) / (a - 1) for a in accountant.ORDERS)
  np.testing.assert_allclose(accountant.epsilon(1.0, sigma, steps, delta)[0], by_hand,
                             rtol=1e-12)


def test_rdp_at_order_two_by_hand():
  # A_2 = (1−q)² + 2q(1−q) + q² e^{1/σ²} = 1 + q²(e^{1/σ²} − 1).
  q, sigma = 0.1, 1.5
  np.testing.assert_allclose(accountant.rdp(q, sigma, 2),
                             math.log(1 + q * q * (math.exp(1 / sigma ** 2) - 1)), rtol=1e-12)


def test_noise_multiplier_is_the_smallest_that_meets_the_target():
  rate, steps, delta = 32 / 4832, 1510, 1e-12
  sigma = accountant.noise_multiplier(1.0, rate, steps, delta)
  assert accountant.epsilon(rate, sigma, steps, delta)[0] <= 1.0
  assert accountant.epsilon(rate, sigma * (1 - 2e-3), steps, delta)[0] > 1.0


def test_accountant_refuses_bad_arguments():
  with pytest.raises(MuJaxError, match='sampling rate'):
    accountant.epsilon(0.0, 1.0, 10, 1e-5)
  with pytest.raises(MuJaxError, match='δ'):
    accountant.epsilon(0.1, 1.0, 10, 1.0)
  with pytest.raises(MuJaxError, match='target ε'):
    accountant.noise_multiplier(0.0, 0.1, 10, 1e-5)


# --- the privatised gradient --------------------------------------------------------------

def _linear_case(n=6, dim=5, seed=0):
  rng = np.random.default_rng(seed)
  params = {'v': jnp.asarray(rng.normal(size=dim), jnp.float32)}
  batch = {'x': jnp.asarray(rng.normal(size=(n, dim)) * 3, jnp.float32),
           'y': jnp.asarray(rng.normal(size=n), jnp.float32),
           'w': jnp.asarray([1, 1, 1, 1, 1, 0][:n], jnp.float32)}
  loss = lambda p, row: 0.5 * jnp.sum((row['x'] @ p['v'] - row['y']) ** 2)
  return params, batch, loss


def test_private_gradient_is_the_sum_of_clipped_per_example_gradients_by_hand():
  params, batch, loss = _linear_case()
  clip = 1.0
  privacy = dp_sgd.Privacy(clip, 0.0, 4.0)
  mean_loss, grads = dp_sgd.private_gradient(loss, params, batch, privacy, jax.random.key(0))
  x, y, w = (np.asarray(batch[k], np.float64) for k in ('x', 'y', 'w'))
  v = np.asarray(params['v'], np.float64)
  residual = x @ v - y
  per_example = residual[:, None] * x * w[:, None]          # ∇ ½(x·v − y)² = (x·v − y) x
  norms = np.linalg.norm(per_example, axis=1)
  clipped = per_example * np.minimum(1, clip / (norms + 1e-6))[:, None]
  assert (np.linalg.norm(clipped, axis=1) <= clip + 1e-6).all()
  assert (norms[w > 0] > clip).all()                         # the bound binds on every row
  np.testing.assert_allclose(grads['v'], clipped.sum(0) / 4.0, rtol=1e-5)
  np.testing.assert_allclose(mean_loss, np.sum(0.5 * residual ** 2 * w) / w.sum(), rtol=1e-5)


def test_private_gradient_noise_has_std_sigma_clip_over_expected_batch():
  dim = 40_000
  params = {'v': jnp.zeros(dim)}
  batch = {'x': jnp.ones((2, dim)), 'w': jnp.ones(2)}
  loss = lambda p, row: jnp.sum(row['x'] @ p['v'])
  privacy = dp_sgd.Privacy(0.5, 2.0, 8.0)
  quiet = dp_sgd.private_gradient(loss, params, batch, privacy._replace(noise_multiplier=0.0),
                                  jax.random.key(1))[1]['v']
  noisy = dp_sgd.private_gradient(loss, params, batch, privacy, jax.random.key(1))[1]['v']
  again = dp_sgd.private_gradient(loss, params, batch, privacy, jax.random.key(1))[1]['v']
  np.testing.assert_array_equal(noisy, again)                # deterministic in the key
  np.testing.assert_allclose(np.std(np.asarray(noisy - quiet)), 2.0 * 0.5 / 8.0, rtol=0.02)
  np.testing.assert_allclose(np.asarray(quiet), 2 * 0.5 / np.sqrt(dim) / 8.0, rtol=1e-4)


VOCAB = 16
TASK = create_task('language_model', create_model('transformer', VOCAB, size='tiny', max_len=12,
                                                  num_layers=1), (12,), VOCAB)


def _lm_rows(n, seed=0):
  rng = np.random.default_rng(seed)
  m = np.zeros((n, 12), np.float32)
  m[:, 3:9] = 1
  return Examples(x=rng.integers(1, VOCAB, (n, 12)).astype(np.int32), m=m)


def test_dp_step_without_clipping_or_noise_is_the_plain_step():
  variables = TASK.init(jax.random.PRNGKey(0))
  rows = _lm_rows(8).arrays()
  batch = {**jax.tree.map(jnp.asarray, rows), 'w': jnp.asarray([1.0] * 6 + [0.0] * 2)}
  tx = optax.sgd(0.5)
  plain = make_train_step(TASK, tx)(state_from(variables, tx), batch)
  private = dp_sgd.Privacy(1e9, 0.0, 6.0)   # no clip binds, no noise, the real rows' count
  dp = make_train_step(TASK, tx, privacy=private)(state_from(variables, tx), batch)
  np.testing.assert_allclose(dp[1]['loss_sum'], plain[1]['loss_sum'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(dp[0].params), jax.tree.leaves(plain[0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_poisson_batches_sample_each_row_at_the_rate_and_pad_to_a_multiple():
  n, rate, steps = 400, 0.08, 300
  arrays = {'x': np.arange(n)[:, None].repeat(4, 1), 'i': np.arange(n)}
  counts = np.zeros(n)
  for b in poisson_batches(arrays, rate, steps, seed=1, epoch=0, multiple=8):
    assert len(b['w']) % 8 == 0 and len(b['w']) > 0
    real = b['i'][b['w'] > 0]
    assert len(np.unique(real)) == len(real)                # without replacement in a batch
    counts[real] += 1
  # Each row joins each batch with probability q: mean q·T, binomial spread.
  np.testing.assert_allclose(counts.mean(), rate * steps, rtol=0.02)
  assert abs(counts.var() / (steps * rate * (1 - rate)) - 1) < 0.2
  first = [b['i'] for b in poisson_batches(arrays, rate, 3, seed=1, epoch=0)]
  again = [b['i'] for b in poisson_batches(arrays, rate, 3, seed=1, epoch=0)]
  other = [b['i'] for b in poisson_batches(arrays, rate, 3, seed=1, epoch=1)]
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_private_training_spends_the_target_epsilon_and_is_deterministic():
  data = _lm_rows(64)
  cfg = ml_collections.ConfigDict(dict(
      optimizer='adamw', learning_rate=1e-2, momentum=0.9, weight_decay=0.0,
      schedule='constant', batch_size=8, epochs=2, checkpoint_every=1,
      dp_epsilon=4.0, dp_delta=1e-5, dp_clip=1.0))
  plan = private_plan(cfg, len(data))
  assert plan.sample_rate == 8 / 64 and plan.steps_per_epoch == 8
  spent = dp_sgd.epsilon_spent(plan.privacy, plan.sample_rate, 16, 1e-5)
  assert 3.99 < spent <= 4.0
  mesh = sharding.make_mesh('data:1')
  start = TASK.init(jax.random.PRNGKey(0))
  one = train_model(TASK, cfg, data, seed=5, mesh=mesh, start=start)
  two = train_model(TASK, cfg, data, seed=5, mesh=mesh, start=start)
  other = train_model(TASK, cfg, data, seed=6, mesh=mesh, start=start)
  for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(two.variables)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(one.variables), jax.tree.leaves(other.variables)))


def test_dp_sgd_refuses_batch_statistics_and_a_bad_clip():
  with pytest.raises(MuJaxError, match='clipping norm'):
    dp_sgd.plan(100, 10, 1, epsilon=1.0, delta=1e-5, clip=0.0)
  task = create_task('classification', create_model('resnet18', 3), (8, 8, 3), 3)
  data = Examples(x=np.zeros((16, 8, 8, 3), np.float32), y=np.zeros(16, np.int32))
  cfg = ml_collections.ConfigDict(dict(
      optimizer='sgd', learning_rate=0.1, momentum=0.9, weight_decay=0.0, schedule='constant',
      batch_size=8, epochs=1, checkpoint_every=1, dp_epsilon=1.0, dp_delta=1e-5, dp_clip=1.0))
  with pytest.raises(MuJaxError, match='BatchNorm'):
    train_model(task, cfg, data, seed=0, mesh=sharding.make_mesh('data:1'))
