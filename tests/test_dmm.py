"""TRAK and datamodel attributions, and Datamodel Matching (dmm, dm_direct, oracle_matching)."""
import os
import tempfile
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from tests import helpers
from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.influence import datamodels, trak
from mu_jax.methods import create_method, run_method
from mu_jax.methods.base import Context, epoch_stream
from tests.test_methods import context, setting
from tests.test_train import assert_trees_close


def _linear_apply(variables, x, train):
  del train
  return (x.reshape(x.shape[0], -1) @ variables['params']['w'])[:, None], {}


def _identity(z, y):
  del y
  return z


def _residual(z, y):
  return y - z[0]   # −∂(½(f − y)²)/∂f: squared loss's out-to-loss


def _least_squares(seed=0, n=30, d=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (x @ rng.normal(size=d) + rng.normal(0, 0.5, n)).astype(np.float32)
  theta = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
  return x, y, theta, rng.normal(size=(5, d)).astype(np.float32)


class TrakTest(parameterized.TestCase):

  @parameterized.parameters(0, 64)
  def test_least_squares_matches_exact_leave_one_out(self, proj_dim):
    x, y, theta, xt = _least_squares()
    stacked = {'params': {'w': jnp.asarray(theta, jnp.float32)[None]}}
    proj = trak.Projection(dim=proj_dim, block=3)
    state = trak.fit(helpers.classifier(_linear_apply, {'x': x}), stacked, Examples(x=x, y=y), proj=proj, output_fn=_identity, q_fn=_residual, chunk_size=8)
    target_phi, _ = trak.features(helpers.classifier(_linear_apply, {'x': xt}), stacked, Examples(x=xt, y=np.zeros(5, np.float32)), output_fn=_identity, q_fn=_residual, proj=proj)
    tau = np.asarray(trak.scores(state, target_phi))[:, 0]          # [T, n]
    x64 = x.astype(np.float64)
    leverage = np.einsum('nd,de,ne->n', x64, np.linalg.inv(x64.T @ x64), x64)
    loo = np.stack([xt @ theta - xt @ np.linalg.lstsq(np.delete(x64, j, 0), np.delete(y, j),
                                                      rcond=None)[0] for j in range(len(y))], 1)
    # TRAK is the one-Newton-step influence; the exact LOO change divides by 1 − h_jj.
    np.testing.assert_allclose(tau / (1 - leverage), loo, atol=2e-5)
    self.assertGreater(np.abs(loo).max(), 0.05)

  def test_removal_tangents_equal_summed_scores(self):
    x, y, theta, xt = _least_squares(1)
    stacked = {'params': {'w': jnp.asarray(np.stack([theta, 0.5 * theta]), jnp.float32)}}
    proj = trak.Projection(dim=16, block=3)
    kw = dict(output_fn=_identity, q_fn=_residual, proj=proj)
    state = trak.fit(helpers.classifier(_linear_apply, {'x': x}), stacked, Examples(x=x, y=y), **kw)
    rows = np.array([0, 3, 7])
    target_phi, _ = trak.features(helpers.classifier(_linear_apply, {'x': xt}), stacked, Examples(x=xt, y=np.zeros(5, np.float32)), **kw)
    expected = np.asarray(trak.scores(state, target_phi))[:, 0][:, rows].sum(1)
    tangents = trak.removal_tangents(state, rows, stacked, proj)
    got = trak.directional_outputs(helpers.classifier(_linear_apply, {'x': xt}), stacked, tangents,
                                   {'x': jnp.asarray(xt)})
    np.testing.assert_allclose(np.asarray(got)[:, 0], expected, rtol=1e-4, atol=1e-5)

  @parameterized.parameters('rademacher', 'normal')
  def test_projection_preserves_inner_products(self, kind):
    g = np.random.default_rng(0).normal(size=(6, 3000)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = np.asarray(trak.project(jnp.asarray(g), trak.Projection(dim=4096, kind=kind)))
    np.testing.assert_allclose(p @ p.T, g @ g.T, atol=0.08)

  @parameterized.parameters('rademacher', 'normal')
  def test_materialised_projection_equals_regenerated(self, kind):
    proj = trak.Projection(dim=24, kind=kind, seed=3, block=7)
    g = jnp.asarray(np.random.default_rng(1).normal(size=(5, 30)), jnp.float32)
    matrix = trak.projection_matrix(proj, 30)
    self.assertEqual(matrix.shape, (30, 24))
    np.testing.assert_allclose(trak.project(g, proj, matrix), trak.project(g, proj),
                               rtol=1e-5, atol=1e-5)
    v = jnp.asarray(np.random.default_rng(2).normal(size=(2, 24)), jnp.float32)
    np.testing.assert_allclose(trak.lift(v, proj, 30), v @ matrix.T / np.sqrt(24),
                               rtol=1e-5, atol=1e-5)

  def test_features_without_room_for_the_matrix_are_unchanged(self):
    s = setting()
    stacked = jax.tree.map(lambda leaf: leaf[None], s['variables'])
    x, y = s['forget']['x'][:12], s['forget']['y'][:12]
    run = lambda: trak.features(helpers.classifier(s['model'], {'x': x}), stacked, Examples(x=x, y=y), proj=trak.Projection(dim=16, block=100), chunk_size=8)
    materialised = run()
    with mock.patch.object(trak, 'MATRIX_BUDGET_BYTES', 0):
      regenerated = run()
    assert_trees_close(materialised, regenerated, rtol=1e-4, atol=1e-6)

  def test_margin_is_log_odds(self):
    logits = jnp.asarray([1.0, 2.0, -0.5])
    p = jax.nn.softmax(logits)[1]
    np.testing.assert_allclose(trak.margin_output(logits, 1)[0], np.log(p / (1 - p)), rtol=1e-5)
    np.testing.assert_allclose(trak.out_to_loss(logits, 1), 1 - p, rtol=1e-5)

  def test_eight_devices_match_one(self):
    s = setting()
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf * 0.9]), s['variables'])
    x, y = s['forget']['x'][:40], s['forget']['y'][:40]
    out = [trak.features(helpers.classifier(s['model'], {'x': x}), stacked, Examples(x=x, y=y), proj=trak.Projection(dim=32), chunk_size=16, mesh=sharding.make_mesh(spec))
           for spec in ('data:1', 'data:8')]
    assert_trees_close(out[0], out[1], rtol=1e-4, atol=1e-5)
    self.assertEqual(out[0][0].shape, (2, 40, 1, 32))


