"""The ridge head's ledger of held rows: ACU refuses to forget what it does not hold."""
import jax
import numpy as np
from absl.testing import absltest

from mu_jax import ensembles, sharding
from mu_jax.analytic import ridge
from mu_jax.errors import MuJaxError
from mu_jax.methods import Context, acu
from tests import helpers
from tests.test_analytic import method, random_rows, relative_error, setting


def learned(n=40, num_ids=None):
  """A head holding rows 0..n-1 of `random_rows`, and those rows."""
  X, Y = random_rows(n=n, dim=8, classes=3)
  state = ridge.learn(ridge.init(8, 3, num_ids or n), X, Y, np.arange(n), chunk_size=7)
  return state, X, np.asarray(Y)


class RidgeLedgerTest(absltest.TestCase):

  def assertHolds(self, state, X, Y, ids):
    """The head holds exactly `ids` and equals ridge regression on those rows."""
    np.testing.assert_array_equal(ridge.learned_ids(state), ids)
    self.assertLess(relative_error(state.W, ridge.closed_form(X[ids], Y[ids])), 1e-8)

  def test_forgetting_a_row_a_second_time_is_refused(self):
    state, X, Y = learned()
    once = ridge.forget(state, X[:10], Y[:10], np.arange(10))
    with self.assertRaisesRegex(MuJaxError, r'^Cannot forget row id 5, which the head does not '
                                r'hold \(never learned, or forgotten already\); nothing was '
                                r'forgotten\.$'):
      ridge.forget(once, X[5:6], Y[5:6], [5])
    self.assertHolds(once, X, Y, np.arange(10, 40))

  def test_a_row_named_twice_in_one_request_is_refused(self):
    state, X, Y = learned()
    rows = [3, 3, 4]
    with self.assertRaisesRegex(MuJaxError, 'Cannot forget row id 3, given more than once'):
      ridge.forget(state, X[rows], Y[rows], rows)
    self.assertHolds(state, X, Y, np.arange(40))

  def test_a_row_never_learned_is_refused(self):
    state, X, Y = learned(n=30, num_ids=40)
    extra, _ = random_rows(n=1, dim=8, classes=3, seed=1)
    with self.assertRaisesRegex(MuJaxError, 'Cannot forget row id 35, which the head does not'):
      ridge.forget(state, extra, Y[:1], [35])
    with self.assertRaisesRegex(MuJaxError, 'Cannot forget row id 40,'):   # outside the ledger
      ridge.forget(state, extra, Y[:1], [40])
    self.assertHolds(state, X, Y, np.arange(30))

  def test_learning_a_row_twice_is_refused(self):
    state, X, Y = learned()
    without_6 = ridge.forget(state, X[6:7], Y[6:7], [6])
    with self.assertRaisesRegex(MuJaxError, r'^Cannot learn row ids 7 and 8, which the head '
                                r'has learned already; nothing was learned\.$'):
      ridge.learn(without_6, X[6:9], Y[6:9], [6, 7, 8])
    self.assertHolds(without_6, X, Y, np.r_[0:6, 7:40])   # row 6 not learned either
    with self.assertRaisesRegex(MuJaxError, 'Cannot learn row id 40: this head tracks ids 0 '
                                'to 39'):
      ridge.learn(state, X[:1], Y[:1], [40])

  def test_a_request_mixing_valid_and_invalid_rows_applies_nothing(self):
    state, X, Y = learned()
    once = ridge.forget(state, X[:8], Y[:8], np.arange(8))
    rows = np.arange(20)   # 0..7 forgotten already, 8..19 held
    with self.assertRaisesRegex(MuJaxError, r'Cannot forget row ids 0, 1, 2, 3, 4 and 3 more '
                                r'\(8 in all\), which'):
      ridge.forget(once, X[rows], Y[rows], rows)
    self.assertHolds(once, X, Y, np.arange(8, 40))   # rows 8..19 are still held
    self.assertHolds(ridge.forget(once, X[8:20], Y[8:20], rows[8:]), X, Y, np.arange(20, 40))

  def test_ids_must_match_the_rows(self):
    state, X, Y = learned()
    with self.assertRaisesRegex(MuJaxError, 'one row id per row of X'):
      ridge.forget(state, X[:3], Y[:3], [0, 1])
    with self.assertRaisesRegex(MuJaxError, 'Expected a vector of integer row ids'):
      ridge.forget(state, X[:2], Y[:2], [0.0, 1.0])

  def test_jitted_downdate_equals_forget(self):
    state, X, Y = learned()
    with jax.enable_x64(True):
      jitted = jax.jit(ridge.downdate, static_argnums=4)(state, X[:9], Y[:9], np.arange(9), 4)
    checked = ridge.forget(state, X[:9], Y[:9], np.arange(9), chunk_size=4)
    self.assertLess(relative_error(jitted.W, checked.W), 1e-12)
    np.testing.assert_array_equal(jitted.learned, checked.learned)


