"""The method interface, the driver and the ft/ga/rl baselines."""
import jax
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.methods import (
    METHODS, Context, Stream, create_method, run_method)
from mu_jax.methods.base import epoch_stream
from mu_jax.methods.baselines import fine_tune_loss, other_labels
from mu_jax.methods.gradient import gradient_method
from mu_jax.models import create_model
from mu_jax.train import train_model
from tests import helpers
from tests.test_train import assert_trees_close, recipe

_SETUP = {}


def setting():
  """A trained 3-class MLP; class 0 is the forget set."""
  if not _SETUP:
    model = create_model('mlp', 3, hidden=(32,))
    data = helpers.blobs(192, dim=8)
    mesh = sharding.make_mesh('data:1')
    trained = train_model(helpers.classifier(model, data), recipe(learning_rate=0.01, epochs=3), data, seed=0, mesh=mesh)
    forget = data['y'] == 0
    _SETUP.update(model=model, variables=trained.variables,
                  forget=Examples(x=data['x'][forget], y=data['y'][forget]),
                  retain=Examples(x=data['x'][~forget], y=data['y'][~forget]))
  return _SETUP


def context(mesh_spec='data:1', seed=0):
  s = setting()
  return Context(helpers.classifier(s['model'], s['forget']), s['forget'], s['retain'],
                 sharding.make_mesh(mesh_spec), seed)


def forget_accuracy(variables):
  s = setting()
  logits, _ = s['model'].apply(variables, s['forget']['x'], False)
  return helpers.accuracy(np.asarray(logits), s['forget']['y'])


class BaselinesTest(parameterized.TestCase):

  def test_registry_lists_names(self):
    self.assertContainsSubset(['ft', 'ga', 'rl'], METHODS.names())
    with self.assertRaisesRegex(MuJaxError, 'valid names are: .*ft, ga'):
      create_method('gradient_ascent')
    with self.assertRaisesRegex(MuJaxError, "no hyper-parameter 'lr'"):
      create_method('ga', lr=0.1)

  def test_original_remembers_the_forget_set(self):
    self.assertEqual(forget_accuracy(setting()['variables']), 100.0)

  def test_ga_lowers_forget_accuracy(self):
    out = run_method(create_method('ga', learning_rate=0.05, epochs=5, batch_size=32),
                     setting()['variables'], context())
    self.assertLess(forget_accuracy(out.variables), 50.0)
    self.assertEqual(out.steps, 5 * 2)   # 64 forget rows / 32 per batch

  def test_rl_lowers_forget_accuracy_and_keeps_retain(self):
    out = run_method(create_method('rl', learning_rate=0.05, epochs=5, batch_size=32),
                     setting()['variables'], context())
    self.assertLess(forget_accuracy(out.variables), 50.0)
    s = setting()
    logits, _ = s['model'].apply(out.variables, s['retain']['x'], False)
    self.assertGreater(helpers.accuracy(np.asarray(logits), s['retain']['y']), 90.0)

  def test_ft_moves_only_on_retain_data(self):
    out = run_method(create_method('ft', learning_rate=0.05, epochs=2, batch_size=32),
                     setting()['variables'], context())
    self.assertEqual(out.steps, 2 * 4)   # 128 retain rows / 32
    self.assertTrue(any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(out.variables), jax.tree.leaves(setting()['variables']))))

  def test_original_variables_are_not_modified(self):
    before = jax.tree.map(np.array, setting()['variables'])
    run_method(create_method('ga', learning_rate=0.05, epochs=1, batch_size=32),
               setting()['variables'], context())
    assert_trees_close(setting()['variables'], before, rtol=0, atol=0)

  def test_other_labels_never_equal_truth(self):
    labels = jax.numpy.asarray(np.arange(1000) % 7)
    wrong = np.asarray(other_labels(jax.random.PRNGKey(0), labels, 7))
    self.assertFalse(np.any(wrong == np.asarray(labels)))
    self.assertEqual(set(wrong.tolist()), set(range(7)))

  @parameterized.parameters('ft', 'ga', 'rl')
  def test_eight_devices_match_one(self, name):
    method = create_method(name, learning_rate=0.01, epochs=1, batch_size=32)
    one = run_method(method, setting()['variables'], context('data:1'))
    eight = run_method(method, setting()['variables'], context('data:8'))
    assert_trees_close(one.variables, eight.variables, rtol=1e-5, atol=1e-6)

  @parameterized.parameters('ft', 'ga', 'rl')
  def test_jit_matches_eager(self, name):
    method = create_method(name, learning_rate=0.01, epochs=1, batch_size=32)
    ctx = context()
    jitted = run_method(method, setting()['variables'], ctx)
    state = method.prepare(ctx, setting()['variables'])
    with jax.disable_jit():
      for batch in epoch_stream(method, ctx, 0):
        state, _ = method.update(ctx.task, state, batch)
    assert_trees_close(method.result(state), jitted.variables, rtol=1e-5, atol=1e-6)

  def test_frozen_weights_are_bit_identical_with_momentum_and_decay(self):
    def freeze_first_layer(ctx, variables):
      del ctx
      return jax.tree_util.tree_map_with_path(
          lambda path, leaf: np.full(leaf.shape, 'head' in jax.tree_util.keystr(path)),
          variables['params'])

    method = gradient_method(fine_tune_loss, stream=Stream('retain', 3, 32),
                             learning_rate=0.1, momentum=0.9, weight_decay=0.1,
                             make_mask=freeze_first_layer)
    out = run_method(method, setting()['variables'], context())
    before, after = setting()['variables']['params'], out.variables['params']
    for key in before:
      same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[key]),
                                                      jax.tree.leaves(after[key])))
      self.assertEqual(same, key != 'head', key)

  def test_non_finite_update_is_refused(self):
    method = create_method('ga', learning_rate=1e30, epochs=3, batch_size=32)
    with self.assertRaisesRegex(NonFiniteError, 'non-finite'):
      run_method(method, setting()['variables'], context())


if __name__ == '__main__':
  absltest.main()
