"""The statistics cache: round trips, canonical row order, request-independent keys."""
import os
import tempfile
from unittest import mock

import jax
import numpy as np
from absl.testing import absltest

from tests import helpers
from tests import test_methods
from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.influence import fisher
from mu_jax.methods import cache, create_method, run_method
from mu_jax.methods.base import Context


def _context(forget_rows, x, y):
  keep = np.setdiff1d(np.arange(len(y)), forget_rows)
  return Context(helpers.classifier(None, {'x': x}), Examples(x=x[forget_rows], y=y[forget_rows]),
                 Examples(x=x[keep], y=y[keep]), sharding.make_mesh('data:1'))


class CacheTest(absltest.TestCase):

  def test_round_trip_keeps_nesting_and_values(self):
    tree = {'members': {'params': {'Dense_0': {'kernel': np.arange(6.0).reshape(2, 3)}}},
            'q': np.float32([0.5, 0.25])}
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'sub', 'stats')
      cache.save(path, tree)
      self.assertEqual(os.listdir(os.path.dirname(path)), ['stats'])
      loaded = cache.load(path)
    np.testing.assert_array_equal(loaded['members']['params']['Dense_0']['kernel'],
                                  tree['members']['params']['Dense_0']['kernel'])
    self.assertTrue(cache.same_shapes(loaded, tree))
    self.assertFalse(cache.same_shapes(loaded, {'q': tree['q']}))
    self.assertIsNone(cache.load(os.path.join(d, 'absent')))

  def test_canonical_order_ignores_row_order(self):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 2, 2)), rng.integers(0, 3, 20)
    perm = rng.permutation(20)
    a = cache.canonical_order({'x': x, 'y': y})
    b = cache.canonical_order({'x': x[perm], 'y': y[perm]})
    np.testing.assert_array_equal(x[a], x[perm][b])

  def test_fingerprint_is_per_data_not_per_request(self):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 4)).astype(np.float32), rng.integers(0, 3, 12)
    first = cache.fingerprint(_context(np.array([0, 1, 2]), x, y), 'ssd', 64)
    other_request = cache.fingerprint(_context(np.array([5, 9]), x, y), 'ssd', 64)
    self.assertEqual(first, other_request)
    self.assertNotEqual(first, cache.fingerprint(_context(np.array([5, 9]), x, y), 'ssd', 32))
    x2 = x.copy()
    x2[3, 0] += 1.0
    self.assertNotEqual(first, cache.fingerprint(_context(np.array([0, 1, 2]), x2, y),
                                                 'ssd', 64))

  def test_fingerprint_changes_with_the_statistics_version(self):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 4)).astype(np.float32), rng.integers(0, 3, 12)
    ctx = _context(np.array([0, 1, 2]), x, y)
    now = cache.fingerprint(ctx, 'ssd', 64)
    with mock.patch.object(cache, 'VERSION', cache.VERSION - 1):
      self.assertNotEqual(cache.fingerprint(ctx, 'ssd', 64), now)

  def test_canonical_order_of_many_rows_is_the_whole_arrays_sort(self):
    # keys are computed per block of KEY_ROWS rows: the same bits as on the whole
    rng = np.random.default_rng(3)
    n = 3 * cache.KEY_ROWS + 17
    x, y = rng.normal(size=(n, 3, 2)).astype(np.float32), rng.integers(0, 4, n)
    flat = x.reshape(n, -1).astype(np.float64)
    probe = np.random.default_rng(0).normal(size=flat.shape[1])
    expected = np.lexsort([y.astype(np.float64), flat.sum(1), flat @ probe])
    np.testing.assert_array_equal(cache.canonical_order({'x': x, 'y': y}), expected)

  def test_canonical_union_is_the_same_for_every_request(self):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 4)).astype(np.float32), rng.integers(0, 3, 12)
    first = cache.canonical_union(_context(np.array([0, 1, 2]), x, y))
    other = cache.canonical_union(_context(np.array([11, 4]), x, y))
    self.assertEqual(sorted(first), ['x', 'y'])
    for name in first:
      np.testing.assert_array_equal(first[name], other[name])


class SSDCacheTest(absltest.TestCase):

  def test_a_cached_importance_equals_a_cold_one_for_another_request(self):
    """Request A computes and caches I_D; request B (other forget rows, same D and
    model) loads it and gets, bit for bit, what a cold run of B computes."""
    data = test_methods.setting()
    variables = data['variables']
    request_a = test_methods.context()
    x = np.concatenate([data['forget']['x'], data['retain']['x']])
    y = np.concatenate([data['forget']['y'], data['retain']['y']])
    rows = np.random.default_rng(0).choice(len(y), 30, replace=False)
    request_b = _context(rows, x, y)._replace(task=request_a.task)
    method = create_method('ssd', batch_size=32, selection_weighting=1.0)
    with tempfile.TemporaryDirectory() as cache_dir:
      run_method(method, variables, request_a._replace(cache_dir=cache_dir))
      with mock.patch.object(fisher, 'importance', wraps=fisher.importance) as spy:
        cached = method.prepare(request_b._replace(cache_dir=cache_dir), variables)
        warm = run_method(method, variables, request_b._replace(cache_dir=cache_dir))
      self.assertEqual([c.args[4] for c in spy.call_args_list], ['forget', 'forget'])
    cold_state = method.prepare(request_b, variables)
    cold = run_method(method, variables, request_b)
    for got, want in ((cached.importance_d, cold_state.importance_d),
                      (warm.variables, cold.variables)):
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    self.assertEqual(warm.info, cold.info)
    self.assertGreater(cold.info['selected'], 0)


if __name__ == '__main__':
  absltest.main()
