"""Exact recursive ridge heads (mu_jax.analytic) and the ACU method."""
import os
import tempfile

import jax
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import sharding
from mu_jax.analytic import ridge
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.methods import METHODS, Context, create_method, run_method
from mu_jax.methods import acu
from mu_jax.models import create_model
from mu_jax.train import train_model
from tests import helpers
from mu_jax.tasks import CLASS_LABELS, Classification
from tests.test_train import recipe

_SETUP = {}


def relative_error(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


def random_rows(n=240, dim=24, classes=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, dim)), ridge.one_hot(rng.integers(0, classes, n), classes)


class RidgeTest(parameterized.TestCase):

  def test_sequence_of_requests_matches_closed_form_on_retained_rows(self):
    X, Y = random_rows()
    Y = np.asarray(Y)
    chunks = np.array_split(np.arange(len(X)), 3)
    state = ridge.init(X.shape[1], Y.shape[1], len(X))
    kept = set()
    requests = [('learn', 0), ('learn', 1), ('forget', 0), ('learn', 2), ('forget', 1)]
    for op, c in requests:
      rows = chunks[c]
      state = getattr(ridge, op)(state, X[rows], Y[rows], rows, chunk_size=25)
      kept = kept | set(rows) if op == 'learn' else kept - set(rows)
      idx = sorted(kept)
      self.assertLess(relative_error(state.W, ridge.closed_form(X[idx], Y[idx])), 1e-8)
    self.assertEqual(state.W.dtype, np.float64)

  def test_forget_then_relearn_restores_the_head(self):
    X, Y = random_rows()
    ids = np.arange(len(X))
    state = ridge.learn(ridge.init(X.shape[1], Y.shape[1], len(X)), X, Y, ids)
    again = ridge.learn(ridge.forget(state, X[:60], Y[:60], ids[:60]), X[:60], Y[:60], ids[:60])
    self.assertLess(relative_error(again.W, state.W), 1e-8)
    self.assertLess(relative_error(again.R, state.R), 1e-8)

  @parameterized.parameters(1, 7, 64, 10_000)
  def test_chunked_learning_equals_one_step(self, chunk_size):
    X, Y = random_rows(n=130)
    empty, ids = ridge.init(X.shape[1], Y.shape[1], len(X)), np.arange(len(X))
    whole = ridge.learn(empty, X, Y, ids, chunk_size=len(X))
    chunked = ridge.learn(empty, X, Y, ids, chunk_size=chunk_size)
    self.assertLess(relative_error(chunked.W, whole.W), 1e-8)
    self.assertLess(relative_error(whole.W, ridge.closed_form(X, Y)), 1e-8)

  def test_bad_inputs_raise(self):
    with self.assertRaisesRegex(MuJaxError, 'gamma must be positive'):
      ridge.init(4, 2, 3, gamma=0.0)
    with self.assertRaisesRegex(MuJaxError, 'do not match the head'):
      ridge.learn(ridge.init(4, 2, 3), np.ones((3, 5)), np.ones((3, 2)), np.arange(3))


def setting():
  """A trained 3-class MLP on blobs; class 0 is the forget set."""
  if not _SETUP:
    model = create_model('mlp', 3, hidden=(16,))
    data = helpers.blobs(96)
    trained = train_model(helpers.classifier(model, data), recipe(learning_rate=0.05, epochs=2), data, seed=0, mesh=sharding.make_mesh('data:1'))
    forget = data['y'] == 0
    _SETUP.update(model=model, variables=trained.variables, data=data,
                  forget=Examples(x=data['x'][forget], y=data['y'][forget]),
                  retain=Examples(x=data['x'][~forget], y=data['y'][~forget]))
  return _SETUP


def context(mesh_spec='data:1', cache_dir=None):
  s = setting()
  return Context(helpers.classifier(s['model'], s['forget']), s['forget'], s['retain'], sharding.make_mesh(mesh_spec), 0,
                 cache_dir)


def method(**kw):
  return create_method('acu', **{'buffer_size': 64, 'batch_size': 16, **kw})