class DatamodelsTest(absltest.TestCase):

  def test_regression_recovers_linear_datamodels(self):
    rng = np.random.default_rng(0)
    masks = rng.random((400, 12)) < 0.5
    beta = rng.normal(size=(2, 1, 12))
    outputs = masks @ beta.reshape(2, 12).T + 0.3 + rng.normal(0, 0.01, (400, 2))
    for regression, reg in (('ridge', 1e-3), ('lasso', 1e-5)):
      fitted = datamodels.fit(masks, outputs[:, :, None], regression=regression, reg=reg)
      np.testing.assert_allclose(fitted.beta, beta, atol=0.02)
      np.testing.assert_allclose(fitted.bias, 0.3, atol=0.02)

  def test_estimate_trains_an_ensemble(self):
    s = setting()
    cfg = trak_recipe()
    dm = datamodels.estimate(helpers.classifier(s['model'], s['retain']), cfg, s['retain'], s['forget'], num_models=4,
                             regression='ridge', reg=1.0, mesh=sharding.make_mesh('data:1'))
    self.assertEqual(dm.beta.shape, (len(s['forget']['y']), 1, len(s['retain']['y'])))
    self.assertTrue(np.all(np.isfinite(dm.beta)))


def trak_recipe():
  from tests.test_train import recipe
  return recipe(optimizer='adam', learning_rate=0.01, schedule='constant', epochs=2)


SMALL = dict(num_models=2, proj_dim=64, ensemble_epochs=2, ensemble_batch_size=32,
             ensemble_learning_rate=0.01)
SMALL_TRAK = dict(SMALL, estimator='trak')


