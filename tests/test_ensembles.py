"""vmapped ensembles: a member equals the model trained alone; sharding; masks."""
import jax
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import ensembles, sharding
from mu_jax.data.batching import epoch_batches, num_batches
from mu_jax.errors import MuJaxError
from mu_jax.models import create_model, merge_variables
from mu_jax.train import init_state, make_train_step, optimizer_from_config, train_model
from tests import helpers
from tests.test_train import assert_trees_close, recipe


def _alone_with_mask(model, cfg, data, seed, mask):
  """One model on a subset, as the mask weights rows: the reference loop."""
  tx = optimizer_from_config(cfg, num_batches(len(data['y']), cfg.batch_size))
  task = helpers.classifier(model, data)
  state = init_state(task, tx, seed)
  step = jax.jit(make_train_step(task, tx))
  arrays = {'x': data['x'], 'y': data['y'], 'm': mask.astype(np.float32)}
  for epoch in range(cfg.epochs):
    for batch in epoch_batches(arrays, cfg.batch_size, seed=seed, epoch=epoch):
      batch['w'] = batch['w'] * batch.pop('m')
      state, _ = step(state, batch)
  return merge_variables(state.params, state.model_state)


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

  def test_masked_member_equals_masked_training_alone(self):
    masks = ensembles.subset_masks(64, 2, 0.5, seed=0)
    stacked = ensembles.train_ensemble(helpers.classifier(self.model, self.data), self.cfg, self.data, seeds=[0, 1], masks=masks, mesh=sharding.make_mesh('data:1'))
    for m in range(2):
      alone = _alone_with_mask(self.model, self.cfg, self.data, m, masks[m])
      assert_trees_close(ensembles.member(stacked, m), alone, rtol=1e-5, atol=1e-6)

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


if __name__ == '__main__':
  absltest.main()
