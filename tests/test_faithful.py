"""Gradient methods against their official code: NPO's optimizer, Boundary
Expanding's shadow init, RL/SalUn's epoch order, Unlearn-Smooth's SAM scope."""
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_order
from mu_jax.errors import MuJaxError
from mu_jax.methods import Context, create_method, run_method
from mu_jax.methods import boundary, salun
from mu_jax.methods.baselines import draw_labels
from mu_jax.methods.gradient import LossTerms, step_gradient
from mu_jax.models import create_model
from mu_jax.optim import decayed_weights, linear_warmup_decay, make_optimizer
from tests import helpers
from tests import test_methods as tm


def tree_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class NpoOptimizerTest(absltest.TestCase):

  def test_linear_schedule_is_the_hugging_face_closed_form(self):
    # warm-up 4, total 12: s/4 while s < 4, then (12 − s)/8.
    for step, want in [(0, 0.0), (2, 0.5), (4, 1.0), (8, 0.5), (11, 0.125)]:
      self.assertAlmostEqual(float(linear_warmup_decay(step, 4, 12)), want, places=7, msg=step)
    self.assertAlmostEqual(float(linear_warmup_decay(0, 0, 12)), 1.0, places=7)   # no warm-up

  def test_npo_warms_up_over_one_epoch_from_a_zero_first_step(self):
    ctx = tm.context()   # 64 forget rows: 4 batches of 16
    variables = tm.setting()['variables']
    method = create_method('npo', learning_rate=0.01, epochs=3, batch_size=16)
    state = method.prepare(ctx, variables)
    np.testing.assert_array_equal(state.horizon, [4, 12])
    batch = next(ctx.batches('forget', 16))
    first, _ = method.update(ctx.task, state, batch)
    self.assertTrue(tree_equal(first.params, state.params))   # factor 0 at step 0
    second, _ = method.update(ctx.task, first, batch)
    self.assertFalse(tree_equal(second.params, first.params))
    constant = create_method('npo', learning_rate=0.01, epochs=3, batch_size=16,
                             schedule='constant')
    state = constant.prepare(ctx, variables)
    self.assertIsNone(state.horizon)
    self.assertFalse(tree_equal(constant.update(ctx.task, state, batch)[0].params, state.params))

  def test_weight_decay_skips_biases_and_norm_scales(self):
    params = {'Dense_0': {'kernel': jnp.full((2, 3), 2.0), 'bias': jnp.full((3,), 2.0)},
              'BatchNorm_0': {'scale': jnp.full((3,), 2.0), 'bias': jnp.full((3,), 2.0)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    for name in ('adamw', 'sgd'):
      tx = make_optimizer(name, 0.1, total_steps=1, momentum=0.0, weight_decay=0.5,
                          decay_mask=decayed_weights)
      updates, _ = tx.update(zero, tx.init(params), params)
      np.testing.assert_allclose(updates['Dense_0']['kernel'], -0.1 * 0.5 * 2.0, rtol=1e-6)
      for leaf in (updates['Dense_0']['bias'], updates['BatchNorm_0']['scale'],
                   updates['BatchNorm_0']['bias']):
        np.testing.assert_array_equal(leaf, 0.0)

  def test_npo_decays_kernels_only(self):
    # With both loss weights 0 the gradient is 0, so AdamW's decoupled decay alone
    # acts: each step multiplies a kernel by 1 − lr·wd and leaves biases alone.
    variables = tm.setting()['variables']
    out = run_method(create_method('npo', learning_rate=0.1, weight_decay=0.5, epochs=1,
                                   batch_size=32, npo_weight=0.0, retain_weight=0.0,
                                   schedule='constant'), variables, tm.context())
    steps = out.steps
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables['params']):
      got = jax.tree_util.tree_leaves_with_path(out.variables['params'])
      got = dict((jax.tree_util.keystr(p), v) for p, v in got)[jax.tree_util.keystr(path)]
      if path[-1].key == 'bias':
        np.testing.assert_array_equal(got, leaf)
      else:
        np.testing.assert_allclose(got, leaf * (1 - 0.05) ** steps, rtol=1e-5, atol=1e-7)

  def test_bad_schedule_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, "schedule='cosine'; valid: constant, linear"):
      create_method('npo', schedule='cosine')


