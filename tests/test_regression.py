"""The regression task: its metrics, ACU's exact ridge head, refusals, and the benchmark."""
import functools
import os

import jax
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import sharding
from mu_jax.analytic import ridge
from mu_jax.data import Examples, load_dataset
from mu_jax.errors import MuJaxError
from mu_jax.experiments.benchmark import columns, run_benchmark
from mu_jax.methods import Context, acu, blindspot, create_method, run_method
from mu_jax.models import create_model
from mu_jax.tasks import Regression
from mu_jax.train import train_model
from tests import helpers
from tests.test_train import recipe


@functools.lru_cache(maxsize=1)
def setting():
  data = load_dataset('diabetes', seed=0)
  task = Regression(create_model('mlp', 1, hidden=(16,)), (10,), 1)
  trained = train_model(task, recipe(learning_rate=0.01, epochs=20, batch_size=32), data.train,
                        seed=0, mesh=sharding.make_mesh('data:1'))
  forget = np.arange(0, len(data.train), 10)
  retain = np.setdiff1d(np.arange(len(data.train)), forget)
  return {'task': task, 'variables': trained.variables, 'data': data,
          'forget': data.train.take(forget), 'retain': data.train.take(retain)}


def context():
  s = setting()
  return Context(s['task'], s['forget'], s['retain'], sharding.make_mesh('data:1'))


class RegressionTaskTest(absltest.TestCase):

  def test_statistics_and_metrics_from_closed_forms(self):
    task = setting()['task']
    outputs = np.array([[1.0], [2.0], [0.0]], np.float32)
    y = np.array([[0.0], [4.0], [0.0]], np.float32)
    stats = {k: np.asarray(v) for k, v in task.statistics(outputs, {'y': y}).items()}
    np.testing.assert_allclose(stats['squared_error'], [1.0, 4.0, 0.0])
    np.testing.assert_allclose(stats['abs_error'], [1.0, 2.0, 0.0])
    np.testing.assert_allclose(stats['residual'], [-1.0, 2.0, 0.0])
    np.testing.assert_allclose(task.losses(outputs, {'y': y}), [1.0, 4.0, 0.0])
    self.assertAlmostEqual(task.evaluators['mse'](stats), 5.0 / 3)
    self.assertAlmostEqual(task.evaluators['mae'](stats), 1.0)

  def test_shapes_are_checked_at_the_task_boundary(self):
    task = setting()['task']
    with self.assertRaises(AssertionError):   # chex: predictions [N, 1], targets [N, 2]
      task.losses(np.zeros((3, 1), np.float32), {'y': np.zeros((3, 2), np.float32)})

  def test_training_fits_the_data(self):
    s = setting()
    outputs, _ = s['task'].apply(s['variables'], s['data'].test.arrays(), False)
    mse = float(np.mean((np.asarray(outputs) - s['data'].test['y']) ** 2))
    self.assertLess(mse, 0.8)   # standardised targets: predicting the mean gives ~1


class AcuRegressionTest(absltest.TestCase):

  def test_head_equals_ridge_regression_on_the_retained_rows(self):
    s, ctx = setting(), context()
    method = create_method('acu', buffer_size=64)
    state = method.prepare(ctx, s['variables'])
    with jax.enable_x64(True):
      state, _ = jax.jit(method.update, static_argnums=0)(ctx.task, state, None)
      head = np.asarray(state['ridge'].W)
    # The same per-batch features the method learned from: the union stream
    # (rows numbered D_f first, then D_r, without training-set ids), D_r kept.
    features_fn = functools.partial(jax.jit(ctx.task.features), s['variables'])
    ids = np.concatenate(acu.row_ids(ctx))
    f, t, w, seen = (np.concatenate(parts) for parts in
                     zip(*acu._stream(ctx, 'union', ids, acu.BATCH_SIZE, features_fn)))
    kept = (w > 0) & (seen >= len(s['forget']))
    f, t = f[kept], t[kept]
    want = np.asarray(ridge.closed_form(acu.buffer_features(f, state['buffer']), t))
    self.assertLess(np.abs(head - want).max() / np.abs(want).max(), 1e-8)