class AcuTest(parameterized.TestCase):

  def test_head_equals_ridge_on_the_retain_set(self):
    out = run_method(method(), setting()['variables'], context(), 'acu')
    s = setting()
    feats = np.asarray(s['model'].penultimate(s['variables'], s['retain']['x']))
    buffer = out.variables['acu']['buffer']
    expected = ridge.closed_form(acu.buffer_features(feats, buffer),
                                 ridge.one_hot(s['retain']['y'], 3))
    # The method sees float32 features computed per batch (they differ from
    # these full-batch ones by ~1e-7) and returns a float32 head.
    self.assertLess(relative_error(out.variables['acu']['head'], expected), 1e-5)
    self.assertEqual(buffer.shape, (16, 64))
    logits, _ = out.task.apply(out.variables, s['retain'].arrays(), False)
    self.assertGreater(helpers.accuracy(np.asarray(logits), s['retain']['y']), 90.0)
    self.assertEqual(out.steps, 1)

  def test_continual_functions_match_the_method(self):
    s = setting()
    buffer = acu.buffer_weights(0, 16, 64)
    f_forget = s['model'].penultimate(s['variables'], s['forget']['x'])
    f_retain = s['model'].penultimate(s['variables'], s['retain']['x'])
    forget_ids, retain_ids = acu.row_ids(context())   # the union stream's positions
    state = acu.fit(f_retain, ridge.one_hot(s['retain']['y'], 3), buffer, ids=retain_ids)
    state = acu.learn_chunk(state, f_forget, ridge.one_hot(s['forget']['y'], 3), buffer,
                            forget_ids)
    state = acu.forget_chunk(state, f_forget, ridge.one_hot(s['forget']['y'], 3), buffer,
                             forget_ids)
    expected = ridge.closed_form(acu.buffer_features(f_retain, buffer),
                                 ridge.one_hot(s['retain']['y'], 3))
    # Same float64 features on both sides; the 64-wide buffer on 64 retained
    # rows is ill-conditioned (gamma = 0.1), hence 1e-7 rather than 1e-8.
    self.assertLess(relative_error(state.W, expected), 1e-7)
    out = run_method(method(), s['variables'], context(), 'acu')
    self.assertLess(relative_error(out.variables['acu']['head'], state.W), 1e-5)

  def test_cache_reproduces_the_result(self):
    with tempfile.TemporaryDirectory() as cache_dir:
      first = run_method(method(), setting()['variables'], context(cache_dir=cache_dir))
      second = run_method(method(), setting()['variables'], context(cache_dir=cache_dir))
      self.assertLen(os.listdir(cache_dir), 1)   # one cached head, no temporary left
    self.assertEqual((first.info['cache_hit'], second.info['cache_hit']), (0.0, 1.0))
    np.testing.assert_array_equal(first.variables['acu']['head'],
                                  second.variables['acu']['head'])

  def test_a_cached_head_equals_a_cold_one_for_another_request(self):
    s = setting()
    data = s['data']

    def request(label, cache_dir):
      rows = np.flatnonzero(np.asarray(data['y']) == label)
      rest = np.setdiff1d(np.arange(len(data)), rows)
      ctx = Context(helpers.classifier(s['model'], data), data.take(rows), data.take(rest),
                    sharding.make_mesh('data:1'), 0, cache_dir, forget_ids=rows,
                    retain_ids=rest)
      return run_method(method(), s['variables'], ctx)

    with tempfile.TemporaryDirectory() as shared, tempfile.TemporaryDirectory() as cold:
      request(0, shared)                 # caches the head on D
      cached = request(1, shared)        # loads it
      fresh = request(1, cold)
    self.assertEqual((cached.info['cache_hit'], fresh.info['cache_hit']), (1.0, 0.0))
    np.testing.assert_array_equal(cached.variables['acu']['head'], fresh.variables['acu']['head'])

  def test_jit_matches_eager(self):
    m, ctx = method(), context()
    jitted = run_method(m, setting()['variables'], ctx)
    with jax.disable_jit():
      state, _ = m.update(ctx.task, m.prepare(ctx, setting()['variables']), None)
    self.assertLess(relative_error(m.result(state)['acu']['head'],
                                   jitted.variables['acu']['head']), 1e-5)

  def test_the_request_is_a_float64_update(self):
    m, ctx = method(), context()
    self.assertTrue(m.x64)
    state = m.prepare(ctx, setting()['variables'])
    with jax.enable_x64(True):
      after, _ = jax.jit(m.update, static_argnums=0)(ctx.task, state, None)
    self.assertEqual(after['ridge'].R.dtype, np.float64)
    # The downdate happens in update: prepare's head still holds D_f.
    self.assertGreater(relative_error(state['ridge'].W, after['ridge'].W), 1e-3)

  def test_eight_devices_match_one(self):
    one = run_method(method(), setting()['variables'], context('data:1'))
    eight = run_method(method(), setting()['variables'], context('data:8'))
    self.assertLess(relative_error(eight.variables['acu']['head'],
                                   one.variables['acu']['head']), 1e-5)

  @parameterized.parameters(dict(buffer_size=0), dict(buffer_size=-3), dict(gamma=0.0),
                            dict(gamma=-1.0))
  def test_bad_hyper_parameters_raise(self, **kw):
    with self.assertRaises(MuJaxError):
      create_method('acu', **kw)

  def test_needs_a_final_linear_layer(self):
    s = setting()

    class NoHead(Classification):
      capabilities = frozenset({CLASS_LABELS})

    task = NoHead(s['model'], tuple(s['forget']['x'].shape[1:]), 3)
    ctx = Context(task, s['forget'], s['retain'], sharding.make_mesh('data:1'))
    with self.assertRaisesRegex(MuJaxError, 'needs a final linear layer'):
      run_method(method(), s['variables'], ctx)
    self.assertIn('acu', METHODS.names())


if __name__ == '__main__':
  absltest.main()
