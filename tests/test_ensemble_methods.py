"""Methods on every member of an ensemble, member-sharded training, Orbax caching."""
import os

from absl.testing import absltest

from mu_jax import ensembles, sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.methods import Context, create_method, run_method
from mu_jax.models import create_model
from tests import helpers
from tests.test_train import assert_trees_close, recipe


class EnsembleMethodTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = create_model('mlp', 3, hidden=(16,))
    data = helpers.blobs(64)
    cls.mesh = sharding.make_mesh('data:1')
    cls.stacked = ensembles.train_ensemble(helpers.classifier(cls.model, data), recipe(epochs=2, batch_size=16), data, seeds=[0, 1, 2], mesh=cls.mesh)
    cls.ctx = Context(helpers.classifier(cls.model, data),
                      Examples(x=data['x'][:16], y=data['y'][:16]), Examples(x=data['x'][16:], y=data['y'][16:]),
                      cls.mesh, seed=5)
    cls.seeds = [5, 6, 7]

  def test_iterative_method_is_vmapped_and_equals_each_member_alone(self):
    for name, batches in (('ft', 3), ('rl', 4)):   # 48 retain or 64 union rows, batch 16
      method = create_method(name, epochs=1, batch_size=16)
      out = ensembles.run_method_ensemble(method, self.stacked, self.ctx, seeds=self.seeds)
      self.assertTrue(out.vmapped)
      self.assertEqual(out.steps, batches)
      # Every member sees the batches of ctx.seed; member 0's seed is ctx.seed,
      # so it is exactly the method run alone (rl also draws its labels by seed).
      members = [0, 2] if name == 'ft' else [0]
      for m in members:
        alone = run_method(method, ensembles.member(self.stacked, m), self.ctx)
        assert_trees_close(ensembles.member(out.variables, m), alone.variables,
                           rtol=1e-5, atol=1e-6)

  def test_members_in_turn_and_methods_with_their_own_batches(self):
    ft = create_method('ft', epochs=1, batch_size=16)
    vmapped = ensembles.run_method_ensemble(ft, self.stacked, self.ctx, seeds=self.seeds)
    in_turn = ensembles.run_method_ensemble(ft, self.stacked, self.ctx, seeds=self.seeds,
                                            vectorize=False)
    self.assertFalse(in_turn.vmapped)
    assert_trees_close(vmapped.variables, in_turn.variables, rtol=1e-5, atol=1e-6)
    scrub = create_method('scrub', epochs=1, forget_batch_size=8, retain_batch_size=16)
    out = ensembles.run_method_ensemble(scrub, self.stacked, self.ctx, seeds=self.seeds)
    alone = run_method(scrub, ensembles.member(self.stacked, 0), self.ctx)
    self.assertEqual(out.steps, alone.steps)
    assert_trees_close(ensembles.member(out.variables, 0), alone.variables, rtol=1e-5, atol=1e-6)

  def test_one_shot_method_loops_over_members_with_their_seeds(self):
    method = create_method('ssd', batch_size=16)
    out = ensembles.run_method_ensemble(method, self.stacked, self.ctx, seeds=self.seeds)
    self.assertFalse(out.vmapped)
    self.assertLen(out.info['selected'], 3)
    for m, seed in enumerate(self.seeds):
      alone = run_method(method, ensembles.member(self.stacked, m),
                         self.ctx._replace(seed=seed, cache_dir=None))
      assert_trees_close(ensembles.member(out.variables, m), alone.variables, rtol=1e-6)
      self.assertEqual(out.info['selected'][m], alone.info['selected'])

  def test_one_seed_per_member(self):
    with self.assertRaisesRegex(MuJaxError, 'one seed per member'):
      ensembles.run_method_ensemble(create_method('ft'), self.stacked, self.ctx, seeds=[0])


class ShardedAndCachedEnsembleTest(absltest.TestCase):

  def test_members_sharded_over_eight_devices_match_one_device(self):
    model, data = create_model('mlp', 3, hidden=(8,)), helpers.blobs(48)
    cfg = recipe(epochs=1, batch_size=12)
    one = ensembles.train_ensemble(helpers.classifier(model, data), cfg, data, seeds=list(range(8)), mesh=sharding.make_mesh('data:1'))
    sharded = ensembles.train_ensemble(helpers.classifier(model, data), cfg, data, seeds=list(range(8)), mesh=sharding.make_mesh('data:8'), shard_members=True)
    self.assertLen(sharded['params']['head']['kernel'].sharding.device_set, 8)
    assert_trees_close(one, sharded, rtol=1e-5, atol=1e-6)
    with self.assertRaisesRegex(MuJaxError, 'do not divide'):
      ensembles.train_ensemble(helpers.classifier(model, data), cfg, data, seeds=[0, 1, 2], shard_members=True, mesh=sharding.make_mesh('data:8'))

  def test_orbax_cache_loads_the_trained_ensemble(self):
    model, data = create_model('mlp', 3, hidden=(8,)), helpers.blobs(32)
    cfg, mesh = recipe(epochs=1, batch_size=8), sharding.make_mesh('data:1')
    directory = os.path.join(self.create_tempdir().full_path, 'ensemble')
    trained, seconds = ensembles.train_or_load_ensemble(helpers.classifier(model, data), cfg, data, seeds=[0, 1], mesh=mesh, directory=directory)
    loaded, again = ensembles.train_or_load_ensemble(helpers.classifier(model, data), cfg, data, seeds=[0, 1], mesh=mesh, directory=directory)
    self.assertEqual(seconds, again)
    assert_trees_close(trained, loaded, rtol=0, atol=0)
    with self.assertRaisesRegex(MuJaxError, 'different shape'):
      ensembles.train_or_load_ensemble(helpers.classifier(model, data), cfg, data, seeds=[0, 1, 2], mesh=mesh, directory=directory)


if __name__ == '__main__':
  absltest.main()
