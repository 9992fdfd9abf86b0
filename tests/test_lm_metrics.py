"""LM unlearning metrics (TOFU, MUSE, MIAs) against hand computations on tiny cases."""
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from mu_jax.errors import MuJaxError
from mu_jax.evaluation.lm import mia, muse, tofu
from mu_jax.evaluation.lm.tokens import token_statistics

LN2, LN3 = math.log(2), math.log(3)


def _numpy_statistics(logits, x, m):
  """A loop-per-position reimplementation of `token_statistics` in float64."""
  n, length, _ = logits.shape
  out = {name: np.zeros((n, length)) for name in ('logp', 'mu', 'sigma')}
  for i in range(n):
    for t in range(1, length):
      z = logits[i, t - 1].astype(np.float64)
      logq = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
      q = np.exp(logq)
      mean = np.sum(q * logq)
      out['logp'][i, t] = logq[x[i, t]] * m[i, t]
      out['mu'][i, t] = mean * m[i, t]
      out['sigma'][i, t] = np.sqrt(max(np.sum(q * logq**2) - mean**2, 0.0)) * m[i, t]
  out['nll_sum'] = -out['logp'].sum(1)
  out['count'] = m.sum(1)
  out['nll_mean'] = out['nll_sum'] / np.maximum(out['count'], 1)
  return out


class TokenStatisticsTest(absltest.TestCase):

  def test_hand_case(self):
    # Row 0 of logits is uniform: log-softmax -ln3 each, mu = -ln3, sigma = 0.
    # Row 1 is (0, ln2, 0): p = (1/4, 1/2, 1/4), log p = (-2ln2, -ln2, -2ln2),
    # mu = -1.5 ln2, E[(log p)^2] = 2.5 ln2^2, sigma = sqrt(0.25 ln2^2) = 0.5 ln2.
    logits = jnp.array([[[0., 0., 0.], [0., LN2, 0.], [5., -1., 2.]]])
    x = jnp.array([[0, 2, 1]], jnp.int32)
    m = jnp.array([[0., 1., 1.]])
    got = token_statistics(logits, x, m)
    np.testing.assert_allclose(got['logp'], [[0, -LN3, -LN2]], rtol=1e-6)
    np.testing.assert_allclose(got['mu'], [[0, -LN3, -1.5 * LN2]], rtol=1e-6)
    np.testing.assert_allclose(got['sigma'], [[0, 0, 0.5 * LN2]], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got['nll_sum'], [math.log(6)], rtol=1e-6)
    np.testing.assert_allclose(got['count'], [2])
    np.testing.assert_allclose(got['nll_mean'], [math.log(6) / 2], rtol=1e-6)
    np.testing.assert_array_equal(got['mask'], m)

  def test_matches_numpy_and_jit(self):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 6, 11)).astype(np.float32)
    x = rng.integers(1, 11, (3, 6)).astype(np.int32)
    m = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], np.float32)
    eager = token_statistics(jnp.asarray(logits), jnp.asarray(x), jnp.asarray(m))
    jitted = jax.jit(token_statistics)(jnp.asarray(logits), jnp.asarray(x), jnp.asarray(m))
    want = _numpy_statistics(logits, x, m)
    for name, value in want.items():
      np.testing.assert_allclose(eager[name], value, rtol=1e-5, atol=2e-5, err_msg=name)
      np.testing.assert_array_equal(eager[name], jitted[name], err_msg=name)
    self.assertEqual(eager['logp'].dtype, jnp.float32)

  def test_inside_a_larger_jit_agrees_to_float32_rounding(self):
    # XLA may fuse the caller's ops with these and round the last bit differently.
    rng = np.random.default_rng(2)
    hidden = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(5, 11)), jnp.float32)
    x = jnp.asarray(rng.integers(1, 11, (3, 6)), jnp.int32)
    m = jnp.ones((3, 6)).at[:, 0].set(0)
    alone = token_statistics(hidden @ head, x, m)
    fused = jax.jit(lambda h, w: token_statistics(h @ w, x, m))(hidden, head)
    for name in alone:
      np.testing.assert_allclose(alone[name], fused[name], rtol=1e-6, atol=1e-6, err_msg=name)

  def test_refuses_misshapen_batch(self):
    with self.assertRaises(MuJaxError):
      token_statistics(jnp.zeros((1, 3, 2)), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1, 4)))


