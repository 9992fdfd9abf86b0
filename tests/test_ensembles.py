"""vmapped ensembles: a member equals the model trained alone on its rows; sharding; masks."""
import flax.linen as nn
import jax
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import ensembles, sharding
from mu_jax.errors import MuJaxError
from mu_jax.models import Network, as_model, create_model
from mu_jax.train import train_model
from tests import helpers
from tests.test_train import assert_trees_close, recipe


class DenseBatchNorm(nn.Module):
  """Dense + BatchNorm + ReLU: a backbone whose training depends on whole batches."""

  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(8)(x.reshape(x.shape[0], -1))
    return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))


BATCH_NORM = as_model('dense_bn', Network(DenseBatchNorm(), 3))


class EnsembleTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.model = create_model('mlp', 3, hidden=(16,))
    self.data = helpers.blobs(64)
    self.cfg = recipe(epochs=2, batch_size=16)

  def test_member_equals_train_model_alone(self):
    mesh = sharding.make_mesh('data:1')
    stacked = ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[3, 7], mesh=mesh)
    for m, seed in enumerate([3, 7]):
      alone = train_model(helpers.classifier(self.model, self.data), self.cfg, self.data, seed=seed, mesh=mesh)
      assert_trees_close(ensembles.member(stacked, m), alone.variables, rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(('mlp', False), ('batch_norm', True))
  def test_subset_member_equals_training_alone_on_its_rows(self, batch_norm):
    model = BATCH_NORM if batch_norm else self.model
    masks = ensembles.subset_masks(64, 2, 0.5, seed=0)
    mesh = sharding.make_mesh('data:1')
    stacked = ensembles.train_ensemble(helpers.classifier(model, self.data), self.cfg,
                                       self.data, seeds=[5, 9], masks=masks, mesh=mesh)
    if batch_norm:
      self.assertIn('batch_stats', stacked)
    for m, seed in enumerate([5, 9]):
      rows = self.data.take(np.flatnonzero(masks[m]))
      alone = train_model(helpers.classifier(model, rows), self.cfg, rows, seed=seed, mesh=mesh)
      assert_trees_close(ensembles.member(stacked, m), alone.variables, rtol=1e-5, atol=1e-6)

  def test_batch_norm_member_is_independent_of_rows_it_excludes(self):
    # Row r is in member 1's subset only: moving its input far away changes
    # member 1 and leaves member 0 (params and batch statistics) bit-identical.
    masks = ensembles.subset_masks(64, 2, 0.5, seed=0)
    r = np.flatnonzero(~masks[0] & masks[1])[0]
    x = self.data['x'].copy()
    x[r] = 1e3
    moved = self.data.with_arrays(x=x)
    out = [ensembles.train_ensemble(helpers.classifier(BATCH_NORM, d), self.cfg, d,
                                    seeds=[0, 1], masks=masks, mesh=sharding.make_mesh('data:1'))
           for d in (self.data, moved)]
    assert_trees_close(ensembles.member(out[0], 0), ensembles.member(out[1], 0), rtol=0, atol=0)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), ensembles.member(out[0], 1),
                           ensembles.member(out[1], 1))
    self.assertTrue(all(jax.tree.leaves(changed['batch_stats'])))

  @parameterized.named_parameters(('vmapped', True), ('member_after_member', False))
  def test_members_never_see_excluded_rows(self, vectorize):
    # A NaN input anywhere in a batch, even at weight 0, makes the gradient NaN.
    masks = ensembles.subset_masks(64, 2, 0.5, seed=3)
    x = self.data['x'].copy()
    x[~masks[0]] = np.nan
    poisoned = self.data.with_arrays(x=x)
    mesh = sharding.make_mesh('data:1')
    stacked = ensembles.train_ensemble(helpers.classifier(self.model, poisoned), self.cfg,
                                       poisoned, seeds=[0, 1], masks=masks, mesh=mesh,
                                       vectorize=vectorize)
    clean = ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg,
                                     self.data, seeds=[0, 1], masks=masks, mesh=mesh,
                                     vectorize=vectorize)
    assert_trees_close(ensembles.member(stacked, 0), ensembles.member(clean, 0), rtol=0, atol=0)
    self.assertTrue(np.isnan(stacked['params']['head']['kernel'][1]).all())

  def test_member_loop_equals_vmap_for_a_cnn(self):
    # Convolutional members step one after another on CPU (lax.map): same result.
    cnn = create_model('cnn', 3)
    data = helpers.blobs(32, dim=8 * 8)
    data = data.with_arrays(x=data['x'].reshape(32, 8, 8, 1))
    cfg = recipe(epochs=1, batch_size=16)
    masks = ensembles.subset_masks(32, 2, 0.5, seed=0)
    mesh = sharding.make_mesh('data:1')
    out = [ensembles.train_ensemble(helpers.classifier(cnn, data), cfg, data, seeds=[0, 1], masks=masks, mesh=mesh, vectorize=v) for v in (True, False, None)]
    assert_trees_close(out[0], out[1], rtol=1e-5, atol=1e-6)
    assert_trees_close(out[1], out[2], rtol=0, atol=0)
    self.assertFalse(ensembles.vectorizes(out[0]['params']))
    self.assertTrue(ensembles.vectorizes(
        ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0], mesh=mesh)['params']))

  def test_eight_devices_match_one(self):
    masks = ensembles.subset_masks(64, 3, 0.5, seed=1)
    out = [ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0, 1, 2], masks=masks, mesh=sharding.make_mesh(spec))
           for spec in ('data:1', 'data:8')]
    assert_trees_close(out[0], out[1], rtol=1e-5, atol=1e-6)

  def test_apply_stacks_member_logits(self):
    stacked = ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0, 1], mesh=sharding.make_mesh('data:1'))
    logits = ensembles.ensemble_apply(helpers.classifier(self.model, {'x': self.data['x']}), stacked, {'x': self.data['x']})
    self.assertEqual(logits.shape, (2, 64, 3))
    one, _ = self.model.apply(ensembles.member(stacked, 1), self.data['x'], False)
    np.testing.assert_allclose(logits[1], one, rtol=1e-5, atol=1e-6)

  def test_subset_masks_have_the_fraction(self):
    masks = ensembles.subset_masks(100, 4, 0.3, seed=0)
    np.testing.assert_array_equal(masks.sum(1), [30] * 4)
    self.assertFalse(np.array_equal(masks[0], masks[1]))
    with self.assertRaisesRegex(MuJaxError, 'outside'):
      ensembles.subset_masks(100, 4, 0.0, seed=0)

  def test_task_init_reinitializes_like_flax(self):
    variables = self.model.init(jax.random.PRNGKey(0), self.data['x'][:1])
    fresh = helpers.classifier(self.model, self.data).init(jax.random.PRNGKey(1))
    self.assertEqual(jax.tree.structure(fresh), jax.tree.structure(variables))
    kernel = np.asarray(fresh['params']['head']['kernel'])
    self.assertFalse(np.allclose(kernel, variables['params']['head']['kernel']))
    np.testing.assert_array_equal(fresh['params']['head']['bias'], 0.0)

  def test_bad_masks_are_refused(self):
    mesh = sharding.make_mesh('data:1')
    with self.assertRaisesRegex(MuJaxError, 'expected'):
      ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0], mesh=mesh, masks=np.ones((2, 64), bool))
    with self.assertRaisesRegex(MuJaxError, 'empty'):
      ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0], mesh=mesh, masks=np.zeros((1, 64), bool))
    unequal = np.ones((2, 64), bool)
    unequal[1, :8] = False
    with self.assertRaisesRegex(MuJaxError, 'subsets of 56 to 64 rows'):
      ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0, 1], mesh=mesh, masks=unequal)


if __name__ == '__main__':
  absltest.main()
