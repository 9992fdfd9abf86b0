"""MIA-efficacy on constructed cases, accuracies, Avg. Gap and result files."""
import json
import os

import numpy as np
from absl.testing import absltest

from mu_jax import evaluation
from mu_jax.experiments import results
from mu_jax.tasks import Classification


class MiaTest(absltest.TestCase):

  def test_separable_case_has_known_answer(self):
    # Members are confident (0.95..1), non-members are not (0..0.3): the SVC
    # learns the threshold, so forget points in each band are classified.
    rng = np.random.default_rng(0)
    retain = rng.uniform(0.95, 1.0, 300)
    test = rng.uniform(0.0, 0.3, 300)
    forget = np.concatenate([rng.uniform(0.96, 1.0, 30), rng.uniform(0.0, 0.25, 70)])
    self.assertAlmostEqual(evaluation.mia_efficacy(retain, test, forget), 70.0)

  def test_forget_like_members_scores_zero_and_like_test_scores_hundred(self):
    rng = np.random.default_rng(1)
    retain, test = rng.uniform(0.9, 1, 200), rng.uniform(0, 0.2, 200)
    self.assertEqual(evaluation.mia_efficacy(retain, test, retain[:50]), 0.0)
    self.assertEqual(evaluation.mia_efficacy(retain, test, test[:50]), 100.0)

  def test_equal_counts_capped_and_deterministic(self):
    rng = np.random.default_rng(2)
    retain, test = rng.uniform(size=1000), rng.uniform(size=80)
    forget = rng.uniform(size=40)
    a = evaluation.mia_efficacy(retain, test, forget, seed=3, max_per_side=50)
    b = evaluation.mia_efficacy(retain, test, forget, seed=3, max_per_side=50)
    self.assertEqual(a, b)


class MetricsTest(absltest.TestCase):

  def test_accuracy_and_confidence(self):
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]], np.float32)
    labels = np.array([0, 0, 0])
    stats = Classification(None, (2,), 2).statistics(logits, {'y': labels})
    self.assertAlmostEqual(Classification.evaluators['accuracy'](stats), 200 / 3, places=4)
    conf = stats['confidence']
    np.testing.assert_allclose(conf[1], 1 / (1 + np.e), rtol=1e-6)

  def test_avg_gap_is_mean_absolute_difference(self):
    oracle = {'UA': 100.0, 'RA': 98.0, 'TA': 95.0, 'MIA': 90.0}
    row = {'UA': 90.0, 'RA': 99.0, 'TA': 93.0, 'MIA': 94.0}
    self.assertAlmostEqual(evaluation.avg_gap(row, oracle), (10 + 1 + 2 + 4) / 4)
    self.assertEqual(evaluation.avg_gap(oracle, oracle), 0.0)

  def test_results_files(self):
    directory = self.create_tempdir().full_path
    rows = [{'method': 'ft', 'UA': 1.0, 'RA': 2.0, 'TA': 3.0, 'MIA': 4.0,
             'Avg. Gap': 0.5, 'seconds': 1.5, 'speed-up': 10.0, 'steps': 7}]
    results.write_results(rows, directory, extra={'forget_size': 3})
    table = open(os.path.join(directory, 'results.md')).read()
    self.assertIn('| ft | 1.00 | 2.00 | 3.00 | 4.00 | 0.50 | 1.50 | 10.00 |', table)
    self.assertEqual(json.load(open(os.path.join(directory, 'results.json')))['forget_size'], 3)
    header = open(os.path.join(directory, 'results.csv')).readline().strip()
    self.assertEqual(header, 'method,UA,RA,TA,MIA,Avg. Gap,seconds,speed-up,steps')
    self.assertEqual(os.listdir(directory).count('results.md'), 1)
    self.assertFalse([f for f in os.listdir(directory) if f.endswith('.tmp')])


if __name__ == '__main__':
  absltest.main()
