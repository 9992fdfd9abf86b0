"""SSD and IAU against NumPy formulas; the gradient-restricted train step."""
import os
import tempfile
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from tests import helpers
from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.influence import fisher
from mu_jax.methods import Context, create_method, run_method
from mu_jax.methods import cache
from mu_jax.methods import ssd as ssd_lib
from mu_jax.models import Network, as_model
from mu_jax.train import TrainState, make_train_step
from tests import test_influence as lin
from tests import test_methods
from tests.test_train import assert_trees_close


def numpy_dampen(params, i_d, i_f, alpha, lam):
  """SSD's formula leaf by leaf, written independently in NumPy."""
  out, count = {}, 0
  for key, p in params.items():
    if isinstance(p, dict):
      out[key], c = numpy_dampen(p, i_d[key], i_f[key], alpha, lam)
    else:
      p, d, f = (np.asarray(a, np.float64) for a in (p, i_d[key], i_f[key]))
      sel = f > alpha * d
      beta = np.ones_like(p)
      beta[sel] = np.minimum(lam * d[sel] / f[sel], 1.0)
      out[key], c = p * beta, int(sel.sum())
    count += c
  return out, count


class BNBackbone(nn.Module):
  """Dense + BatchNorm + ReLU: the smallest backbone with batch statistics."""

  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(8)(x.reshape(x.shape[0], -1))
    return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))


def mlp_context(mesh_spec='data:1', **kw):
  return test_methods.context(mesh_spec)._replace(**kw)


def cached_entries(cache_dir):
  """The cache's entries (a checkpoint may keep a '.lock' file beside its folder)."""
  return [f for f in os.listdir(cache_dir) if not f.endswith('.lock')]


def pass_names(spy):
  """The passes a spy on fisher.importance saw: a stream's name, or 'D' for given rows."""
  return [c.args[4] if isinstance(c.args[4], str) else 'D' for c in spy.call_args_list]


def id_request(forget_ids, n=200, seed=0):
  """A linear 3-class request on n rows whose first feature is the row id / 100."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, lin.DIM)).astype(np.float32)
  x[:, 0] = np.arange(n) / 100
  y = rng.integers(0, lin.CLASSES, n).astype(np.int32)
  forget = np.zeros(n, bool)
  forget[forget_ids(y)] = True
  variables = {'params': {'head': {
      'kernel': rng.normal(size=(lin.DIM, lin.CLASSES)).astype(np.float32),
      'bias': rng.normal(size=lin.CLASSES).astype(np.float32)}}}
  ctx = Context(lin.SPEC, Examples(x=x[forget], y=y[forget]),
                Examples(x=x[~forget], y=y[~forget]), sharding.make_mesh('data:1'), 3)
  return variables, ctx, y, np.flatnonzero(forget), np.flatnonzero(~forget)


CLASS_1 = lambda y: y == 1                                   # a whole-class request
RANDOM_20 = lambda y: np.random.default_rng(5).choice(len(y), 20, replace=False)


def reference_batches(ids, size):
  return [ids[i:i + size] for i in range(0, len(ids), size)]


def expected_reference(request, y, forget, retain, batch_size):
  """The official loaders' batches of row ids, (D pass, D_f pass), written out."""
  if request is CLASS_1:   # forget_full_class_main.py: -b 64 for both; retain class by class
    size = batch_size or 64
    retain = np.concatenate([retain[y[retain] == k] for k in range(lin.CLASSES)])
    return (reference_batches(np.concatenate([retain, forget]), size),
            reference_batches(forget, size))
  size = batch_size or 128  # forget_random_main.py: D at -b (128), D_f at 128 always
  return (reference_batches(np.concatenate([retain, forget]), size),
          reference_batches(forget, 128))


