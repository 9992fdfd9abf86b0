"""DMM's regime: the coherent 'cluster' forget set and the digits_dmm_regime config."""
import math

import numpy as np
from absl.testing import absltest

from mu_jax.data import select_forget
from mu_jax.data.forget import check_spec
from mu_jax.errors import MuJaxError
from mu_jax.experiments import rigorous
from tests import helpers


def _two_blob_class(seed: int = 0):
  """Class 0: 10 rows near (0, 0) and 10 near (100, 0); class 1: 20 rows near (0, 100)."""
  rng = np.random.default_rng(seed)
  centers = np.repeat(np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]]), [10, 10, 20], axis=0)
  inputs = (centers + rng.normal(0, 1, centers.shape)).reshape(40, 2, 1, 1)
  labels = np.repeat([0, 0, 1], [10, 10, 20])
  return inputs, labels


class ClusterForgetTest(absltest.TestCase):

  def test_selects_exactly_the_anchors_sub_cluster(self):
    inputs, labels = _two_blob_class()
    chosen = set()
    for seed in range(8):
      idx = select_forget('cluster:0:0.25', labels, 2, seed, inputs)   # 0.25 * 40 = 10 rows
      self.assertEqual(idx.dtype, np.int64)
      self.assertIn(tuple(idx), {tuple(range(10)), tuple(range(10, 20))})
      np.testing.assert_array_equal(idx, select_forget('cluster:0:0.25', labels, 2, seed,
                                                       inputs))
      chosen.add(tuple(idx))
    self.assertLen(chosen, 2)   # the seed picks the anchor, so both sub-clusters occur

  def test_rows_are_the_class_rows_nearest_one_of_them(self):
    rng = np.random.default_rng(3)
    inputs, labels = rng.normal(size=(60, 5)), np.arange(60) % 3
    idx = select_forget('cluster:1:0.1', labels, 3, 7, inputs)
    self.assertLen(idx, 6)
    self.assertTrue(np.all(labels[idx] == 1))
    rest = np.setdiff1d(np.flatnonzero(labels == 1), idx)
    # Some class-1 row (the anchor) is no farther from every chosen row than from any other.
    far = lambda a, rows: np.linalg.norm(inputs[rows] - inputs[a], axis=1)
    self.assertTrue(any(far(a, idx).max() <= far(a, rest).min() for a in idx))

  def test_bad_requests_fail_in_one_sentence(self):
    inputs, labels = _two_blob_class()
    for spec, message in [
        ('cluster:0:0.6', r'asks for 24 rows, but class 0 has 20; use a fraction of at most '
                          r'0\.500'),
        ('cluster:2:0.1', r'integer class in \[0, 1\]'),
        ('cluster:0', 'strictly between 0 and 1'),
        ('cluster:0:abc', 'strictly between 0 and 1'),
    ]:
      with self.assertRaisesRegex(MuJaxError, message):
        select_forget(spec, labels, 2, 0, inputs)
    check_spec('cluster:0:0.05')   # the form alone, before any data is loaded
    with self.assertRaisesRegex(MuJaxError, 'whole-number class and a fraction'):
      check_spec('cluster:a:0.05')
    with self.assertRaisesRegex(MuJaxError, 'needs the training inputs'):
      select_forget('cluster:0:0.1', labels, 2, 0)
    with self.assertRaisesRegex(MuJaxError, 'needs class labels'):
      select_forget('cluster:0:0.1', labels, 0, 0, inputs)


class RegimeConfigTest(absltest.TestCase):

  def test_full_size_is_the_regime(self):
    c = helpers.load_config('digits_dmm_regime', None)
    self.assertEqual(c.forget, 'random:0.05')
    self.assertEqual(c.methods.split(','),
                     ['ft', 'ga', 'scrub', 'salun', 'oracle_matching', 'dmm'])
    self.assertEqual(c.rigorous.num_models, 64)
    self.assertEqual((c.unlearn.dmm.num_models, c.unlearn.dmm.ensemble_epochs), (256, 30))
    self.assertEqual(helpers.load_config('digits_dmm_regime', 'num_models=100')
                     .rigorous.num_models, 100)

  def test_smoke_run_scores_every_method_on_a_coherent_forget_set(self):
    config = helpers.load_config('digits_dmm_regime',
                                 'smoke=True,mesh=data:1,epochs=1,forget=cluster:3:0.05')
    with config.unlocked():
      config.rigorous.train_size = 300
      config.rigorous.eval_size = 60
      config.rigorous.mia_models = 1
    out = rigorous.run_rigorous(config, self.create_tempdir().full_path)
    rows = {r['method']: r for r in out['rows']}
    self.assertEqual(list(rows), ['original', 'retrain', 'ft', 'ga', 'scrub', 'salun',
                                  'oracle_matching', 'dmm'])
    self.assertEqual(out['request'], 'cluster-3-0.05')
    for name, row in rows.items():
      self.assertEqual(row['models'], 4, name)
      for column in ('KLoM f mean', 'KLoM f p95', 'KLoM r p95', 'KLoM v p95'):
        self.assertTrue(math.isfinite(row[column]), (name, column))
    forget = np.load(out['directory'] + '/forget_indices.npy')
    self.assertLen(forget, 15)   # round(0.05 * 300)


if __name__ == '__main__':
  absltest.main()
