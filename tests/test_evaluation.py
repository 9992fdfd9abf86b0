"""MIA-efficacy on constructed cases, accuracies, Avg. Gap and result files."""
import json
import os

import numpy as np
from absl.testing import absltest

from mu_jax import evaluation
from mu_jax.errors import MuJaxError
from mu_jax.evaluation import mia
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

  def test_first_members_are_the_leading_rows_as_the_reference(self):
    # SalUn main_forget.py: retain rows range(test_len) against the whole test set.
    retain, test = np.arange(10.0), 100.0 + np.arange(4.0)
    members, non_members = mia.shadow_sets(retain, test, members='first')
    np.testing.assert_array_equal(members, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(non_members, test)
    members, non_members = mia.shadow_sets(retain, test, members='first', max_per_side=3)
    np.testing.assert_array_equal(members, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(non_members, [100.0, 101.0, 102.0])
    rng = np.random.default_rng(5)   # 'sample': both sides drawn by the seed, in that order
    expected = rng.choice(retain, 4, replace=False), rng.choice(test, 4, replace=False)
    for got, want in zip(mia.shadow_sets(retain, test, seed=5), expected):
      np.testing.assert_array_equal(got, want)

  def test_first_members_decide_the_attack(self):
    # Only the first 50 retain rows are confident (0.9..1); the other 950 lie in
    # 0..0.2 like D_f, the test rows in 0.45..0.55. On the first rows the attack
    # calls D_f non-members (100); on a sample, mostly low rows, members (0).
    rng = np.random.default_rng(0)
    retain = np.concatenate([rng.uniform(0.9, 1.0, 50), rng.uniform(0.0, 0.2, 950)])
    test = rng.uniform(0.45, 0.55, 50)
    forget = rng.uniform(0.0, 0.2, 10)
    self.assertEqual(evaluation.mia_efficacy(retain, test, forget, members='first'), 100.0)
    self.assertEqual(evaluation.mia_efficacy(retain, test, forget, members='sample'), 0.0)
    with self.assertRaisesRegex(MuJaxError, r"eval.mia_members='last'.*valid: sample, first"):
      evaluation.mia_efficacy(retain, test, forget, members='last')

  def test_note_names_the_row_choice_and_the_cap(self):
    self.assertEqual(
        evaluation.mia_note({'mia_members': 'first', 'mia_max_per_side': 5000}),
        'MIA: the SVC trained on the first rows of D_r and of the test split '
        '(`eval.mia_members=first`), at most 5,000 rows per side (`eval.mia_max_per_side=5000`).')
    self.assertIn('a seeded sample', evaluation.mia_note({'mia_max_per_side': 0}))   # older runs
    self.assertIn('no cap on rows per side', evaluation.mia_note({'mia_max_per_side': 0}))
    directory = self.create_tempdir().full_path
    results.write_results([{'method': 'ft'}], directory, note='MIA: a note.')
    table = open(os.path.join(directory, 'results.md')).read()
    self.assertTrue(table.endswith('|\n\nMIA: a note.\n'), table)


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