class SSDTest(parameterized.TestCase):

  def test_dampen_matches_numpy_and_zero_importance_gives_no_nan(self):
    rng = np.random.default_rng(0)
    params = {'a': rng.normal(size=(5, 4)).astype(np.float32),
              'b': {'c': rng.normal(size=7).astype(np.float32)}}
    i_d = jax.tree.map(lambda p: rng.exponential(size=p.shape).astype(np.float32), params)
    i_f = jax.tree.map(lambda p: rng.exponential(size=p.shape).astype(np.float32) * 8, params)
    i_d['a'][0] = 0.0                 # I_D = 0 < I_Df: selected, beta = 0
    i_f['a'][1] = 0.0                 # I_Df = 0: never selected
    i_d['b']['c'][:3] = i_f['b']['c'][:3] = 0.0   # both zero: never selected
    eligible = ssd_lib.eligible_leaves(params, '')
    got, selected = ssd_lib.dampen(params, i_d, i_f, eligible, alpha=2.0, dampening=0.5)
    want, count = numpy_dampen(params, i_d, i_f, 2.0, 0.5)
    assert_trees_close(got, want, rtol=1e-6, atol=0)
    self.assertEqual(int(ssd_lib._count(selected)), count)
    self.assertTrue(np.all(np.asarray(got['a'][0]) == 0))
    np.testing.assert_array_equal(got['a'][1], params['a'][1])
    np.testing.assert_array_equal(got['b']['c'][:3], params['b']['c'][:3])

  @parameterized.parameters('batch', 'per_example', 'label_free')
  def test_end_to_end_matches_numpy_on_linear_model(self, estimator):
    variables, ctx = lin.linear_setup()
    out = run_method(create_method('ssd', estimator=estimator, batch_size=8,
                                   selection_weighting=1.02, dampening_constant=0.7),
                     variables, ctx)
    canonical = ctx._replace(retain=Examples(cache.canonical_union(ctx)))
    i_d = lin.numpy_importance(estimator, variables, canonical, 'retain', 8)
    i_f = lin.numpy_importance(estimator, variables, ctx, 'forget', 8)
    want, count = numpy_dampen(variables['params'], i_d, i_f, 1.02, 0.7)
    assert_trees_close(out.variables['params'], want, rtol=1e-5, atol=1e-7)
    self.assertGreater(count, 0)
    self.assertEqual(out.info, {'selected': count, 'selected_fraction': count / 15})

  def test_default_alpha_matches_importances_of_the_mlp(self):
    variables = test_methods.setting()['variables']
    ctx = mlp_context()
    out = run_method(create_method('ssd', batch_size=32), variables, ctx)
    i_d = fisher.importance('batch', ctx.task, variables, ctx, cache.canonical_union(ctx), 32)
    i_f = fisher.importance('batch', ctx.task, variables, ctx, 'forget', 32)
    want, count = numpy_dampen(variables['params'], i_d, i_f, 10.0, 1.0)
    assert_trees_close(out.variables['params'], want, rtol=1e-6, atol=1e-7)
    self.assertEqual(out.info['selected'], count)

  def test_layers_filter_leaves_other_layers_bit_identical(self):
    variables = test_methods.setting()['variables']
    out = run_method(create_method('ssd', batch_size=32, selection_weighting=1.0,
                                   layers='^head/'), variables, mlp_context())
    before, after = variables['params'], out.variables['params']
    for a, b in zip(jax.tree.leaves(before['backbone']), jax.tree.leaves(after['backbone'])):
      np.testing.assert_array_equal(a, b)
    self.assertGreater(out.info['selected'], 0)
    self.assertFalse(np.array_equal(before['head']['kernel'], after['head']['kernel']))

  def test_batch_norm_statistics_are_untouched(self):
    model = as_model('bn', Network(BNBackbone(), 3))
    data = test_methods.setting()
    variables = model.init(jax.random.PRNGKey(0), data['forget']['x'][:1])
    variables['batch_stats'] = jax.tree.map(lambda s: s + 0.3, variables['batch_stats'])
    ctx = Context(helpers.classifier(model, data['forget']), data['forget'], data['retain'],
                  sharding.make_mesh('data:1'))
    out = run_method(create_method('ssd', batch_size=32, selection_weighting=1.0),
                     variables, ctx)
    assert_trees_close(out.variables['batch_stats'], variables['batch_stats'], rtol=0, atol=0)
    self.assertGreater(out.info['selected'], 0)

  def test_importance_d_cache_hit_is_identical_and_skips_the_pass(self):
    variables = test_methods.setting()['variables']
    method = create_method('ssd', batch_size=32, selection_weighting=1.0)
    with tempfile.TemporaryDirectory() as cache_dir:
      ctx = mlp_context(cache_dir=cache_dir)
      runs = []
      for _ in range(2):
        with mock.patch.object(fisher, 'importance', wraps=fisher.importance) as spy:
          runs.append(run_method(method, variables, ctx))
        runs[-1] = (runs[-1], pass_names(spy))
      self.assertEqual(runs[0][1], ['D', 'forget'])
      self.assertEqual(runs[1][1], ['forget'])
      assert_trees_close(runs[0][0].variables, runs[1][0].variables, rtol=0, atol=0)
      self.assertEqual([f for f in os.listdir(cache_dir) if 'tmp' in f], [])
      self.assertLen(cached_entries(cache_dir), 1)

  def test_bad_hyper_parameters_are_refused(self):
    with self.assertRaisesRegex(MuJaxError, 'valid: batch, per_example, label_free'):
      create_method('ssd', estimator='fisher')
    with self.assertRaisesRegex(MuJaxError, 'not a valid regular expression'):
      create_method('ssd', layers='head[')
    with self.assertRaisesRegex(MuJaxError, 'selection_weighting >= 0'):
      create_method('ssd', selection_weighting=-1.0)
    with self.assertRaisesRegex(MuJaxError, "order 'official'; valid: canonical, reference"):
      create_method('ssd', order='official')

  def test_stale_cache_is_recomputed(self):
    variables = test_methods.setting()['variables']
    method = create_method('ssd', batch_size=32, selection_weighting=1.0)
    with tempfile.TemporaryDirectory() as cache_dir:
      ctx = mlp_context(cache_dir=cache_dir)
      fresh = run_method(method, variables, ctx)
      (name,) = cached_entries(cache_dir)
      cache.save(os.path.join(cache_dir, name), {'other': np.zeros(3)})   # a stale entry
      with mock.patch.object(fisher, 'importance', wraps=fisher.importance) as spy:
        again = run_method(method, variables, ctx)
      self.assertEqual(pass_names(spy), ['D', 'forget'])
      assert_trees_close(fresh.variables, again.variables, rtol=0, atol=0)

  def test_eight_devices_match_one(self):
    variables = test_methods.setting()['variables']
    method = create_method('ssd', batch_size=32, selection_weighting=1.0)
    one = run_method(method, variables, mlp_context('data:1'))
    eight = run_method(method, variables, mlp_context('data:8'))
    assert_trees_close(one.variables, eight.variables, rtol=1e-5, atol=1e-6)
    self.assertEqual(one.info, eight.info)

  def test_jit_matches_eager(self):
    variables = test_methods.setting()['variables']
    method = create_method('ssd', batch_size=32, selection_weighting=1.0)
    ctx = mlp_context()
    jitted = run_method(method, variables, ctx)
    state = method.prepare(ctx, variables)
    with jax.disable_jit():
      state, _ = method.update(ctx.task, state, None)
    assert_trees_close(method.result(state), jitted.variables, rtol=1e-6, atol=1e-7)
    self.assertEqual(method.report(state), jitted.info)

  @parameterized.parameters((CLASS_1, None), (RANDOM_20, None), (RANDOM_20, 32))
  def test_reference_order_batches_as_the_official_loaders(self, request, batch_size):
    variables, ctx, y, forget, retain = id_request(request)
    seen = []

    def record(totals, count, params, model_state, batch, **kw):
      w = np.asarray(batch['w'])
      seen.append((len(w), np.rint(np.asarray(batch['x'])[w > 0, 0] * 100).astype(int)))
      return accumulate(totals, count, params, model_state, batch, **kw)

    accumulate = fisher._accumulate
    with mock.patch.object(fisher, '_accumulate', side_effect=record):
      create_method('ssd', order='reference', batch_size=batch_size).prepare(ctx, variables)
    want_d, want_f = expected_reference(request, y, forget, retain, batch_size)
    d_size = batch_size or (64 if request is CLASS_1 else 128)
    f_size = 64 if request is CLASS_1 else 128
    want = [(d_size, b) for b in want_d] + [(f_size, b) for b in want_f]
    self.assertEqual([(n, list(ids)) for n, ids in seen], [(n, list(ids)) for n, ids in want])

  @parameterized.parameters((CLASS_1, None), (RANDOM_20, 32))
  def test_reference_importance_is_the_mean_of_squared_batch_mean_gradients(
      self, request, batch_size):
    variables, ctx, y, forget, retain = id_request(request)
    x = np.concatenate([ctx.forget['x'], ctx.retain['x']])
    labels = np.concatenate([ctx.forget['y'], ctx.retain['y']])
    by_id = {int(round(r[0] * 100)): i for i, r in enumerate(x)}

    def by_hand(batches):   # (1/B) Σ_b (∇ mean_{i∈b} ℓ_i)², float64, ragged last batch too
      grads = [lin.numpy_gradients('batch', variables, x[rows], labels[rows], np.ones(len(rows)))
               for rows in ([by_id[i] for i in b] for b in batches)]
      return {'head': {'kernel': np.mean([g[0]**2 for g in grads], 0),
                       'bias': np.mean([g[1]**2 for g in grads], 0)}}

    state = create_method('ssd', order='reference', batch_size=batch_size).prepare(ctx, variables)
    want_d, want_f = expected_reference(request, y, forget, retain, batch_size)
    self.assertTrue(len(want_d[-1]) < len(want_d[0]))   # the partial last batch is covered
    assert_trees_close(state.importance_d, by_hand(want_d), rtol=1e-5, atol=1e-8)
    assert_trees_close(state.importance_f, by_hand(want_f), rtol=1e-5, atol=1e-8)

  def test_select_alpha_with_reference_order_fits_on_the_reference_batches(self):
    variables, ctx, y, forget, retain = id_request(RANDOM_20)
    seen = []

    def record(totals, count, params, model_state, batch, **kw):
      w = np.asarray(batch['w'])
      seen.append((len(w), list(np.rint(np.asarray(batch['x'])[w > 0, 0] * 100).astype(int))))
      return accumulate(totals, count, params, model_state, batch, **kw)

    accumulate = fisher._accumulate
    with mock.patch.object(fisher, '_accumulate', side_effect=record):
      ssd_lib.select_alpha(variables, ctx, target_forget_acc=100.0, alphas=(1.0,),
                           retain_tolerance=100.0, order='reference', batch_size=32)
    held_out = np.random.default_rng(ctx.seed).permutation(20)[:4]   # a fifth of D_f
    fit = forget[np.setdiff1d(np.arange(20), held_out)]              # in D_f's order
    want_d, _ = expected_reference(RANDOM_20, y, forget, retain, 32)
    self.assertEqual(seen, [(32, list(b)) for b in want_d] + [(128, list(fit))])

  def test_select_alpha_returns_the_largest_alpha_that_forgets_held_out_rows(self):
    variables = test_methods.setting()['variables']
    ctx = mlp_context()
    choice = ssd_lib.select_alpha(variables, ctx, target_forget_acc=50.0,
                                  alphas=(5.0, 20.0, 1.0, 10.0), retain_tolerance=5.0,
                                  batch_size=32)
    # As in the measured SSD behaviour: a large alpha selects too few weights to
    # forget; the search stops at the first (largest) alpha that passes.
    tried = [t['alpha'] for t in choice.trials]
    self.assertEqual(tried, [20.0, 10.0, 5.0, 1.0][:len(tried)])
    self.assertGreater(len(tried), 1)
    self.assertEqual(choice.alpha, tried[-1])
    self.assertTrue(all(t['forget_acc'] > 50.0 for t in choice.trials[:-1]))
    self.assertLessEqual(choice.trials[-1]['forget_acc'], 50.0)
    self.assertGreaterEqual(choice.trials[-1]['retain_acc'], 95.0)
    self.assertEqual([t['selected'] for t in choice.trials],
                     sorted(t['selected'] for t in choice.trials))

  def test_select_alpha_finds_none_when_retain_accuracy_would_drop(self):
    variables = test_methods.setting()['variables']
    choice = ssd_lib.select_alpha(variables, mlp_context(), target_forget_acc=50.0,
                                  alphas=(5.0, 1.0), retain_tolerance=-1.0, batch_size=32)
    self.assertIsNone(choice.alpha)
    self.assertEqual([t['alpha'] for t in choice.trials], [5.0, 1.0])


