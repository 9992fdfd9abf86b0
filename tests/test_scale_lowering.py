"""The fast CNN lowering computes the straightforward Flax CNN's mathematics.

`mu_jax.models.cnn.CNN` (conv -> max-pool -> bias -> ReLU, slice-based pool)
against `ReferenceCNN` (nn.Conv -> nn.relu -> nn.max_pool): identical
parameters and initial values, equal outputs, gradients, forward-mode
derivatives, HVPs and training steps; and the pool's derivative equal to
XLA's select-and-scatter, ties included.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl.testing import absltest

from tests import helpers
from mu_jax.models import Network, as_model, cnn, create_model
from mu_jax.train import init_state, make_train_step, optimizer_from_config
from tests.test_train import assert_trees_close

FAST = create_model('cnn', 10)
REFERENCE = as_model('cnn_reference', Network(cnn.ReferenceCNN(), 10))


def _batch(n=8, seed=0):
  # 14x14 keeps the test fast and makes the second pool crop an odd size (7 -> 3).
  rng = np.random.default_rng(seed)
  return {'x': rng.normal(size=(n, 14, 14, 1)).astype(np.float32),
          'y': (np.arange(n) % 10).astype(np.int32), 'w': np.ones(n, np.float32)}


def _loss(model, variables, batch, train=True):
  logits, _ = model.apply(variables, batch['x'], train)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']))


class CNNLoweringTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.batch = _batch()
    cls.variables = FAST.init(jax.random.key(1), cls.batch['x'])

  def test_parameters_and_initial_values_are_the_references(self):
    reference = REFERENCE.init(jax.random.key(1), self.batch['x'])
    self.assertEqual(jax.tree.structure(reference), jax.tree.structure(self.variables))
    jax.tree.map(np.testing.assert_array_equal, reference, self.variables)
    self.assertEqual(sorted(self.variables['params']['backbone']),
                     ['Conv_0', 'Conv_1', 'Dense_0'])

  def test_outputs_are_bit_identical(self):
    for train in (False, True):
      np.testing.assert_array_equal(FAST.apply(self.variables, self.batch['x'], train)[0],
                                    REFERENCE.apply(self.variables, self.batch['x'], train)[0])
    np.testing.assert_array_equal(FAST.penultimate(self.variables, self.batch['x']),
                                  REFERENCE.penultimate(self.variables, self.batch['x']))

  def test_gradients_jvps_and_hvps_match(self):
    grad = lambda model: jax.jit(jax.grad(lambda v: _loss(model, v, self.batch)))
    assert_trees_close(grad(FAST)(self.variables), grad(REFERENCE)(self.variables),
                       rtol=1e-5, atol=1e-7)
    tangent = jax.tree.map(lambda p: jnp.full_like(p, 0.01), self.variables)

    def jvp(model):
      return jax.jvp(lambda v: model.apply(v, self.batch['x'], False)[0],
                     (self.variables,), (tangent,))[1]
    np.testing.assert_allclose(jvp(FAST), jvp(REFERENCE), rtol=1e-5, atol=1e-6)

    def hvp(model):
      return jax.jit(lambda v: jax.jvp(jax.grad(lambda u: _loss(model, u, self.batch)),
                                       (v,), (tangent,))[1])(self.variables)
    assert_trees_close(hvp(FAST), hvp(REFERENCE), rtol=1e-4, atol=1e-6)

  def test_adam_training_steps_match(self):
    cfg = ml_collections.ConfigDict(dict(
        optimizer='adam', learning_rate=1e-3, momentum=0.9, weight_decay=0.0,
        schedule='cosine', batch_size=8, epochs=1))
    tx = optimizer_from_config(cfg, 4)
    out = []
    for model in (FAST, REFERENCE):
      task = helpers.classifier(model, self.batch)
      step = jax.jit(make_train_step(task, tx))
      state = init_state(task, tx, 0)
      for seed in range(4):
        state, stats = step(state, _batch(seed=seed))
      out.append((state.params, stats))
    assert_trees_close(out[0], out[1], rtol=1e-4, atol=1e-6)


class ConvKernelGradientTest(absltest.TestCase):
  """`conv_3x3`: the convolution's values and input derivative bit for bit, its
  kernel derivative (nine tap products on a CPU) equal to the convolution's."""

  def test_derivatives_equal_the_convolutions(self):
    from mu_jax.models.cnn import _conv, conv_3x3
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(5, 7, 9, 3)).astype(np.float32))   # odd sides
    k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    g = jnp.asarray(rng.normal(size=(5, 7, 9, 4)).astype(np.float32))
    np.testing.assert_array_equal(conv_3x3(x, k), _conv(x, k))
    ours, theirs = (jax.vjp(f, x, k)[1](g) for f in (conv_3x3, _conv))
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-5)
    tx, tk = jnp.ones_like(x) * 0.3, jnp.asarray(rng.normal(size=k.shape).astype(np.float32))
    np.testing.assert_allclose(jax.jvp(conv_3x3, (x, k), (tx, tk))[1],
                               jax.jvp(_conv, (x, k), (tx, tk))[1], rtol=1e-5, atol=1e-5)
    # second order: the kernel gradient's own derivative (double backprop)
    norm = lambda f: lambda k: jnp.sum(jax.grad(lambda k: jnp.sum(f(x, k) * g))(k) ** 2)
    np.testing.assert_allclose(jax.grad(norm(conv_3x3))(k), jax.grad(norm(_conv))(k),
                               rtol=1e-4, atol=1e-3)


class MaxPoolTiesTest(absltest.TestCase):

  def test_derivatives_equal_select_and_scatter_with_ties(self):
    # Values in {0, 1, 2}: most windows hold tied maxima; 7x9 crops a row and a column.
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (3, 7, 9, 4)), jnp.float32)
    weights = jax.random.normal(jax.random.key(2), (3, 3, 4, 4))

    def flax_pool(x):
      return nn.max_pool(x, (2, 2), (2, 2))

    def loss(pool, x):
      return jnp.sum(pool(x) * weights)

    np.testing.assert_array_equal(cnn.max_pool_2x2(x), flax_pool(x))
    np.testing.assert_array_equal(jax.grad(lambda x: loss(cnn.max_pool_2x2, x))(x),
                                  jax.grad(lambda x: loss(flax_pool, x))(x))
    per_row = lambda pool: jax.vmap(jax.grad(lambda r, wr: jnp.sum(pool(r[None])[0] * wr)))
    np.testing.assert_array_equal(per_row(cnn.max_pool_2x2)(x, weights),
                                  per_row(flax_pool)(x, weights))
    tangent = jax.random.normal(jax.random.key(3), x.shape)
    np.testing.assert_array_equal(jax.jvp(cnn.max_pool_2x2, (x,), (tangent,))[1],
                                  jax.jvp(flax_pool, (x,), (tangent,))[1])


if __name__ == '__main__':
  absltest.main()