class BoundaryExpandInitTest(absltest.TestCase):

  def test_shadow_column_is_an_untruncated_xavier_normal_draw_with_zero_bias(self):
    features, classes = 20000, 9
    variables = {'params': {'head': {'kernel': jnp.zeros((features, classes)),
                                     'bias': jnp.zeros((classes,))}}}
    shadow = boundary.widen(variables, jax.random.PRNGKey(3))['params'][boundary.SHADOW]
    np.testing.assert_array_equal(shadow['bias'], [0.0])
    kernel = np.asarray(shadow['kernel'])
    self.assertEqual(kernel.shape, (features, 1))
    std = np.sqrt(2.0 / (features + classes + 1))   # xavier_normal_ of Linear(F, C+1)
    self.assertAlmostEqual(kernel.std() / std, 1.0, delta=0.03)   # 1/sqrt(2n) ≈ 0.005
    self.assertGreater(np.abs(kernel).max() / std, 3.0)   # a truncated draw stays below 2.3


class RandomLabelOrderTest(parameterized.TestCase):

  def context(self):
    """3 forget and 5 retain rows whose input is their row id (forget ids 0-2)."""
    ids = np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)
    model = create_model('mlp', 3, hidden=(4,))
    task = helpers.classifier(model, Examples(x=ids, y=y))
    return Context(task, Examples(x=ids[:3], y=y[:3]), Examples(x=ids[3:], y=y[3:]),
                   sharding.make_mesh('data:1'), seed=5)

  def seen(self, method, ctx, epoch):
    """Per batch: the row ids with weight 1 and their forget flags."""
    out = []
    for batch in method.batches(ctx, epoch):
      w = np.asarray(batch['w']) > 0
      out.append((np.asarray(batch['x']).ravel()[w].astype(int).tolist(),
                  np.asarray(batch['f'])[w].tolist()))
    return out

  @parameterized.parameters('rl', 'salun')
  def test_sequential_is_a_forget_pass_then_a_retain_pass(self, name):
    ctx = self.context()
    method = create_method(name, batch_size=2)
    for epoch in (0, 1):
      forget = (np.arange(3)[epoch_order(3, seed=5, epoch=epoch, shuffle=True)]).tolist()
      retain = (3 + np.arange(5)[epoch_order(5, seed=5, epoch=epoch, shuffle=True)]).tolist()
      want = [(forget[:2], [1.0, 1.0]), (forget[2:], [1.0]),
              (retain[:2], [0.0, 0.0]), (retain[2:4], [0.0, 0.0]), (retain[4:], [0.0])]
      self.assertEqual(self.seen(method, ctx, epoch), want)

  @parameterized.parameters('rl', 'salun')
  def test_mixed_is_one_shuffled_pass_over_the_union(self, name):
    ctx = self.context()
    rows = np.arange(8)[epoch_order(8, seed=5, epoch=0, shuffle=True)].tolist()
    want = [(rows[i:i + 2], [float(r < 3) for r in rows[i:i + 2]]) for i in range(0, 8, 2)]
    self.assertEqual(self.seen(create_method(name, batch_size=2, order='mixed'), ctx, 0), want)

  def test_bad_order_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, "order='forget'; valid: sequential, mixed"):
      create_method('rl', order='forget')


class RandomLabelDrawTest(absltest.TestCase):

  def test_other_never_draws_the_truth_and_any_is_the_uniform_draw(self):
    labels = jnp.asarray(np.arange(600) % 3, jnp.int32)
    key = jax.random.PRNGKey(3)
    other = np.asarray(draw_labels('other', key, labels, 3))
    drawn = np.asarray(draw_labels('any', key, labels, 3))
    self.assertFalse(np.any(other == np.asarray(labels)))
    np.testing.assert_array_equal(drawn, jax.random.randint(key, (600,), 0, 3, jnp.int32))
    self.assertBetween(np.mean(drawn == np.asarray(labels)), 0.25, 0.42)   # 1/3 of rows keep y

  def test_bad_draw_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, "labels='wrong'; valid: other, any"):
      create_method('salun', labels='wrong')