class GroupedSelectionTest(absltest.TestCase):

  def test_group_split_holds_out_whole_groups_in_a_seeded_order(self):
    groups = np.array([5, 5, 1, 1, 1, 2, 2, 3])
    order, held = ssd_lib._group_split(groups, 3, seed=0)
    names = np.random.default_rng(0).permutation([1, 2, 3, 5])
    sizes = np.cumsum([np.sum(groups == g) for g in names])
    taken = names[:int(np.searchsorted(sizes, 3)) + 1]   # until ≥ 3 rows
    self.assertEqual(held, int(np.isin(groups, taken).sum()))
    self.assertEqual(set(groups[order[:held]]), set(taken))
    self.assertFalse(set(groups[order[:held]]) & set(groups[order[held:]]))
    np.testing.assert_array_equal(np.sort(order), np.arange(8))
    # Never every group: at least one is left to fit.
    order, held = ssd_lib._group_split(np.array([0, 0, 1]), 3, seed=0)
    self.assertLess(held, 3)
    with self.assertRaisesRegex(MuJaxError, 'at least 2 groups'):
      ssd_lib._group_split(np.zeros(4, int), 1, seed=0)

  def test_select_alpha_serves_a_language_model_by_its_token_accuracy(self):
    from mu_jax.models import create_model
    from mu_jax.tasks import create_task
    task = create_task('language_model', create_model('transformer', 16, size='tiny',
                                                      max_len=8, num_layers=1), (8,), 16)
    rng = np.random.default_rng(0)
    m = np.zeros((24, 8), np.float32)
    m[:, 3:] = 1
    rows = Examples(x=rng.integers(1, 16, (24, 8)).astype(np.int32), m=m)
    ctx = Context(task, rows.take(np.arange(8)), rows.take(np.arange(8, 24)),
                  sharding.make_mesh('data:1'), seed=0)
    split = ssd_lib._group_split
    with mock.patch.object(ssd_lib, '_group_split', side_effect=split) as grouped:
      choice = ssd_lib.select_alpha(task.init(jax.random.PRNGKey(0)), ctx,
                                    target_forget_acc=100.0, alphas=(10.0,),
                                    retain_tolerance=100.0, batch_size=4,
                                    groups=np.repeat([0, 1, 2, 3], 2))
    # A fifth of the 8 rows, not rounded to whole batches of 4 as a row split would be.
    self.assertEqual(grouped.call_args.args[1], 2)
    self.assertEqual(choice.alpha, 10.0)
    self.assertBetween(choice.trials[0]['retain_acc'], 0.0, 100.0)


