"""Margins, KLoM, U-LiRA, the NeurIPS 2023 challenge score and the entropy MIA."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest

from mu_jax import ensembles, sharding
from mu_jax.errors import MuJaxError
from mu_jax.evaluation import challenge, entropy_mia, klom, margins, mia, ulira
from mu_jax import configs
from mu_jax.experiments import rigorous, validation
from mu_jax.tasks import classification
from mu_jax.models import create_model
from tests import helpers
from tests.test_train import recipe


class MarginTest(absltest.TestCase):

  def test_closed_form_and_clip(self):
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 500.0, 0.0]])
    phi = classification.margin(logits, jnp.array([0, 1]))
    np.testing.assert_allclose(phi[0], 2.0 - np.log(1.0 + np.exp(-1.0)), rtol=1e-6)
    self.assertEqual(float(phi[1]), classification.MARGIN_CLIP)
    np.testing.assert_allclose(jax.jit(classification.margin, static_argnames='clip')(logits, jnp.array([0, 1])), phi)

  def test_margin_is_log_odds_of_the_true_class(self):
    logits = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4))   # [members, rows, classes]
    labels = jnp.array([0, 1, 2, 3, 0])
    p = jax.nn.softmax(logits)[..., np.arange(5), labels]
    np.testing.assert_allclose(classification.margin(logits, labels), np.log(p / (1 - p)), atol=1e-5)

  def test_ensemble_outputs_match_members_on_one_and_eight_devices(self):
    model = create_model('mlp', 3, hidden=(8,))
    data = helpers.blobs(40)
    stacked = ensembles.train_ensemble(helpers.classifier(model, data), recipe(epochs=1, batch_size=8), data, seeds=[0, 1], mesh=sharding.make_mesh('data:1'))
    one, eight = (margins.ensemble_outputs(helpers.classifier(model, data), stacked, data, batch_size=16, mesh=sharding.make_mesh(spec))
                  for spec in ('data:1', 'data:8'))
    for a, b in zip(one, eight):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    logits, _ = model.apply(ensembles.member(stacked, 1), data['x'], False)
    np.testing.assert_allclose(one.margin[1], classification.margin(logits, data['y']), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(one.accuracy()[1],
                               100 * np.mean(np.argmax(logits, -1) == data['y']))
    self.assertEqual(one.margin.shape, (2, 40))


class KLoMTest(absltest.TestCase):

  def test_identical_samples_give_zero(self):
    x = np.random.default_rng(0).normal(size=(32, 7))
    np.testing.assert_allclose(klom.klom(x, x), 0.0, atol=1e-6)
    np.testing.assert_allclose(klom.klom(np.ones((4, 2)), np.ones((4, 2))), 0.0)

  def test_matches_a_hand_computation(self):
    # Two bins over [0, 3]: P = (3/4, 1/4), Q = (1/4, 3/4): KL = 1/2 log 3.
    p = np.array([[0.0], [0.0], [1.0], [3.0]])
    q = np.array([[0.0], [2.0], [2.0], [3.0]])
    np.testing.assert_allclose(klom.klom(p, q, bins=2), [0.5 * np.log(3.0)], rtol=1e-6)
    # An empty oracle bin under unlearned mass is floored at eps, then renormalised.
    q = np.full((4, 1), 3.0)
    q_safe = np.array([1e-5, 1.0]) / 1.00001
    expected = 0.75 * np.log(0.75 / q_safe[0]) + 0.25 * np.log(0.25 / q_safe[1])
    np.testing.assert_allclose(klom.klom(p, q, bins=2), [expected], rtol=1e-5)

  def test_direction_is_unlearned_given_oracle(self):
    u = np.array([[0.0], [0.0], [0.0], [3.0]])
    o = np.array([[0.0], [3.0], [3.0], [3.0]])
    forward, backward = klom.klom(u, o, bins=2)[0], klom.klom(o, u, bins=2)[0]
    np.testing.assert_allclose(forward, 0.75 * np.log(3) + 0.25 * np.log(1 / 3), rtol=1e-6)
    np.testing.assert_allclose(forward, backward, rtol=1e-6)   # symmetric here, not below
    u = np.zeros((4, 1))
    np.testing.assert_allclose(klom.klom(u, o, bins=2), [np.log(4)], rtol=1e-6)
    q = np.array([1.0, 1e-5]) / 1.00001
    np.testing.assert_allclose(klom.klom(o, u, bins=2),
                               [0.25 * np.log(0.25 / q[0]) + 0.75 * np.log(0.75 / q[1])],
                               rtol=1e-5)

  def test_oracle_first_is_the_reference_drivers_direction(self):
    # data-unlearning-bench run.py:142 passes the oracles' margins first.
    u = np.zeros((4, 1))
    o = np.array([[0.0], [3.0], [3.0], [3.0]])
    # Unlearned first: P = (1, 0), Q = (1/4, 3/4): KL = log 4.
    np.testing.assert_allclose(klom.klom(u, o, bins=2, direction='unlearned_first'),
                               [np.log(4)], rtol=1e-6)
    # Oracle first: P = (1/4, 3/4), Q = (1, 0) floored at eps in bin 2 and renormalised.
    q = np.array([1.0, 1e-5]) / 1.00001
    np.testing.assert_allclose(klom.klom(u, o, bins=2, direction='oracle_first'),
                               [0.25 * np.log(0.25 / q[0]) + 0.75 * np.log(0.75 / q[1])],
                               rtol=1e-5)
    with self.assertRaisesRegex(MuJaxError, r"'backward'.*valid: unlearned_first, oracle_first"):
      klom.klom(u, o, direction='backward')

  def test_summary_and_errors(self):
    s = klom.summarize(np.arange(101.0))
    self.assertEqual((s.mean, s.p95, s.p99), (50.0, 95.0, 99.0))
    with self.assertRaisesRegex(MuJaxError, 'same examples'):
      klom.klom(np.zeros((4, 2)), np.zeros((4, 3)))
    with self.assertRaisesRegex(MuJaxError, 'at least 2'):
      klom.klom(np.zeros((1, 2)), np.zeros((4, 2)))


class ULiRATest(absltest.TestCase):

  def test_identical_sides_give_exactly_fifty(self):
    x = np.random.default_rng(0).normal(size=(16, 5))
    self.assertEqual(ulira.ulira_accuracy(x, x), 50.0)

  def test_one_distribution_gives_about_fifty_and_separated_gives_hundred(self):
    rng = np.random.default_rng(1)
    u, o = rng.normal(size=(64, 400)), rng.normal(size=(64, 400))
    self.assertAlmostEqual(ulira.ulira_accuracy(u, o), 50.0, delta=2.5)
    self.assertEqual(ulira.ulira_accuracy(u + 20.0, o), 100.0)

  def test_each_target_is_scored_by_shadows_it_did_not_fit(self):
    rng = np.random.default_rng(2)
    u, o = rng.normal(0, 1, (4, 3)), rng.normal(1, 2, (4, 3))
    scores_u, scores_o = ulira.ulira_scores(u, o, folds=2, seed=7)
    folds = np.array_split(np.random.default_rng(7).permutation(4), 2)
    for k, targets in enumerate(folds):
      shadows = folds[1 - k]
      logpdf = lambda x, s: -0.5 * ((x - s.mean(0)) / s.std(0)) ** 2 - np.log(s.std(0))
      for values, scores in ((u, scores_u), (o, scores_o)):
        x = values[targets]
        np.testing.assert_allclose(scores[targets], logpdf(x, u[shadows]) - logpdf(x, o[shadows]),
                                   rtol=1e-9)
    with self.assertRaisesRegex(MuJaxError, 'folds'):
      ulira.ulira_accuracy(np.zeros((3, 1)), np.zeros((3, 1)))


  def test_masked_fit_and_scores_by_hand(self):
    # 4 models x 3 examples; forgotten[k, j]: model k forgot example j. NaN where not
    # forgotten: those margins must never enter a fit. Seed 1: folds {0, 1} and {2, 3}.
    forgotten = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [1, 1, 0]], bool)
    nan = np.nan
    u = np.array([[3, 2, 7], [5, 0, nan], [nan, 1, 7], [4, 3, nan]], float)
    o = np.array([[-2, 0, 7], [2, 1, nan], [nan, -1, 7], [0, 1, nan]], float)
    self.assertEqual([list(f) for f in ulira._folds(4, 2, 1)], [[0, 1], [2, 3]])
    mean, std, count = ulira.masked_fit(u[2:], forgotten[2:])   # the shadows of fold {0, 1}
    np.testing.assert_array_equal(count, [1, 2, 1])
    self.assertEqual((mean[1], std[1], mean[0], std[0]), (2.0, 1.0, 4.0, 0.0))
    mean, std, _ = ulira.masked_fit(o[:2], forgotten[:2])       # the shadows of fold {2, 3}
    np.testing.assert_array_equal(mean[:2], [0.0, 0.5])
    np.testing.assert_array_equal(std, [2.0, 0.5, 0.0])
    self.assertEqual(mean[2], 7.0)                               # o[1, 2] (NaN) left out
    mean, std, count = ulira.masked_fit(o[1:2], forgotten[1:2])  # no model forgot example 2
    self.assertTrue(count[2] == 0 and np.isnan(mean[2]) and np.isnan(std[2]))
    # Scored: forgotten pairs whose example two shadows of the other fold forgot too.
    np.testing.assert_array_equal(ulira.counted_pairs(forgotten, folds=2, seed=1),
                                  [[0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 1, 0]])
    scores_u, scores_o = ulira.masked_ulira_scores(u, o, forgotten, folds=2, seed=1)
    ln2 = np.log(2.0)   # pairs (0, 1), (1, 1), (2, 1), (3, 0), (3, 1)
    np.testing.assert_allclose(scores_u, [2.0, -2.0, 0.5 - ln2, 2.0 + ln2, 10.5 - ln2],
                               rtol=1e-12)
    np.testing.assert_allclose(scores_o, [-2.0, 0.0, 2.5 - ln2, -8.0 + ln2, 0.5 - ln2],
                               rtol=1e-12)
    self.assertAlmostEqual(ulira.accuracy(scores_u, scores_o), 70.0)   # 3/5 and 4/5
    with self.assertRaisesRegex(MuJaxError, 'one shape'):
      ulira.masked_ulira_scores(u, o, forgotten[:, :2])

  def test_tpr_at_low_fpr_by_hand(self):
    # Unlearned targets (positives) 3, 2, 1, 0; oracle targets 2.5, 0.5, -1, -2.
    pos, neg = np.array([[3.0, 2.0], [1.0, 0.0]]), np.array([[2.5, 0.5], [-1.0, -2.0]])
    self.assertEqual(ulira.tpr_at_fpr(pos, neg, 0.25), 25.0)    # no false positive: t = 3
    self.assertEqual(ulira.tpr_at_fpr(pos, neg, 0.5), 75.0)     # one (2.5): t = 1
    self.assertEqual(ulira.tpr_at_fpr(pos, neg, 1.0), 100.0)    # three: t = -1
    # A tie across the sides moves both rates at once: t = 1 has FPR 1/2, so below it none.
    self.assertEqual(ulira.tpr_at_fpr(np.ones(2), np.array([1.0, 0.0]), 0.5), 0.0)
    self.assertTrue(np.isnan(ulira.tpr_at_fpr(np.zeros(0), np.zeros(3), 0.01)))

  def test_tpr_at_fpr_matches_lira_plot_on_the_full_roc(self):
    from sklearn.metrics import roc_curve
    rng = np.random.default_rng(4)
    pos = np.round(rng.normal(1.0, 1.0, 3000), 1)   # rounded: many ties
    neg = np.round(rng.normal(0.0, 1.0, 5000), 1)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(3000), np.zeros(5000)], np.r_[pos, neg],
                            drop_intermediate=False)
    for rate in ulira.LOW_FPRS:
      self.assertAlmostEqual(ulira.tpr_at_fpr(pos, neg, rate),
                             100 * tpr[np.where(fpr < rate)[0][-1]], places=10)


# ---- A NumPy reference of the challenge score, written from the reference
# metric.py: thresholds tiled against every model, as there.

def _reference_rates_double(pos, neg):
  pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
  smallest = neg_diff if pos_diff > neg_diff else pos_diff
  if pos_diff >= neg_diff:
    pos, neg = neg, pos
  width = smallest
  lo, hi = pos.min() + width - 2.0, pos.max() + 2.0
  rights = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * 100)))
  lefts = np.concatenate([np.linspace(r - width - 2.0, r - width + 2.0, num=400) for r in rights])
  rights = np.repeat(rights, 400)
  inside = lambda c: (lefts <= c[:, None]) & (c[:, None] <= rights)
  return (inside(pos).mean(0), (~inside(pos)).mean(0), inside(neg).mean(0),
          (~inside(neg)).mean(0))


def _reference_rates_single(pos, neg):
  both = np.concatenate([pos, neg])
  t = np.linspace(both.min(), both.max(), int(np.ceil((both.max() - both.min()) * 100)))
  return ((pos[:, None] >= t).mean(0), (pos[:, None] < t).mean(0),
          (neg[:, None] >= t).mean(0), (neg[:, None] < t).mean(0))


def _reference_epsilon(pos, neg, delta=1e-5):
  pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
  if min(pos_diff, neg_diff) / max(pos_diff, neg_diff) < 0.01:
    return 50.0
  tpr, fnr, fpr, tnr = (np.concatenate(r) for r in zip(_reference_rates_double(pos, neg),
                                                      _reference_rates_single(pos, neg)))
  eps = np.zeros(len(tpr))
  eps[(fpr + fnr == 0) & (tpr + tnr == 2)] = np.inf
  eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
  with np.errstate(divide='ignore', invalid='ignore'):
    value = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr),
                               np.log(1 - delta - fnr) - np.log(fpr)], axis=0), 0, None)
  eps = np.where(eps == 0, value, eps)
  return float(np.clip(np.nanmax(eps[~np.isnan(eps)]), 0, 50))


def _reference_score(u, r):
  n, s = r.shape
  r_pos = np.median(r, 0) > np.median(u, 0)
  pos, neg = np.where(r_pos, r, u), np.where(r_pos, u, r)
  eps = [_reference_epsilon(pos[:, i], neg[:, i]) for i in range(s)]
  max_eps, start, points, buckets = np.ceil(np.log(n - 1)), 0.0, 1.0, {}
  while start + 0.5 <= max_eps:
    buckets[start], points, start = points, points / 2, start + 0.5
  score = 0.0
  for e in eps:
    for b, p in buckets.items():
      if e < b + 0.5:
        score += p
        break
  return score / s, np.array(eps)


class ChallengeTest(absltest.TestCase):

  def _synthetic(self, n=16):
    rng = np.random.default_rng(0)
    r = rng.normal(2.0, 1.0, (n, 6))
    u = r + rng.normal(0.0, 0.3, (n, 6))       # close to the oracles
    u[:, 1] = rng.normal(5.0, 1.0, n)          # shifted
    u[:, 2] = rng.normal(-4.0, 0.2, n)         # shifted and narrow
    u[:, 3] = 2.0 + rng.normal(0, 1e-3, n)     # too peaky: ε capped
    u[:, 4] = r[:, 4]                          # identical
    u[:, 5] = rng.normal(2.5, 3.0, n)          # wider
    return u, r

  def test_matches_the_numpy_reference(self):
    u, r = self._synthetic()
    quality, eps = _reference_score(u, r)
    got = challenge.challenge_score(u, r, retain_acc_unlearned=90.0, retain_acc_retrained=100.0,
                                    test_acc_unlearned=80.0, test_acc_retrained=80.0)
    np.testing.assert_allclose(got.epsilons, eps, rtol=1e-9)
    self.assertAlmostEqual(got.forget_quality, quality, places=12)
    self.assertAlmostEqual(got.score, quality * 0.9, places=12)
    self.assertEqual(eps[3], 50.0)
    self.assertEqual(eps[4], 0.0)

  def test_buckets_and_quality(self):
    # N = 32: ceil(log 31) = 4, so eight buckets worth 1, 1/2, ..., 1/128.
    buckets = challenge.bucket_points(32)
    self.assertEqual(len(buckets), 8)
    self.assertEqual(buckets[-1], (3.5, 1 / 128))
    self.assertEqual(challenge.forget_quality(np.array([0.0, 0.49, 0.5, 3.9, 4.0]), 32),
                     (1 + 1 + 0.5 + 1 / 128 + 0) / 5)

  def test_identical_point_masses(self):
    self.assertEqual(challenge.example_epsilon(np.ones(8), np.ones(8)), 0.0)
    self.assertEqual(challenge.example_epsilon(np.ones(8), np.zeros(8)), challenge.EPSILON_CAP)
    with self.assertRaisesRegex(MuJaxError, 'equal shape'):
      challenge.epsilons(np.zeros((4, 2)), np.zeros((5, 2)))


class EntropyMIATest(absltest.TestCase):

  def test_predicts_members_from_low_entropy(self):
    rng = np.random.default_rng(0)
    retain, test = rng.uniform(0.0, 0.2, 500), rng.uniform(0.8, 1.5, 300)
    self.assertEqual(entropy_mia.entropy_mia(retain, test, rng.uniform(0.0, 0.2, 50)), 100.0)
    self.assertEqual(entropy_mia.entropy_mia(retain, test, rng.uniform(0.9, 1.4, 50)), 0.0)

  def test_entropy_closed_form(self):
    np.testing.assert_allclose(classification.entropy(jnp.zeros((1, 4))), [np.log(4)], rtol=1e-6)


def _population(rng, shift: float) -> rigorous.Population:
  """4 members on 6 forget / 20 retain / 8 test rows with margins shifted by `shift`."""
  def outputs(n):
    margin = rng.normal(shift, 1.0, (4, n))
    return margins.Outputs(margin, margin > 0, 1 / (1 + np.exp(-margin)), rng.uniform(size=(4, n)))
  return rigorous.Population({'w': np.zeros((4, 1))}, None,
                             {'forget': outputs(6), 'retain': outputs(20), 'test': outputs(8)})


class RigorousScoreTest(absltest.TestCase):
  """The protocol options reach the rigorous row: KLoM direction, MIA rows, U-LiRA TPRs."""

  def _config(self, **rigorous_options):
    config = ml_collections.ConfigDict(dict(
        seed=0, eval=dict(batch_size=8, mia_max_per_side=0, mia_members='first'),
        rigorous=rigorous.default_config()))
    config.rigorous.update(rigorous_options)
    return config

  def test_row_has_the_reference_options_and_low_fpr_tprs(self):
    rng = np.random.default_rng(0)
    pop, oracle = _population(rng, 1.0), _population(rng, 0.0)
    config = self._config(klom_direction='oracle_first', mia_models=1)
    row, details = rigorous.score(config, 'm', pop, oracle, relearn_steps=None, seconds=1.0)
    self.assertIn('U-LiRA TPR@0.1%', rigorous.COLUMNS)
    for rate, column in zip(ulira.LOW_FPRS, ('U-LiRA TPR@0.1%', 'U-LiRA TPR@1%')):
      self.assertEqual(row[column],
                       ulira.tpr_at_fpr(details['ulira_u'], details['ulira_o'], rate))
    np.testing.assert_allclose(details['klom_forget'],
                               klom.klom(oracle.outputs['forget'].margin,
                                         pop.outputs['forget'].margin))
    out = pop.outputs
    self.assertEqual(row['MIA'], mia.mia_efficacy(out['retain'].confidence[0],
                                                  out['test'].confidence[0],
                                                  out['forget'].confidence[0], members='first'))

  def test_unknown_options_are_refused_before_any_work(self):
    path = os.path.join(os.path.dirname(configs.__file__), 'digits_rigorous.py')
    for key, value, allowed in (('rigorous.klom_direction', 'reverse',
                                 'unlearned_first, oracle_first'),
                                ('eval.mia_members', 'all', 'sample, first'),
                                ('rigorous.ulira_protocol', 'paper', 'shared, hayes')):
      config = rigorous.make_config(path, 'smoke=True')
      block, leaf = key.split('.')
      with config.unlocked():
        config[block][leaf] = value
      with self.assertRaisesRegex(MuJaxError, rf"config.{key} is '{value}'; it must be {allowed}."):
        validation.check_config(config)


class OracleAgainstItselfTest(absltest.TestCase):
  """An oracle ensemble scored against itself is best (or tied) on every metric."""

  def test_oracle_is_best_on_every_metric(self):
    rng = np.random.default_rng(3)
    oracle = rng.normal(0.0, 1.0, (16, 12))
    others = [oracle + 0.5, oracle * 3.0, rng.normal(1.0, 1.0, (16, 12)), -oracle]
    accs = dict(retain_acc_retrained=95.0, test_acc_retrained=90.0)
    ref_klom = klom.klom(oracle, oracle).mean()
    ref_ulira = ulira.ulira_accuracy(oracle, oracle)
    ref_score = challenge.challenge_score(oracle, oracle, retain_acc_unlearned=95.0,
                                          test_acc_unlearned=90.0, **accs).score
    self.assertEqual((ref_klom, ref_ulira, ref_score), (0.0, 50.0, 1.0))
    for u in others:
      self.assertGreaterEqual(klom.klom(u, oracle).mean(), ref_klom)
      self.assertGreaterEqual(abs(ulira.ulira_accuracy(u, oracle) - 50.0), abs(ref_ulira - 50.0))
      self.assertLessEqual(challenge.challenge_score(u, oracle, retain_acc_unlearned=95.0,
                                                     test_acc_unlearned=90.0, **accs).score,
                           ref_score)


if __name__ == '__main__':
  absltest.main()
