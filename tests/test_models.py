"""Tests for mu_jax.models: shapes, the max-pool, BatchNorm modes, features."""
import functools

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.models import cnn
from mu_jax.models import create_model
from mu_jax.models import merge_variables
from mu_jax.models import split_variables

# (test name, model name, kwargs, input shape HWC, penultimate width).
CASES = (
    ('mlp_8x8', 'mlp', {'hidden': (32, 16)}, (8, 8, 1), 16),
    ('cnn_28x28', 'cnn', {}, (28, 28, 1), 128),
    ('cnn_8x8', 'cnn', {}, (8, 8, 1), 128),
    ('resnet18_32x32', 'resnet18', {'width': 8}, (32, 32, 3), 64),
)
NUM_CLASSES = 10
BATCH = 4


def _images(shape, batch=BATCH, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, *shape), jnp.float32)


def _init(name, kwargs, shape):
  """A model, its variables and a batch, made once per case (init is slow)."""
  return _cached_init(name, tuple(kwargs.items()), shape)


@functools.cache
def _cached_init(name, kwargs, shape):
  model = create_model(name, NUM_CLASSES, **dict(kwargs))
  x = _images(shape)
  return model, model.init(jax.random.key(1), x), x


def _resnet():
  """The narrow ResNet-18 with a shared jitted apply (compiled once a mode)."""
  model, variables, x = _init('resnet18', {'width': 8}, (32, 32, 3))
  return _jit_apply(model), variables, x


@functools.cache
def _jit_apply(model):
  return jax.jit(model.apply, static_argnums=2)


class ModelShapesTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_shapes_and_dtypes(self, name, kwargs, shape, feature_dim):
    model, variables, x = _init(name, kwargs, shape)
    self.assertEqual(model.name, name)
    for train in (False, True):
      logits, _ = model.apply(variables, x, train)
      self.assertEqual(logits.shape, (BATCH, NUM_CLASSES))
      self.assertEqual(logits.dtype, jnp.float32)
    features = model.penultimate(variables, x)
    self.assertEqual(features.shape, (BATCH, feature_dim))
    self.assertEqual(features.dtype, jnp.float32)

  def test_cnn_parameter_count(self):
    _, variables, _ = _init('cnn', {}, (28, 28, 1))
    count = sum(p.size for p in jax.tree.leaves(variables['params']))
    self.assertEqual(count, 421_642)

  def test_resnet18_bfloat16_keeps_float32_params_and_logits(self):
    # Shapes and dtypes only (jax.eval_shape): eager bfloat16 convolutions take a minute.
    model = create_model('resnet18', NUM_CLASSES, width=8, dtype='bfloat16')
    x = _images((32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    logits, state = jax.eval_shape(lambda v, x: model.apply(v, x, True), variables, x)
    self.assertEqual(logits.dtype, jnp.float32)
    for leaf in jax.tree.leaves((variables, state)):
      self.assertEqual(leaf.dtype, jnp.float32)


class MaxPoolTest(parameterized.TestCase):

  @parameterized.parameters((8, 8), (7, 5))
  def test_matches_flax_max_pool_in_value_and_gradient(self, h, w):
    x = _images((h, w, 3), batch=2)
    weights = _images((h // 2, w // 2, 3), batch=2, seed=1)

    def loss(pool, x):
      return jnp.sum(pool(x) * weights)

    def flax_pool(x):
      return nn.max_pool(x, (2, 2), (2, 2))

    np.testing.assert_array_equal(cnn.max_pool_2x2(x), flax_pool(x))
    np.testing.assert_array_equal(
        jax.grad(lambda x: loss(cnn.max_pool_2x2, x))(x),
        jax.grad(lambda x: loss(flax_pool, x))(x))


class BatchNormTest(absltest.TestCase):

  def test_train_updates_batch_stats_and_differs_from_eval(self):
    apply, variables, x = _resnet()
    train_logits, state = apply(variables, x, True)
    self.assertEqual(set(state), {'batch_stats'})
    self.assertEqual(jax.tree.structure(state['batch_stats']),
                     jax.tree.structure(variables['batch_stats']))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                           state['batch_stats'], variables['batch_stats'])
    self.assertTrue(all(jax.tree.leaves(changed)))
    eval_logits, _ = apply(variables, x, False)
    self.assertGreater(float(jnp.max(jnp.abs(train_logits - eval_logits))),
                       1e-3)

  def test_eval_returns_no_state_and_is_deterministic(self):
    apply, variables, x = _resnet()
    first, state = apply(variables, x, False)
    second, _ = apply(variables, x, False)
    self.assertEqual(state, {})
    np.testing.assert_array_equal(first, second)

  def test_running_stats_update_with_pytorch_momentum(self):
    apply, variables, x = _resnet()
    _, state = apply(variables, x, True)
    conv = variables['params']['backbone']['stem_conv']['kernel']
    y = jax.lax.conv_general_dilated(
        x, conv, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    stem = state['batch_stats']['backbone']['stem_bn']
    old = variables['batch_stats']['backbone']['stem_bn']
    np.testing.assert_allclose(
        stem['mean'], 0.9 * old['mean'] + 0.1 * y.mean(axis=(0, 1, 2)),
        rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        stem['var'], 0.9 * old['var'] + 0.1 * y.var(axis=(0, 1, 2)),
        rtol=1e-4, atol=1e-6)

  def test_eval_uses_running_stats_not_the_batch(self):
    apply, variables, x = _resnet()
    full, _ = apply(variables, x, False)
    part, _ = apply(variables, x[:2], False)
    np.testing.assert_allclose(part, full[:2], rtol=1e-5, atol=1e-5)
    full_train, _ = apply(variables, x, True)
    part_train, _ = apply(variables, x[:2], True)
    self.assertGreater(float(jnp.max(jnp.abs(part_train - full_train[:2]))),
                       1e-3)
    _, state = apply(variables, x, True)
    updated, _ = apply(merge_variables(variables['params'], state), x, False)
    self.assertGreater(float(jnp.max(jnp.abs(updated - full))), 1e-3)


class FeaturesAndJitTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_head_on_penultimate_reproduces_eval_logits(self, name, kwargs,
                                                      shape, feature_dim):
    del feature_dim
    model, variables, x = _init(name, kwargs, shape)
    head = variables['params']['head']
    features = model.penultimate(variables, x)
    logits, _ = model.apply(variables, x, False)
    np.testing.assert_array_equal(features @ head['kernel'] + head['bias'],
                                  logits)

  @parameterized.named_parameters(*CASES)
  def test_jit_matches_eager(self, name, kwargs, shape, feature_dim):
    del feature_dim
    model, variables, x = _init(name, kwargs, shape)
    jitted = jax.jit(model.apply, static_argnums=2)
    for train in (False, True):
      eager_out = model.apply(variables, x, train)
      jit_out = jitted(variables, x, train)
      self.assertEqual(jax.tree.structure(eager_out),
                       jax.tree.structure(jit_out))
      jax.tree.map(
          lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
          eager_out, jit_out)


class RegistryTest(absltest.TestCase):

  def test_unknown_name_lists_valid_names(self):
    with self.assertRaisesRegex(MuJaxError, 'cnn, mlp, resnet18'):
      create_model('resnet19', NUM_CLASSES)

  def test_split_and_merge_variables(self):
    _, variables, _ = _resnet()
    params, state = split_variables(variables)
    self.assertEqual(set(state), {'batch_stats'})
    self.assertIs(merge_variables(params, state)['params'],
                  variables['params'])
    _, mlp_variables, _ = _init('mlp', {'hidden': (32, 16)}, (8, 8, 1))
    self.assertEqual(split_variables(mlp_variables)[1], {})


if __name__ == '__main__':
  absltest.main()