class DmmTest(parameterized.TestCase):

  def _targets(self, ctx, multiplier=1.0):
    from mu_jax.methods import dmm
    variables = setting()['variables']
    rows = dmm.finetune_rows(ctx, 3.0)
    x = rows['x']
    attribution = dmm.forget_attribution(
        ctx, num_models=2, subset_fraction=0.5, proj_dim=64, lam=0.0,
        chunk_size=64, recipe=dmm._recipe('adam', 0.01, 32, 2))
    return x, dmm.predicted_oracle_logits(ctx.task, variables, attribution,
                                          {'x': jnp.asarray(x)}, multiplier)

  def test_dmm_moves_logits_toward_targets(self):
    ctx = context()
    # An amplified attribution, so the targets lie well away from the model.
    x, targets = self._targets(ctx, multiplier=30.0)
    method = create_method('dmm', learning_rate=5e-3, epochs=5, batch_size=64,
                           multiplier=30.0, **SMALL_TRAK)
    out = run_method(method, setting()['variables'], ctx)
    apply_fn = setting()['model'].apply
    before = np.mean((np.asarray(apply_fn(setting()['variables'], x, False)[0]) - targets) ** 2)
    after = np.mean((np.asarray(apply_fn(out.variables, x, False)[0]) - targets) ** 2)
    self.assertLess(after, 0.5 * before)
    self.assertLess(out.info['match_loss_last_epoch'], out.info['match_loss_first_epoch'])

  def test_dm_direct_predicts_the_targets(self):
    ctx = context()
    x, targets = self._targets(ctx)
    out = run_method(create_method('dm_direct', **SMALL), setting()['variables'], ctx)
    logits, _ = jax.jit(out.task.apply, static_argnums=2)(out.variables, {'x': jnp.asarray(x)},
                                                         False)
    np.testing.assert_allclose(logits, targets, rtol=1e-4, atol=1e-4)
    self.assertGreater(np.abs(np.asarray(targets) - np.asarray(
        setting()['model'].apply(setting()['variables'], x, False)[0])).max(), 1e-3)

  def test_datamodel_estimator_recovers_a_linear_datamodel(self):
    from mu_jax.methods import dmm
    # A bias-only model after one full-batch SGD step from zero (Flax default):
    # b_c = η·(|S ∩ class c|/|S| − 1/C), exactly linear in the mask with
    # β_j,c = η·[y_j = c]/|S|, identified up to a shift along the all-ones
    # direction (|S| is fixed), so ridge returns β_j,c − mean_j β_j,c.
    def apply(variables, x, train):
      del train
      return jnp.broadcast_to(variables['params']['b'], (x.shape[0], 3)), {}

    y = np.repeat(np.arange(3), 4).astype(np.int32)
    x = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
    init = lambda rng, sample: {'params': {'b': jnp.zeros(3)}}   # Flax's zero bias
    ctx = Context(helpers.classifier(apply, {'x': x}, 3, init), Examples(x=x[y == 0], y=y[y == 0]),
                  Examples(x=x[y > 0], y=y[y > 0]), sharding.make_mesh('data:1'))
    lr, subset = 0.1, 6
    removed = dmm.datamodel_removal(ctx, Examples(x=x, y=y), num_models=64,
                                    subset_fraction=0.5, regression='ridge', reg=1e-6,
                                    recipe=dmm._recipe('sgd', lr, 12, 1))
    beta = lr * (y[:, None] == np.arange(3)) / subset   # [n, C], D_f = the class-0 rows
    expected = (beta - beta.mean(0))[y == 0].sum(0)     # logit 0 falls, the others rise
    np.testing.assert_allclose(removed, np.broadcast_to(expected, (12, 3)), atol=1e-4)
    # dmm fine-tunes toward b − Σ_{j∈D_f} β_j.
    b = jnp.asarray([0.2, -0.1, -0.1])
    method = create_method('dmm', learning_rate=5e-3, epochs=40, batch_size=16, num_models=64,
                           datamodel_reg=1e-6, ensemble_optimizer='sgd',
                           ensemble_learning_rate=lr, ensemble_batch_size=12, ensemble_epochs=1)
    out = run_method(method, {'params': {'b': b}}, ctx)
    np.testing.assert_allclose(out.variables['params']['b'], b - expected, atol=5e-3)

  def test_trak_attribution_is_cached_per_data_set(self):
    from mu_jax.methods import dmm
    s = setting()
    kw = dict(num_models=2, subset_fraction=0.5, proj_dim=16, lam=0.0, chunk_size=64,
              recipe=dmm._recipe('adam', 0.01, 32, 1))
    other = Context(helpers.classifier(s['model'], s['forget']), Examples(x=s['retain']['x'][:5], y=s['retain']['y'][:5]),
                    Examples(x=np.concatenate([s['forget']['x'], s['retain']['x'][5:]]), y=np.concatenate([s['forget']['y'], s['retain']['y'][5:]])),
                    sharding.make_mesh('data:1'))
    with tempfile.TemporaryDirectory() as d:
      cold = dmm.forget_attribution(context()._replace(cache_dir=d), **kw)
      (name,) = os.listdir(d)
      warm = dmm.forget_attribution(context()._replace(cache_dir=d), **kw)
      # Another request on the same D loads the same ensemble.
      moved = dmm.forget_attribution(other._replace(cache_dir=d), **kw)
      self.assertEqual(os.listdir(d), [name])
    assert_trees_close(cold, warm, rtol=0, atol=0)
    assert_trees_close(cold.members, moved.members, rtol=0, atol=0)
    uncached = dmm.forget_attribution(other, **kw)
    assert_trees_close(moved.tangents, uncached.tangents, rtol=1e-5, atol=1e-7)

  def test_unknown_estimator_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, "valid: datamodel, trak"):
      create_method('dmm', estimator='influence')

  def test_oracle_matching_runs(self):
    method = create_method('oracle_matching', epochs=2, batch_size=64, num_models=2,
                           ensemble_epochs=2, ensemble_batch_size=32)
    out = run_method(method, setting()['variables'], context())
    self.assertLess(out.info['match_loss_last_epoch'], out.info['match_loss_first_epoch'])

  def test_eight_devices_match_one_and_jit_matches_eager(self):
    # A small ridge: with lam=0 the kernel ΦᵀΦ (condition ~1e6 here) turns the
    # members' float32 summation-order noise into ~1e-2 changes of the targets.
    method = create_method('dmm', learning_rate=5e-3, epochs=1, batch_size=64, lam=1e-2,
                           **SMALL_TRAK)
    one = run_method(method, setting()['variables'], context('data:1'))
    eight = run_method(method, setting()['variables'], context('data:8'))
    # Sharded reductions sum in another order: ~1e-5 on logits-scale weights.
    assert_trees_close(one.variables, eight.variables, rtol=1e-4, atol=5e-5)
    ctx = context()
    state = method.prepare(ctx, setting()['variables'])
    with jax.disable_jit():
      for batch in epoch_stream(method, ctx, 0):
        state, _ = method.update(ctx.task, state, batch)
    assert_trees_close(method.result(state), one.variables, rtol=1e-4, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