def _split():
  """Training-set ids of the blobs `setting` trains on: D_f (class 0) and D_r."""
  y = np.asarray(helpers.blobs(96)['y'])
  return np.flatnonzero(y == 0), np.flatnonzero(y != 0)


def request(forget_ids, mesh):
  """A request on the blobs training set by training-set ids: D_f, and D_r = the rest."""
  train = helpers.blobs(96)
  retain_ids = np.setdiff1d(np.arange(len(train['y'])), forget_ids)
  forget = train.take(forget_ids)
  return Context(helpers.classifier(setting()['model'], forget), forget,
                 train.take(retain_ids), mesh, 0, None, forget_ids, retain_ids)


class AcuLedgerTest(absltest.TestCase):

  def test_the_ledger_holds_training_set_ids(self):
    forget_ids, retain_ids = _split()
    m, ctx = method(), request(forget_ids, sharding.make_mesh('data:1'))
    state = m.prepare(ctx, setting()['variables'])
    np.testing.assert_array_equal(ridge.learned_ids(state['ridge']), np.arange(96))
    with jax.enable_x64(True):
      after, _ = jax.jit(m.update, static_argnums=0)(ctx.task, state, None)
    np.testing.assert_array_equal(ridge.learned_ids(after['ridge']), retain_ids)

  def test_a_context_naming_a_row_twice_is_refused(self):
    forget_ids, retain_ids = _split()
    ctx = request(forget_ids, sharding.make_mesh('data:1'))._replace(
        forget_ids=np.r_[forget_ids[:-1], retain_ids[0]])
    with self.assertRaisesRegex(MuJaxError, 'must name each training row once, by an id >= 0; '
                                f'they do not for id {retain_ids[0]}\\.$'):
      method().prepare(ctx, setting()['variables'])
    with self.assertRaisesRegex(MuJaxError, 'ids of both D_f and D_r'):
      method().prepare(ctx._replace(retain_ids=None), setting()['variables'])

  def test_sequential_requests_carry_the_ledger(self):
    """As the rigorous 'sequential' scenario runs ACU: each request resumes the
    members' states of the last, so a row forgotten before is refused."""
    forget_ids, _ = _split()
    first, second = forget_ids[::2], forget_ids[1::2]
    mesh, m, s = sharding.make_mesh('data:1'), method(), setting()
    stacked = ensembles.stack([s['variables'], s['variables']])
    out = ensembles.run_method_ensemble(m, stacked, request(first, mesh), seeds=[0, 1])
    both = np.union1d(first, second)
    out = ensembles.run_method_ensemble(m, stacked, request(both, mesh)._replace(
        forget=helpers.blobs(96).take(second), forget_ids=second), seeds=[0, 1],
                                        previous=out.states)
    self.assertEqual(out.steps, 1)
    retain = helpers.blobs(96).take(np.setdiff1d(np.arange(96), both))
    feats = s['model'].penultimate(s['variables'], retain['x'])
    expected = ridge.closed_form(acu.buffer_features(feats, acu.buffer_weights(0, 16, 64)),
                                 ridge.one_hot(retain['y'], 3))
    self.assertLess(relative_error(ensembles.member(out.variables, 0)['acu']['head'],
                                   expected), 1e-5)
    kept = np.setdiff1d(np.arange(96), both)[0]
    again = np.sort([first[3], kept])   # one row forgotten before, one still held
    repeat = request(np.union1d(both, again), mesh)._replace(
        forget=helpers.blobs(96).take(again), forget_ids=again)
    with self.assertRaisesRegex(MuJaxError, f'Cannot forget row id {first[3]}, which the head '
                                'does not hold'):
      ensembles.run_method_ensemble(m, stacked, repeat, seeds=[0, 1], previous=out.states)
    with self.assertRaisesRegex(MuJaxError, 'only by training-set row ids'):
      m.resume(request(both, mesh)._replace(forget_ids=None, retain_ids=None), out.states[0])


if __name__ == '__main__':
  absltest.main()