def numpy_mean_gradient(variables, split):
  gk, gb = lin.numpy_gradients('batch', variables, split['x'], split['y'],
                               np.ones(len(split['y'])))
  return {'head': {'kernel': gk, 'bias': gb}}


class IAUTest(absltest.TestCase):

  def test_update_is_one_fresh_adam_step(self):
    variables, ctx = lin.linear_setup()
    out = run_method(create_method('iau', learning_rate=0.01, batch_size=8), variables, ctx)
    g = jax.tree.map(np.subtract, numpy_mean_gradient(variables, ctx.retain),
                     numpy_mean_gradient(variables, ctx.forget))
    want = jax.tree.map(lambda p, g_: p - 0.01 * g_ / (np.abs(g_) + 1e-8),
                        variables['params'], g)
    assert_trees_close(out.variables['params'], want, rtol=1e-6, atol=1e-7)

  def test_eight_devices_match_one_and_jit_matches_eager(self):
    variables = test_methods.setting()['variables']
    method = create_method('iau', batch_size=32)
    one = run_method(method, variables, mlp_context('data:1'))
    eight = run_method(method, variables, mlp_context('data:8'))
    assert_trees_close(one.variables, eight.variables, rtol=1e-5, atol=1e-6)
    ctx = mlp_context()
    state = method.prepare(ctx, variables)
    with jax.disable_jit():
      state, _ = method.update(ctx.task, state, None)
    assert_trees_close(method.result(state), one.variables, rtol=1e-5, atol=1e-6)


class RestrictedStepTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.variables, ctx = lin.linear_setup()
    self.batch = next(ctx.batches('union', 16, shuffle=False))
    self.batch = jax.tree.map(np.array, self.batch)
    self.batch['w'][-3:] = 0.0   # padding rows must not count

  def numpy_restricted_loss(self, params, alpha):
    """ℓ + α Σ_tensors ‖∇ℓ‖₂ from NumPy closed-form gradients, in float64."""
    x, y, w = self.batch['x'].reshape(16, -1), self.batch['y'], self.batch['w']
    variables = {'params': params}
    z = x @ params['head']['kernel'] + params['head']['bias']
    z = z - z.max(1, keepdims=True)
    loss = np.sum(w * (np.log(np.exp(z).sum(1)) - z[np.arange(16), y])) / w.sum()
    gk, gb = lin.numpy_gradients('batch', variables, x, y, w)
    return loss + alpha * (np.linalg.norm(gk) + np.linalg.norm(gb))

  def test_gradient_matches_finite_differences_of_the_restricted_loss(self):
    alpha = 0.3
    tx = optax.sgd(1.0)
    params = self.variables['params']
    state = TrainState(jnp.zeros((), jnp.int32), params, {}, tx.init(params))
    step = jax.jit(make_train_step(lin.SPEC, tx, gradient_restriction=alpha))
    new_state, stats = step(state, self.batch)
    got = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), params, new_state.params)
    p64 = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
    want, eps = jax.tree.map(np.zeros_like, p64), 1e-6
    for name in ('kernel', 'bias'):
      for idx in np.ndindex(p64['head'][name].shape):
        hi, lo = jax.tree.map(np.copy, p64), jax.tree.map(np.copy, p64)
        hi['head'][name][idx] += eps
        lo['head'][name][idx] -= eps
        want['head'][name][idx] = (self.numpy_restricted_loss(hi, alpha)
                                   - self.numpy_restricted_loss(lo, alpha)) / (2 * eps)
    assert_trees_close(got, want, rtol=1e-4, atol=1e-5)
    loss = self.numpy_restricted_loss(p64, 0.0)
    np.testing.assert_allclose(stats['loss_sum'] / stats['count'], loss, rtol=1e-5)

  def test_vanishing_alpha_tends_to_the_plain_train_step(self):
    tx = optax.sgd(0.1, momentum=0.9)
    params = self.variables['params']
    state = TrainState(jnp.zeros((), jnp.int32), params, {}, tx.init(params))
    plain, _ = jax.jit(make_train_step(lin.SPEC, tx))(state, self.batch)
    tiny, _ = jax.jit(make_train_step(lin.SPEC, tx, gradient_restriction=1e-9))(
        state, self.batch)
    strong, _ = jax.jit(make_train_step(lin.SPEC, tx, gradient_restriction=0.5))(
        state, self.batch)
    assert_trees_close(plain, tiny, rtol=1e-6, atol=1e-7)
    self.assertFalse(np.allclose(strong.params['head']['kernel'], plain.params['head']['kernel']))


if __name__ == '__main__':
  absltest.main()
