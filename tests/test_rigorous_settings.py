"""Sequential and corrective settings, worst-case forget sets, the relearning attack."""
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from mu_jax import ensembles, sharding
from mu_jax.experiments import scenarios
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.evaluation import relearn, worst_case
from mu_jax.models import create_model
from tests import helpers
from tests.test_train import recipe


class SequentialTest(absltest.TestCase):

  def test_requests_partition_the_forget_set(self):
    forget = np.arange(10, 30)
    parts = scenarios.sequential_requests(forget, 3, seed=0)
    self.assertEqual([len(p) for p in parts], [7, 7, 6])
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), forget)
    for p in parts:
      np.testing.assert_array_equal(p, np.sort(p))
    for a, b in zip(parts, scenarios.sequential_requests(forget, 3, seed=0)):
      np.testing.assert_array_equal(a, b)
    with self.assertRaisesRegex(MuJaxError, 'into 21 requests'):
      scenarios.sequential_requests(forget, 21, seed=0)


class CorrectiveTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.train = Examples(x=rng.normal(size=(60, 4, 4, 1)).astype(np.float32), y=(np.arange(60) % 6).astype(np.int32))

  def test_badnet_patches_and_relabels_only_the_poisoned_rows(self):
    m = scenarios.manipulate(self.train, 'badnet', 12, seed=1, num_classes=6, patch_size=2)
    self.assertLen(m.manipulated, 12)
    self.assertTrue((self.train['y'][m.manipulated] != 0).all())
    np.testing.assert_array_equal(m.train['y'][m.manipulated], 0)
    self.assertEqual(m.patch_value, self.train['x'].max())
    np.testing.assert_array_equal(m.train['x'][m.manipulated][:, -2:, -2:], m.patch_value)
    clean = np.setdiff1d(np.arange(60), m.manipulated)
    np.testing.assert_array_equal(m.train['x'][clean], self.train['x'][clean])
    np.testing.assert_array_equal(m.train['y'][clean], self.train['y'][clean])
    attack = scenarios.attack_split(self.train, m, patch_size=2)
    self.assertLen(attack['y'], 50)
    np.testing.assert_array_equal(attack['y'], 0)
    np.testing.assert_array_equal(attack['x'][:, -2:, -2:], m.patch_value)

  def test_label_swap_and_identified_subset(self):
    m = scenarios.manipulate(self.train, 'label_swap', 6, seed=1, num_classes=6)
    np.testing.assert_array_equal(np.sort(self.train['y'][m.manipulated]), [3, 3, 3, 5, 5, 5])
    np.testing.assert_array_equal(m.train['y'][m.manipulated], 8 - self.train['y'][m.manipulated])
    found = scenarios.identified(m.manipulated, 0.5, seed=0)
    self.assertLen(found, 3)
    self.assertTrue(np.isin(found, m.manipulated).all())
    np.testing.assert_array_equal(found, scenarios.identified(m.manipulated, 0.5, seed=0))
    attack = scenarios.attack_split(self.train, m)
    np.testing.assert_array_equal(attack['y'], np.where(self.train['y'][(self.train['y'] == 3) |
                                                                  (self.train['y'] == 5)] == 3, 5, 3))
    with self.assertRaisesRegex(MuJaxError, 'even count'):
      scenarios.manipulate(self.train, 'label_swap', 5, seed=1, num_classes=6)
    with self.assertRaisesRegex(MuJaxError, 'Unknown manipulation'):
      scenarios.manipulate(self.train, 'flip', 5, seed=1, num_classes=6)


class WorstCaseTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = create_model('mlp', 3, hidden=(16,))
    rng = np.random.default_rng(4)   # overlapping classes: some rows stay hard to fit
    y = np.arange(96) % 3
    x = rng.normal(0, 1, (3, 6))[y] + rng.normal(0, 1.5, (96, 6))
    cls.data = Examples(x=x.reshape(96, 6, 1, 1).astype(np.float32), y=y.astype(np.int32))
    cls.mesh = sharding.make_mesh('data:1')
    cls.variables = ensembles.member(ensembles.train_ensemble(helpers.classifier(cls.model, cls.data), recipe(epochs=3, batch_size=16), cls.data, seeds=[0], mesh=cls.mesh), 0)

  def test_projection_onto_the_capped_simplex(self):
    np.testing.assert_allclose(worst_case.project(jnp.array([3.0, 2.0, 1.0, 0.0]), 2.0),
                               [1, 1, 0, 0], atol=1e-4)
    w = worst_case.project(jax.random.normal(jax.random.PRNGKey(0), (50,)), 7.0)
    self.assertAlmostEqual(float(w.sum()), 7.0, places=3)
    self.assertTrue(bool(((w >= 0) & (w <= 1)).all()))

  def test_selection_is_valid_deterministic_and_finds_harder_rows(self):
    kwargs = dict(mesh=self.mesh, seed=3, batch_size=32, w_lr=50.0, select_epochs=2)
    a = worst_case.select_worst_case(helpers.classifier(self.model, self.data), self.variables, self.data, 10, **kwargs)
    b = worst_case.select_worst_case(helpers.classifier(self.model, self.data), self.variables, self.data, 10, **kwargs)
    np.testing.assert_array_equal(a.indices, b.indices)
    self.assertLen(np.unique(a.indices), 10)
    self.assertTrue(((a.indices >= 0) & (a.indices < 96)).all())
    self.assertFalse(np.array_equal(a.indices, a.initial))
    losses = worst_case.example_losses(helpers.classifier(self.model, self.data), self.variables, self.data,
                                       batch_size=32, mesh=self.mesh)
    self.assertLess(losses[a.indices].mean(), losses[a.initial].mean())
    with self.assertRaisesRegex(MuJaxError, 'choose a size'):
      worst_case.select_worst_case(helpers.classifier(self.model, self.data), self.variables, self.data, 96,
                                   mesh=self.mesh)


class RelearnTest(absltest.TestCase):

  def test_steps_until_forget_accuracy_returns(self):
    model, data, mesh = create_model('mlp', 3, hidden=(16,)), helpers.blobs(96), \
        sharding.make_mesh('data:1')
    forget_rows = data['y'] == 0
    forget = Examples(x=data['x'][forget_rows], y=data['y'][forget_rows])
    retain = Examples(x=data['x'][~forget_rows], y=data['y'][~forget_rows])
    cfg = recipe(epochs=3, batch_size=16)
    original = ensembles.train_ensemble(helpers.classifier(model, data), cfg, data, seeds=[0, 1], mesh=mesh)
    oracle = ensembles.train_ensemble(helpers.classifier(model, retain), cfg, retain, seeds=[0, 1], mesh=mesh)
    kwargs = dict(optimizer='sgd', learning_rate=0.1, batch_size=16, mesh=mesh, max_steps=50)
    targets = np.full(2, 100.0)
    np.testing.assert_array_equal(
        relearn.relearn_steps(helpers.classifier(model, data), original, forget, forget, targets, **kwargs), [0, 0])
    steps = relearn.relearn_steps(helpers.classifier(model, data), oracle, forget, forget, targets, **kwargs)
    self.assertTrue(((steps > 0) & np.isfinite(steps)).all())
    # Members are fine-tuned independently: each equals its own one-member run.
    for m in range(2):
      alone = relearn.relearn_steps(helpers.classifier(model, data), jax.tree.map(lambda l: l[m:m + 1], oracle),
                                    forget, forget, targets[:1], **kwargs)
      self.assertEqual(alone[0], steps[m])
    capped = relearn.relearn_steps(helpers.classifier(model, data), oracle, forget, forget, targets,
                                   **dict(kwargs, max_steps=1, learning_rate=1e-6))
    np.testing.assert_array_equal(capped, [np.inf, np.inf])

  def test_split_relearn(self):
    forget = Examples(x=np.zeros((10, 1, 1, 1), np.float32), y=np.arange(10, dtype=np.int32))
    part, probe = relearn.split_relearn(forget, 0.3, seed=0)
    self.assertEqual((len(part['y']), len(probe['y'])), (3, 7))
    self.assertEmpty(np.intersect1d(part['y'], probe['y']))
    self.assertIs(relearn.split_relearn(forget, 1.0, seed=0)[0], forget)
    with self.assertRaisesRegex(MuJaxError, 'fraction'):
      relearn.split_relearn(forget, 0.01, seed=0)


if __name__ == '__main__':
  absltest.main()
