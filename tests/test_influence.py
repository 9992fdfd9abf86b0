"""Importance estimators, HVPs and inverse-HVP solvers against NumPy closed forms."""
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.errors import MuJaxError
from mu_jax.influence import (
    conjugate_gradient, importance, lissa, mean_gradient, mean_hvp)
from mu_jax.methods import Context
from mu_jax.models import Model
from mu_jax.tasks import Classification
from tests.test_train import assert_trees_close

DIM, CLASSES = 4, 3


def linear_apply(variables, x, train):
  del train
  head = variables['params']['head']
  return x.reshape(x.shape[0], -1) @ head['kernel'] + head['bias'], {}


SPEC = Classification(Model('linear', None, linear_apply, None), (DIM,), CLASSES)


def linear_setup(mesh_spec='data:1', seed=3):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(45, DIM)).astype(np.float32)
  y = (np.arange(45) % CLASSES).astype(np.int32)
  variables = {'params': {'head': {
      'kernel': rng.normal(size=(DIM, CLASSES)).astype(np.float32),
      'bias': rng.normal(size=(CLASSES,)).astype(np.float32)}}}
  ctx = Context(SPEC, Examples(x=x[:13], y=y[:13]), Examples(x=x[13:], y=y[13:]),
                sharding.make_mesh(mesh_spec), seed)
  return variables, ctx


def numpy_gradients(kind, variables, x, y, w):
  """Per-batch (or per-example) gradients of the estimator's loss, in NumPy."""
  kernel = variables['params']['head']['kernel'].astype(np.float64)
  bias = variables['params']['head']['bias'].astype(np.float64)
  z = x.astype(np.float64) @ kernel + bias
  if kind == 'label_free':
    dz = 2 * z
  else:
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = p - np.eye(CLASSES)[y]
  if kind == 'per_example':
    return np.einsum('nd,nc->ndc', x, dz), dz
  dz = dz * w[:, None] / w.sum()
  return x.T @ dz, dz.sum(0)


def numpy_importance(kind, variables, ctx, source, batch_size):
  arrays = ctx.arrays(source)
  kernel, bias, count = 0.0, 0.0, 0.0
  for batch in epoch_batches(arrays, batch_size, seed=ctx.seed, epoch=0, shuffle=True):
    x, y, w = batch['x'], batch['y'], batch['w']
    gk, gb = numpy_gradients(kind, variables, x, y, w)
    if kind == 'per_example':
      kernel = kernel + np.einsum('n,ndc->dc', w, gk**2)
      bias = bias + np.einsum('n,nc->c', w, gb**2)
      count += w.sum()
    else:
      op = np.square if kind == 'batch' else np.abs
      kernel, bias, count = kernel + op(gk), bias + op(gb), count + 1
  return {'head': {'kernel': kernel / count, 'bias': bias / count}}


class ImportanceTest(parameterized.TestCase):

  @parameterized.product(kind=['batch', 'per_example', 'label_free'],
                         source=['forget', 'union'])
  def test_matches_numpy(self, kind, source):
    variables, ctx = linear_setup()
    got = importance(kind, SPEC, variables, ctx, source, 8)
    want = numpy_importance(kind, variables, ctx, source, 8)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-7)

  @parameterized.parameters('batch', 'per_example', 'label_free')
  def test_eight_devices_match_one(self, kind):
    variables, one = linear_setup('data:1')
    _, eight = linear_setup('data:8')
    assert_trees_close(importance(kind, SPEC, variables, one, 'union', 16),
                       importance(kind, SPEC, variables, eight, 'union', 16),
                       rtol=1e-5, atol=1e-7)

  def test_per_example_is_order_free_and_batch_is_not(self):
    variables, ctx = linear_setup(seed=0)
    _, other = linear_setup(seed=1)
    assert_trees_close(importance('per_example', SPEC, variables, ctx, 'union', 8),
                       importance('per_example', SPEC, variables, other, 'union', 8),
                       rtol=1e-5, atol=1e-7)
    a = importance('batch', SPEC, variables, ctx, 'union', 8)
    b = importance('batch', SPEC, variables, other, 'union', 8)
    self.assertFalse(np.allclose(a['head']['kernel'], b['head']['kernel']))

  def test_unknown_estimator_lists_valid_ones(self):
    variables, ctx = linear_setup()
    with self.assertRaisesRegex(MuJaxError, 'valid: batch, per_example, label_free'):
      importance('fisher', SPEC, variables, ctx, 'forget', 8)


def squared_error_sum(params, model_state, batch):
  """½ Σ_i w_i (x_i·θ − y_i)², θ split over two leaves."""
  del model_state
  theta = jnp.concatenate([params['a'], params['b']])
  return 0.5 * jnp.sum(batch['w'] * (batch['x'] @ theta - batch['y'])**2)


class HessianTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(1)
    n = 37
    self.x = (rng.normal(size=(n, 5)) / 1.5 + np.eye(5)[np.arange(n) % 5] * 1.5).astype(np.float32)
    self.y = rng.normal(size=n).astype(np.float32)
    self.hessian = self.x.astype(np.float64).T @ self.x / n
    self.params = {'a': jnp.asarray(rng.normal(size=3), jnp.float32),
                   'b': jnp.asarray(rng.normal(size=2), jnp.float32)}
    self.v = {'a': jnp.asarray([1.0, -2.0, 0.5]), 'b': jnp.asarray([0.3, 1.0])}
    self.mesh = sharding.make_mesh('data:8')

  def batches(self):
    arrays = {'x': self.x, 'y': self.y}
    for batch in epoch_batches(arrays, 16, seed=0, shuffle=True):
      yield sharding.shard_batch(batch, self.mesh)

  def flat(self, tree):
    return np.concatenate([np.asarray(tree['a']), np.asarray(tree['b'])])

  def hvp_fn(self, v):
    return mean_hvp(squared_error_sum, self.params, {}, self.batches(), v)

  def test_hvp_equals_closed_form(self):
    np.testing.assert_allclose(self.flat(self.hvp_fn(self.v)),
                               self.hessian @ self.flat(self.v), rtol=1e-5, atol=1e-6)

  def test_mean_gradient_equals_closed_form(self):
    theta = self.flat(self.params).astype(np.float64)
    want = self.x.T @ (self.x @ theta - self.y) / len(self.y)
    got = mean_gradient(squared_error_sum, self.params, {}, self.batches())
    np.testing.assert_allclose(self.flat(got), want, rtol=1e-5, atol=1e-6)

  def test_conjugate_gradient_solves_damped_system(self):
    damping = 0.1
    got = conjugate_gradient(self.hvp_fn, self.v, damping=damping, max_iters=20, tol=1e-7)
    want = np.linalg.solve(self.hessian + damping * np.eye(5), self.flat(self.v))
    np.testing.assert_allclose(self.flat(got), want, rtol=1e-4, atol=1e-5)

  def test_lissa_converges_to_its_damped_inverse(self):
    damping, scale = 0.01, float(np.linalg.eigvalsh(self.hessian).max())
    got = lissa(self.hvp_fn, self.v, damping=damping, scale=scale, depth=150)
    want = np.linalg.solve(self.hessian + damping * scale * np.eye(5), self.flat(self.v))
    np.testing.assert_allclose(self.flat(got), want, rtol=1e-4, atol=1e-5)

  def test_empty_stream_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, 'empty'):
      mean_gradient(squared_error_sum, self.params, {}, iter(()))


if __name__ == '__main__':
  absltest.main()