class BlindspotTest(absltest.TestCase):

  def test_attention_map_closed_form(self):
    a = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)   # 1 example, 2 positions, 2 channels
    m = np.array([2.5, 12.5])                               # mean over channels of a²
    np.testing.assert_allclose(blindspot.attention(a)[0], m / np.linalg.norm(m), rtol=1e-6)
    dense_f, dense_g = np.ones((3, 5), np.float32), np.arange(15.0).reshape(3, 5)
    # A dense layer's map is one number per example, normalised to 1: no term.
    np.testing.assert_allclose(blindspot.attention_distance(dense_f, dense_g), 0.0)

  def test_loss_terms(self):
    s = setting()
    task, variables = s['task'], s['variables']
    rows = s['data'].train.take(np.arange(8)).arrays()
    ones = np.ones(8, np.float32)
    kw = dict(distance='mse', attention_weight=50.0)
    retain_only, _ = blindspot.blindspot_loss(task, variables, {**rows, 'w': ones, 'f': 0 * ones},
                                              variables, **kw)
    outputs, _ = task.apply(variables, rows, True)
    np.testing.assert_allclose(retain_only, np.mean(task.losses(outputs, rows)), rtol=1e-6)
    # All forget rows and a blind spot equal to the model: nothing to align.
    same, _ = blindspot.blindspot_loss(task, variables, {**rows, 'w': ones, 'f': ones},
                                       variables, **kw)
    self.assertEqual(float(same), 0.0)

  def test_forget_outputs_move_toward_the_blind_spot(self):
    s, ctx = setting(), context()
    kw = dict(epochs=10, batch_size=32, blindspot_epochs=2, learning_rate=1e-2)
    out = run_method(create_method('blindspot', **kw), s['variables'], ctx, 'blindspot')
    blind = blindspot.train_blindspot(ctx, epochs=2, learning_rate=1e-2, batch_size=32)
    rows = s['forget'].arrays()

    def distance(variables):
      return float(np.mean((np.asarray(s['task'].apply(variables, rows, False)[0]) -
                            np.asarray(s['task'].apply(blind, rows, False)[0])) ** 2))

    self.assertLess(distance(out.variables), 0.8 * distance(s['variables']))


class RefusalTest(parameterized.TestCase):

  @parameterized.parameters(('rl', 'class labels'), ('boundary_shrink', 'class labels'),
                            ('salun', 'class labels'), ('scrub', 'class labels'))
  def test_methods_needing_classes_refuse_regression(self, name, capability):
    s = setting()
    with self.assertRaisesRegex(MuJaxError, f"Method '{name}' needs {capability}, which the "
                                'regression task does not have'):
      run_method(create_method(name), s['variables'], context(), name)

  def test_batch_missing_a_key_is_refused(self):
    s, ctx = setting(), context()
    bad = ctx._replace(forget=Examples(x=s['forget']['x']))
    with self.assertRaisesRegex(MuJaxError, "forget examples lack 'y'"):
      run_method(create_method('ft'), s['variables'], bad, 'ft')


class DiabetesBenchmarkTest(absltest.TestCase):

  def test_smoke_benchmark_writes_a_regression_table(self):
    config = helpers.load_config('diabetes_mlp')
    workdir = self.create_tempdir().full_path
    result = run_benchmark(config, workdir)
    rows = result['rows']
    self.assertEqual([r['method'] for r in rows], ['original', 'retrain', 'ft', 'ga', 'acu'])
    self.assertEqual(columns(config)[1:8],
                     ('F-MSE', 'R-MSE', 'T-MSE', 'F-MAE', 'R-MAE', 'T-MAE', 'MIA'))
    retrain = rows[1]
    self.assertEqual(retrain['Avg. Gap'], 0.0)
    for row in rows:
      self.assertTrue(np.isfinite(row['T-MSE']))
    results = os.path.join(result['directory'], 'results.md')
    self.assertIn('F-MSE', open(results).read())

  def test_classification_task_on_regression_data_is_refused(self):
    config = helpers.load_config('diabetes_mlp', 'smoke=True,task=classification')
    with self.assertRaisesRegex(MuJaxError, 'classification task cannot use diabetes'):
      run_benchmark(config, self.create_tempdir().full_path)

  def test_unknown_task_lists_the_valid_ones(self):
    config = helpers.load_config('diabetes_mlp', 'smoke=True,task=generative')
    with self.assertRaisesRegex(MuJaxError, 'valid names are: classification, language_model, regression'):
      run_benchmark(config, self.create_tempdir().full_path)


if __name__ == '__main__':
  absltest.main()