class SaliencyTotalTest(absltest.TestCase):

  def test_batch_means_sums_each_batch_mean_gradient(self):
    ctx = RandomLabelOrderTest().context()   # 3 forget rows: batches of 2 and 1
    variables = ctx.task.init(jax.random.PRNGKey(0))
    params, state = variables['params'], {k: v for k, v in variables.items() if k != 'params'}

    def grad_of_mean(rows):
      def loss(p):
        out, _ = ctx.task.apply({'params': p, **state},
                                {'x': ctx.forget['x'][rows], 'y': ctx.forget['y'][rows]}, False)
        return jnp.mean(ctx.task.losses(out, {'y': ctx.forget['y'][rows]}))
      return jax.grad(loss)(params)

    want = {'mean': grad_of_mean([0, 1, 2]),
            'batch_means': jax.tree.map(jnp.add, grad_of_mean([0, 1]), grad_of_mean([2]))}
    for total, grads in want.items():
      got = salun.saliency(ctx, variables, 2, total)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, np.abs(b), rtol=1e-5, atol=1e-7),
                   got, grads)
    with self.assertRaisesRegex(MuJaxError, "saliency_total='sum'; valid: mean, batch_means"):
      create_method('salun', saliency_total='sum')


class SamScopeTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.xf, self.yf = rng.normal(size=(4, 3)), rng.normal(size=4)
    self.xr, self.yr = rng.normal(size=(5, 3)), rng.normal(size=5)
    self.w = np.array([0.5, -1.0, 2.0])

  def grad(self, x, y, w):
    """∇ of 0.5·mean((x w − y)²)."""
    return x.T @ (x @ w - y) / len(y)

  def objective(self, params):
    def half_mse(x, y):
      return 0.5 * jnp.mean(jnp.square(jnp.asarray(x, jnp.float32) @ params['w'] - y))
    return LossTerms(half_mse(self.xf, self.yf), half_mse(self.xr, self.yr)), {}

  def test_forget_scope_perturbs_along_the_forget_gradient_only(self):
    rho, params = 0.3, {'w': jnp.asarray(self.w, jnp.float32)}
    g = self.grad(self.xf, self.yf, self.w)
    eps = rho * g / np.linalg.norm(g)
    want = self.grad(self.xr, self.yr, self.w) + self.grad(self.xf, self.yf, self.w + eps)
    (loss, _), got = step_gradient(self.objective, params, None, rho, 'forget')
    np.testing.assert_allclose(got['w'], want, rtol=1e-5)
    g = g + self.grad(self.xr, self.yr, self.w)
    eps = rho * g / np.linalg.norm(g)
    total = self.grad(self.xr, self.yr, self.w + eps) + self.grad(self.xf, self.yf, self.w + eps)
    np.testing.assert_allclose(step_gradient(self.objective, params, None, rho, 'total')[1]['w'],
                               total, rtol=1e-5)
    self.assertGreater(np.abs(want - total).max(), 1e-2)   # the scopes differ here
    self.assertAlmostEqual(float(loss), float(sum(self.objective(params)[0])), places=6)

  def test_smooth_npo_scopes_differ_only_with_a_retain_term(self):
    variables, hp = tm.setting()['variables'], dict(learning_rate=0.01, epochs=1, batch_size=32)

    def run(scope, retain_weight):
      overrides = dict(hp, retain_weight=retain_weight)
      method = create_method('smooth', rho=0.5, sam_scope=scope, overrides=overrides)
      return run_method(method, variables, tm.context()).variables

    self.assertFalse(tree_equal(run('forget', 1.0), run('total', 1.0)))
    self.assertTrue(tree_equal(run('forget', 0.0), run('total', 0.0)))

  def test_bad_scope_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, "sam_scope='all'; valid: forget, total"):
      create_method('smooth', sam_scope='all')


if __name__ == '__main__':
  absltest.main()