class TofuTest(absltest.TestCase):

  def test_probability_and_normalized_probability(self):
    np.testing.assert_allclose(tofu.probability([0.0, LN2]), [1.0, 0.5])
    e = math.exp
    np.testing.assert_allclose(tofu.normalized_probability([1.0], [[2.0, 3.0]]),
                               [e(-1) / (e(-1) + e(-2) + e(-3))])
    # Huge losses do not underflow into 0/0.
    np.testing.assert_allclose(tofu.normalized_probability([2000.0], [[2000.0]]), [0.5])

  def test_truth_ratio_geometric_mean_and_scores(self):
    # Item 0: P(para) = e^-1, perturbed e^-2, e^-3, geometric mean e^-2.5: R = e^-1.5.
    # Item 1: P(para) = e^-2, perturbed e^-1 twice: R = e^1.
    tr = tofu.truth_ratio([1.0, 2.0], [[2.0, 3.0], [1.0, 1.0]])
    np.testing.assert_allclose(tr, [math.exp(-1.5), math.e])
    self.assertAlmostEqual(tofu.truth_ratio_score(tr, forget=True),
                           (math.exp(-1.5) + math.exp(-1)) / 2)
    self.assertAlmostEqual(tofu.truth_ratio_score(tr, forget=False),
                           (1 - math.exp(-1.5) + 0) / 2)

  def test_forget_quality(self):
    same = [0.5, 0.7, 1.1, 1.3, 2.0]
    self.assertEqual(tofu.forget_quality(same, same), 1.0)
    # Fully separated samples of 5 and 5: exact two-sided p = 2 / C(10, 5).
    self.assertAlmostEqual(tofu.forget_quality([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
                           2 / math.comb(10, 5))
    # TOFU tests 1/R, open-unlearning R: the same p-value.
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(0, 1, 9), rng.lognormal(0.5, 1, 7)
    self.assertAlmostEqual(tofu.forget_quality(a, b), tofu.forget_quality(1 / a, 1 / b))

  def test_rouge_l(self):
    # LCS of 'the cat on mat' with 'the cat sat on the mat' is 4 words:
    # recall 4/6, precision 4/4, F1 = 2 * (2/3) * 1 / (5/3) = 0.8.
    got = tofu.rouge_l(['the cat on mat', 'the cat sat'],
                       ['the cat sat on the mat', 'the cats sat'])
    np.testing.assert_allclose(got['recall'], [4 / 6, 1.0])
    np.testing.assert_allclose(got['fmeasure'], [0.8, 1.0])
    # Without the stemmer 'cats' and 'cat' differ: LCS 2 of 3.
    plain = tofu.rouge_l(['the cat sat'], ['the cats sat'], use_stemmer=False)
    np.testing.assert_allclose(plain['recall'], [2 / 3])

  def test_model_utility(self):
    values = dict(zip(tofu.UTILITY_KEYS, [0.5, 0.25, 1.0] * 3))
    self.assertAlmostEqual(tofu.model_utility(values), 9 / (3 * (2 + 4 + 1)))
    self.assertEqual(tofu.model_utility({'a': 0.4, 'b': 0.0}), 0.0)
    for bad in ({}, {'a': float('nan')}, {'a': -0.1}):
      with self.assertRaises(MuJaxError):
        tofu.model_utility(bad)

  def test_refuses_empty_or_bad_input(self):
    for call in (lambda: tofu.probability([]), lambda: tofu.truth_ratio([1.0], [[1.0], [2.0]]),
                 lambda: tofu.forget_quality([], [1.0]), lambda: tofu.rouge_l([], []),
                 lambda: tofu.rouge_l(['a'], ['a', 'b']),
                 lambda: tofu.truth_ratio_score([], forget=True)):
      with self.assertRaises(MuJaxError):
        call()


class MuseTest(absltest.TestCase):

  def test_verbmem_and_knowmem_are_mean_rouge_l_f1(self):
    self.assertAlmostEqual(
        muse.verbmem(['the cat on mat', 'a b'], ['the cat sat on the mat', 'a b']), 0.9)
    # KnowMem cuts at the first '\n\n' before scoring.
    self.assertAlmostEqual(muse.knowmem(['the cat on mat\n\nQuestion: x'],
                                        ['the cat sat on the mat']), 0.8)

  def test_privleak(self):
    # Member AUCs 0.7 and 0.55 are MUSE AUCs 0.3 and 0.45: (0.3 - 0.45) / 0.45 * 100.
    self.assertAlmostEqual(muse.privleak(0.7, 0.55), -100 / 3)
    self.assertAlmostEqual(muse.privleak(0.3, 0.45, muse_orientation=True), -100 / 3)
    # muse_bench constants.py: news AUC_RETRAIN['forget_holdout_Min-40%'] = 0.4772.
    self.assertAlmostEqual(muse.privleak(0.4772, 0.4772, muse_orientation=True), 0.0)
    with self.assertRaises(MuJaxError):
      muse.privleak(1.2, 0.5)


class MiaTest(absltest.TestCase):

  # One sequence: position 0 unscored, 1..5 the answer, 6 the EOS, 7 padding.
  LOGP = np.array([[0., -1., -5., -2., -4., -3., -100., 0.]])
  MASK = np.array([[0., 1., 1., 1., 1., 1., 1., 0.]])

  def test_min_k(self):
    # k = 0.4 of the 5 answer tokens: int(2.0) = 2 lowest, -5 and -4: score 4.5.
    np.testing.assert_allclose(mia.min_k_score(self.LOGP, self.MASK, k=0.4), [4.5])
    # With the EOS kept: int(6 * 0.4) = 2 lowest, -100 and -5.
    np.testing.assert_allclose(mia.min_k_score(self.LOGP, self.MASK, k=0.4, drop_last=False),
                               [52.5])
    # k too small for one token still takes one: max(1, int(5 * 0.1)).
    np.testing.assert_allclose(mia.min_k_score(self.LOGP, self.MASK, k=0.1), [5.0])

  def test_min_k_plus_plus(self):
    mu = np.full_like(self.LOGP, -1.0)
    sigma = np.array([[0., 1., 2., 1., 1., 0.5, 1., 0.]])
    # z over the answer = (0, -2, -1, -3, -4); the lowest 2 are -4, -3: score 3.5.
    np.testing.assert_allclose(
        mia.min_k_plus_plus_score(self.LOGP, mu, sigma, self.MASK, k=0.4), [3.5])
    # sigma = 0 is floored at 1e-3: z = (-5 - -1) / 1e-3 = -4000 at position 2.
    sigma[0, 2] = 0.0
    np.testing.assert_allclose(
        mia.min_k_plus_plus_score(self.LOGP, mu, sigma, self.MASK, k=0.2), [4000.0])

  def test_zlib_loss_and_reference(self):
    # zlib of b'a': 2-byte header, one fixed-Huffman block of 18 bits (3 bytes),
    # 4-byte Adler-32: 9 bytes. Of b'': 2 + 2 + 4 = 8.
    np.testing.assert_allclose(mia.zlib_score([1.8, 4.0], ['a', '']), [0.2, 0.5])
    np.testing.assert_allclose(mia.loss_score([1.5]), [1.5])
    np.testing.assert_allclose(mia.reference_score([2.0, 1.0], [0.5, 1.5]), [1.5, -0.5])

  def test_auc_by_hand(self):
    # Loss-like: a member below a non-member counts 1, a tie 1/2.
    # Members 1, 2 beat all three of 3, 4, 6; member 5 beats only 6: 7/9.
    self.assertAlmostEqual(mia.auc([1, 2, 5], [3, 4, 6]), 7 / 9)
    self.assertAlmostEqual(mia.auc([1, 2, 4], [3, 4, 6]), 7.5 / 9)

  def test_tpr_at_fpr_by_hand(self):
    members = [0.1, 0.2, 0.3, 0.9]
    nonmembers = [0.25] + list(range(1, 10))
    # FPR 0: threshold 0.2 catches 2 of 4 members.
    self.assertEqual(mia.tpr_at_fpr(members, nonmembers, fpr=0.01), 0.5)
    # FPR <= 1/10: threshold 0.9 lets in only 0.25 and catches all members.
    self.assertEqual(mia.tpr_at_fpr(members, nonmembers, fpr=0.1), 1.0)

  def test_evaluate_attacks(self):
    def stats(nll):
      logp = np.zeros((len(nll), 4))
      logp[:, 1:3] = -np.asarray(nll)[:, None]
      return {'logp': logp, 'mu': np.zeros_like(logp), 'sigma': np.ones_like(logp),
              'mask': np.array([[0, 1, 1, 1]] * len(nll), float), 'nll_mean': np.asarray(nll)}
    member, nonmember = stats([1.0, 2.0]), stats([3.0, 4.0])
    reference = stats([0.0, 0.0])
    got = mia.evaluate_attacks(member, nonmember, member_texts=['a', 'b'],
                               nonmember_texts=['c', 'd'], member_reference=reference,
                               nonmember_reference=reference)
    self.assertEqual(list(got), ['loss', 'zlib', 'min_k', 'min_k++', 'ref'])
    for name, result in got.items():
      self.assertEqual(result, {'auc': 1.0, 'tpr_at_fpr': 1.0}, name)
    self.assertEqual(list(mia.evaluate_attacks(member, nonmember)), ['loss', 'min_k', 'min_k++'])

  def test_refuses_bad_input(self):
    for call in (lambda: mia.auc([], [1.0]), lambda: mia.tpr_at_fpr([1.0], []),
                 lambda: mia.auc([np.nan], [1.0]), lambda: mia.tpr_at_fpr([1.0], [2.0], fpr=2),
                 lambda: mia.min_k_score(self.LOGP, self.MASK, k=0.0),
                 lambda: mia.min_k_score(self.LOGP, np.zeros_like(self.MASK)),
                 lambda: mia.zlib_score([1.0], ['a', 'b'])):
      with self.assertRaises(MuJaxError):
        call()


if __name__ == '__main__':
  absltest.main()
