"""Training: sharded == single-device, resume == uninterrupted, caching, NaN guard."""

import chex
import jax
import numpy as np
from absl.testing import absltest

from mu_jax import checkpoint, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.models import create_model
from mu_jax.train import init_state, make_train_step, optimizer_from_config, train_model
from tests import helpers


recipe = helpers.recipe


def assert_trees_close(a, b, **kw):
  """Same structure, shapes and values within tolerance (chex), on host copies."""
  chex.assert_trees_all_close(jax.device_get(a), jax.device_get(b), **kw)


class ShardedStepTest(absltest.TestCase):

  def test_eight_devices_match_one(self):
    self.assertEqual(jax.device_count(), 8)
    model = create_model('mlp', 3, hidden=(16,))
    data = helpers.blobs(64)
    tx = optimizer_from_config(recipe(), 2)
    task = helpers.classifier(model, data)
    step = jax.jit(make_train_step(task, tx))
    batch = next(epoch_batches({'x': data['x'], 'y': data['y']}, 64))
    results = []
    for spec in ('data:1', 'data:8'):
      mesh = sharding.make_mesh(spec)
      state = sharding.replicate(init_state(task, tx, 0), mesh)
      sharded = sharding.shard_batch(batch, mesh)
      self.assertLen(sharded['x'].sharding.device_set, int(spec[-1]))
      for _ in range(3):
        state, stats = step(state, sharded)
      results.append((sharding.to_host(state.params), sharding.to_host(stats)))
    assert_trees_close(results[0], results[1], rtol=1e-5, atol=1e-6)


class MicrobatchTest(absltest.TestCase):
  """Gradients accumulated over micro-batches: the whole batch's step, on any mesh."""

  def setUp(self):
    super().setUp()
    self.data = helpers.blobs(64)
    self.task = helpers.classifier(create_model('mlp', 3, hidden=(16,)), self.data)
    self.tx = optimizer_from_config(recipe(), 2)
    batch = next(epoch_batches({'x': self.data['x'], 'y': self.data['y']}, 64))
    batch['w'][-5:] = 0.0   # padded rows weigh nothing, as in a last partial batch
    self.batch = batch

  def _steps(self, microbatch: int, spec: str = 'data:1'):
    mesh = sharding.make_mesh(spec)
    step = jax.jit(make_train_step(self.task, self.tx, 0.0, microbatch,
                                   sharding.data_size(mesh)))
    state = sharding.replicate(init_state(self.task, self.tx, 0), mesh)
    for _ in range(3):
      state, stats = step(state, sharding.shard_batch(self.batch, mesh))
    return sharding.to_host((state.params, stats))

  def test_equals_the_whole_batch_step_on_one_and_eight_devices(self):
    whole = self._steps(0)
    for microbatch, spec in ((16, 'data:1'), (32, 'data:1'), (16, 'data:8'), (8, 'data:8')):
      assert_trees_close(self._steps(microbatch, spec), whole, rtol=1e-5, atol=1e-6)

  def test_parts_spread_over_the_data_axis(self):
    from mu_jax.train import microbatches
    rows = np.arange(16)
    parts = [p['w'] for p in microbatches({'w': rows}, 8, data_size=2)]
    # device 0 holds rows 0-7, device 1 rows 8-15: each part takes half of each
    np.testing.assert_array_equal(parts, [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]])

  def test_refused_where_it_would_change_the_step(self):
    mesh = sharding.make_mesh('data:2')
    with self.assertRaisesRegex(MuJaxError, 'must divide train.batch_size=32'):
      train_model(self.task, recipe(microbatch=12), self.data, seed=0, mesh=mesh)
    with self.assertRaisesRegex(MuJaxError, "multiple of the mesh's data axis"):
      train_model(self.task, recipe(microbatch=1), self.data, seed=0, mesh=mesh)
    with self.assertRaisesRegex(MuJaxError, 'gradient restriction'):
      train_model(self.task, recipe(microbatch=16, gradient_restriction=0.005), self.data,
                  seed=0, mesh=mesh)
    rng = np.random.default_rng(0)
    images = Examples(x=rng.normal(size=(8, 8, 8, 3)).astype(np.float32),
                      y=np.arange(8, dtype=np.int32) % 3)
    with self.assertRaisesRegex(MuJaxError, 'BatchNorm'):
      train_model(helpers.classifier(create_model('resnet18', 3), images),
                  recipe(microbatch=4, batch_size=8), images, seed=0,
                  mesh=sharding.make_mesh('data:1'))


class TrainModelTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = create_model('mlp', 3, hidden=(16,))
    self.data = helpers.blobs(96)
    self.mesh = sharding.make_mesh('data:2')

  def test_fine_tuning_starts_from_the_given_variables(self):
    task = helpers.classifier(self.model, self.data)
    base = train_model(task, recipe(epochs=1), self.data, seed=0, mesh=self.mesh)
    # A zero learning rate leaves the start untouched; a fresh start would be another init.
    frozen = train_model(task, recipe(epochs=1, learning_rate=1e-30, weight_decay=0.0),
                         self.data, seed=7, mesh=self.mesh, start=base.variables)
    assert_trees_close(frozen.variables, base.variables, rtol=0, atol=1e-12)

  def test_linear_recipe_warms_up_over_its_epochs_then_decays(self):
    # 3 steps per epoch, 1 warm-up epoch, 2 epochs: factors 0, 1/3, 2/3, 1, 2/3, 1/3.
    tx = optimizer_from_config(recipe(optimizer='sgd', momentum=0.0, weight_decay=0.0,
                                      learning_rate=1.0, schedule='linear', warmup_epochs=1,
                                      epochs=2), 3)
    params, state, moves = np.zeros(()), None, []
    state = tx.init(params)
    for _ in range(6):
      updates, state = tx.update(np.ones(()), state, params)
      moves.append(-float(updates))
    np.testing.assert_allclose(moves, [0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3], atol=1e-6)

  def test_learns_separable_blobs(self):
    trained = train_model(helpers.classifier(self.model, self.data), recipe(), self.data, seed=0, mesh=self.mesh)
    logits, _ = self.model.apply(trained.variables, self.data['x'], False)
    self.assertEqual(np.mean(np.argmax(logits, -1) == self.data['y']), 1.0)
    self.assertGreater(trained.train_seconds, 0)

  def test_killed_run_resumes_to_the_same_weights(self):
    uninterrupted = train_model(helpers.classifier(self.model, self.data), recipe(), self.data, seed=0, mesh=self.mesh)
    directory = self.create_tempdir().full_path

    class Killed(Exception):
      pass

    class DiesAfterEpoch2(checkpoint.CheckpointStore):
      def save(self, step, state, meta):
        if step == 3:
          raise Killed()
        super().save(step, state, meta)

    with self.assertRaises(Killed):
      train_model(helpers.classifier(self.model, self.data), recipe(), self.data, seed=0, mesh=self.mesh, store=DiesAfterEpoch2(directory))
    store = checkpoint.CheckpointStore(directory)
    self.assertEqual(store.latest_step(), 2)
    resumed = train_model(helpers.classifier(self.model, self.data), recipe(), self.data, seed=0, mesh=self.mesh, store=store)
    assert_trees_close(resumed.variables, uninterrupted.variables, rtol=0, atol=0)
    # Loading a finished run trains nothing and keeps the recorded time.
    again = train_model(helpers.classifier(self.model, self.data), recipe(), self.data, seed=0, mesh=self.mesh, store=store)
    self.assertEqual(again.train_seconds, resumed.train_seconds)
    assert_trees_close(again.variables, resumed.variables, rtol=0, atol=0)

  def test_non_finite_loss_stops_and_saves_nothing(self):
    bad = Examples(x=self.data['x'].copy(), y=self.data['y'])
    bad['x'][5] = np.nan
    store = checkpoint.CheckpointStore(self.create_tempdir().full_path)
    with self.assertRaisesRegex(NonFiniteError, 'non-finite training loss in epoch 1'):
      train_model(helpers.classifier(self.model, bad), recipe(), bad, seed=0, mesh=self.mesh, store=store)
    self.assertIsNone(store.latest_step())

  def test_checkpoint_of_another_shape_is_refused(self):
    directory = self.create_tempdir().full_path
    train_model(helpers.classifier(self.model, self.data), recipe(epochs=1), self.data, seed=0, mesh=self.mesh, store=checkpoint.CheckpointStore(directory))
    wider = create_model('mlp', 3, hidden=(32,))
    with self.assertRaisesRegex(MuJaxError, 'different shape'):
      train_model(helpers.classifier(wider, self.data), recipe(epochs=1), self.data, seed=0, mesh=self.mesh, store=checkpoint.CheckpointStore(directory))

  def test_batch_must_divide_over_devices(self):
    with self.assertRaisesRegex(MuJaxError, 'does not divide'):
      train_model(helpers.classifier(self.model, self.data), recipe(batch_size=30), self.data, seed=0, mesh=sharding.make_mesh('data:8'))


class ConfigKeyTest(absltest.TestCase):

  def test_key_depends_on_content_only(self):
    a = checkpoint.config_key({'x': 1, 'idx': np.arange(3)})
    self.assertEqual(a, checkpoint.config_key({'idx': np.arange(3), 'x': 1}))
    self.assertNotEqual(a, checkpoint.config_key({'x': 1, 'idx': np.arange(4)}))


if __name__ == '__main__':
  absltest.main()
