"""The field's baselines against closed forms and their defining invariants."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from tests import helpers
from mu_jax.errors import MuJaxError
from mu_jax.methods import Stream, create_method, method_defaults, run_method
from mu_jax.methods import boundary, distill, npo, salun, smooth, sparse
from mu_jax.methods.gradient import gradient_method, sam_gradient
from tests import test_methods as tm
from tests.test_train import assert_trees_close

NEW = ('salun', 'l1_sparse', 'npo', 'scrub', 'bad_teacher', 'boundary_shrink', 'boundary_expand')


def tree_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def ce(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def weighted_ce(logits, labels, weights):
  """Mean cross-entropy over rows with weight 1 (padding has 0)."""
  return jnp.sum(ce(logits, labels) * weights) / jnp.maximum(jnp.sum(weights), 1.0)

class RegistryTest(parameterized.TestCase):

  @parameterized.parameters(*NEW)
  def test_registered_with_keyword_defaults(self, name):
    defaults = method_defaults(name)
    self.assertTrue(defaults)
    self.assertNotIn(inspect.Parameter.empty, defaults.values())
    with self.assertRaisesRegex(MuJaxError, 'no hyper-parameter'):
      create_method(name, not_a_hyper_parameter=1)

  def test_bad_values_are_refused(self):
    for name, hparams, message in [
        ('salun', dict(keep=0.0), 'keep=0.0 must be in'),
        ('salun', dict(keep=1.5), 'must be in'),
        ('scrub', dict(max_steps=-1), 'max_steps'),
        ('bad_teacher', dict(retain_fraction=2.0), 'retain_fraction'),
        ('smooth', dict(rho=-0.1), 'rho=-0.1 must be'),
        ('smooth', dict(method='ssd'), "'ssd' takes no gradient steps"),
        ('smooth', dict(method='smooth'), 'cannot wrap itself'),
        ('smooth', dict(overrides={'lr': 1}), "'lr' is not a hyper-parameter of the wrapped"),
        ('smooth', dict(overrides={'epochs': 'many'}), "does not fit the default 10"),
        ('smooth', dict(overrides={'epochs': 2.5}), "does not fit the default 10"),
    ]:
      with self.assertRaisesRegex(MuJaxError, message):
        create_method(name, **hparams)

  def test_smooth_overrides_are_typed_like_the_wrapped_defaults(self):
    got = smooth.typed_overrides({'learning_rate': 1, 'epochs': 3, 'optimizer': 'adam',
                                  'beta': None}, method_defaults('npo'))
    self.assertEqual(got, {'learning_rate': 1.0, 'epochs': 3, 'optimizer': 'adam'})
    self.assertIsInstance(got['epochs'], int)
    self.assertIsInstance(got['learning_rate'], float)

class SalUnTest(absltest.TestCase):

  def test_mask_has_exactly_the_requested_density_and_keeps_the_largest(self):
    rng = np.random.default_rng(0)
    scores = {'a': rng.integers(0, 5, (7, 11)).astype(np.float32),   # many ties
              'b': {'c': rng.normal(size=13).astype(np.float32)}}
    n = 7 * 11 + 13
    for keep in (0.1, 0.37, 0.5, 1.0):
      mask = salun.top_fraction_mask(scores, keep)
      chosen = np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)])
      values = np.concatenate([np.ravel(s) for s in jax.tree.leaves(scores)])
      self.assertEqual(chosen.sum(), int(n * keep), keep)
      if keep < 1.0:
        self.assertGreaterEqual(values[chosen].min(), values[~chosen].max())

  def test_frozen_weights_are_bit_identical_with_momentum_and_weight_decay(self):
    s = tm.setting()
    method = create_method('salun', keep=0.5, learning_rate=0.05, momentum=0.9,
                           weight_decay=0.1, epochs=1, batch_size=32)
    ctx = tm.context()
    mask = method.prepare(ctx, s['variables']).mask
    n = sum(np.size(m) for m in jax.tree.leaves(mask))
    self.assertEqual(sum(int(np.sum(m)) for m in jax.tree.leaves(mask)), n // 2)
    out = run_method(method, s['variables'], ctx)
    before, after = s['variables']['params'], out.variables['params']
    for m, b, a in zip(jax.tree.leaves(mask), jax.tree.leaves(before), jax.tree.leaves(after)):
      m, b, a = np.asarray(m), np.asarray(b), np.asarray(a)
      np.testing.assert_array_equal(a[~m], b[~m])
    moved = sum(int(np.sum(np.asarray(a) != np.asarray(b)))
                for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
    self.assertGreater(moved, n // 4)
    self.assertLess(tm.forget_accuracy(out.variables), 50.0)


class NPOTest(absltest.TestCase):

  def test_loss_equals_the_hand_computed_value(self):
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]], np.float32)
    ref = np.array([[1.0, 0.0, 0.0], [0.3, 0.2, 0.1], [5.0, 5.0, 5.0]], np.float32)
    labels, weights, beta = np.array([0, 2, 1]), np.array([1.0, 1.0, 0.0], np.float32), 0.5

    def prob(z, y):
      return np.exp(z[y]) / np.exp(z).sum()

    terms = [2 / beta * np.log(1 + (prob(logits[i], labels[i]) / prob(ref[i], labels[i])) ** beta)
             for i in range(2)]
    got = npo.npo_loss(ce(jnp.asarray(logits), jnp.asarray(labels)),
                       ce(jnp.asarray(ref), jnp.asarray(labels)), jnp.asarray(weights), beta)
    np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-6)

  def test_gradient_tends_to_gradient_ascent_as_beta_goes_to_zero(self):
    s = tm.setting()
    apply, ref = s['model'].apply, s['variables']
    x, y = jnp.asarray(s['forget']['x'][:16]), jnp.asarray(s['forget']['y'][:16])
    w = jnp.ones(16)
    params = jax.tree.map(jnp.copy, ref['params'])   # θ ≠ θ_ref: π_θ(y|x) far below π_ref
    params['head'] = {**params['head'], 'kernel': -params['head']['kernel']}

    def npo_grad(p, beta):
      return jax.grad(lambda q: npo.npo_loss(ce(apply({'params': q}, x, True)[0], y),
                                             ce(apply(ref, x, False)[0], y), w, beta))(p)

    ga = jax.grad(lambda q: -weighted_ce(apply({'params': q}, x, True)[0], y, w))

    def rel_err(a, b):
      diff = sum(jnp.sum(jnp.square(u - v)) for u, v in zip(jax.tree.leaves(a),
                                                          jax.tree.leaves(b)))
      return float(jnp.sqrt(diff / sum(jnp.sum(jnp.square(v)) for v in jax.tree.leaves(b))))

    errors = [rel_err(npo_grad(params, beta), ga(params)) for beta in (1.0, 0.1, 1e-5)]
    self.assertGreater(errors[0], 0.05)
    self.assertLess(errors[1], errors[0])
    self.assertLess(errors[2], 1e-3)
    # At θ = θ_ref the weight 2·σ(0) is 1: NPO's gradient is exactly GA's for any β.
    np.testing.assert_allclose(rel_err(npo_grad(ref['params'], 3.0), ga(ref['params'])), 0,
                               atol=1e-6)


class L1SparseTest(absltest.TestCase):

  def test_coefficient_decays_linearly_to_zero_over_the_epochs(self):
    np.testing.assert_allclose([sparse.l1_coefficient(2e-4, e, 4) for e in range(4)],
                               [2e-4, 1.5e-4, 1e-4, 0.5e-4])

  def test_each_step_minimises_ce_plus_its_epochs_l1_term(self):
    s = tm.setting()
    ctx, alpha, epochs = tm.context(), 0.01, 3
    method = create_method('l1_sparse', alpha=alpha, epochs=epochs, batch_size=64,
                           learning_rate=0.01)
    state, update, step = method.prepare(ctx, s['variables']), jax.jit(method.update,
                                                                       static_argnums=0), 0
    for epoch in range(epochs):
      for batch in ctx.batches('retain', 64, epoch=epoch):
        params = state.params
        logits, _ = s['model'].apply({'params': params}, batch['x'], True)
        l1 = sum(float(jnp.sum(jnp.abs(p))) for p in jax.tree.leaves(params))
        want = float(weighted_ce(logits, batch['y'], batch['w'])
                     ) + alpha * (1 - epoch / epochs) * l1
        state, stats = update(ctx.task, state, batch)
        np.testing.assert_allclose(float(stats['loss']), want, rtol=1e-5, err_msg=str(step))
        step += 1
    self.assertEqual(step, epochs * 2)


class ScrubTest(absltest.TestCase):

  def test_without_max_steps_it_is_distillation_on_the_retain_set(self):
    s = tm.setting()
    hp = dict(learning_rate=0.05, epochs=2, temperature=2.0, ce_weight=0.7, kl_weight=0.5,
              momentum=0.9, weight_decay=5e-4)
    scrubbed = run_method(create_method('scrub', max_steps=0, forget_batch_size=32,
                                        retain_batch_size=32, **hp), s['variables'], tm.context())
    teacher, t = s['variables'], hp['temperature']

    def kd_loss(task, variables, batch, rng):   # written from the paper's formula
      del rng
      z_s, _ = task.apply(variables, batch, True)
      z_t, _ = task.apply(teacher, batch, False)
      p_t = jax.nn.softmax(z_t / t)
      kl = jnp.sum(p_t * (jnp.log(p_t) - jax.nn.log_softmax(z_s / t)), -1) * t * t
      ce = optax.softmax_cross_entropy_with_integer_labels(z_s, batch['y'])
      per_row = hp['ce_weight'] * ce + hp['kl_weight'] * kl
      return jnp.sum(per_row * batch['w']) / jnp.sum(batch['w']), {}

    distilled = run_method(gradient_method(
        kd_loss, stream=Stream('retain', hp['epochs'], 32), learning_rate=hp['learning_rate'],
        momentum=hp['momentum'], weight_decay=hp['weight_decay']), teacher, tm.context())
    assert_trees_close(scrubbed.variables, distilled.variables, rtol=1e-5, atol=1e-6)
    with_max = run_method(create_method('scrub', max_steps=1, forget_batch_size=32,
                                        retain_batch_size=32, **hp), teacher, tm.context())
    self.assertFalse(tree_equal(with_max.variables, scrubbed.variables))

  def test_distill_kl_is_zero_for_equal_logits_and_matches_numpy(self):
    z = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], np.float32)
    self.assertAlmostEqual(float(distill.distill_kl(z, z, np.ones(2), 4.0)), 0.0, places=6)
    z_t = z[::-1]
    p_t = np.exp(z_t / 4) / np.exp(z_t / 4).sum(-1, keepdims=True)
    p_s = np.exp(z / 4) / np.exp(z / 4).sum(-1, keepdims=True)
    want = np.sum(p_t * np.log(p_t / p_s)) * 16 / 2
    np.testing.assert_allclose(float(distill.distill_kl(z, z_t, np.ones(2), 4.0)), want,
                               rtol=1e-5)


class BadTeacherTest(absltest.TestCase):

  def test_forget_rows_follow_the_random_teacher_and_retain_rows_the_original(self):
    s = tm.setting()
    apply, ctx = s['model'].apply, tm.context()
    bad = distill.incompetent_teacher(ctx)
    out = run_method(create_method('bad_teacher', epochs=3, batch_size=32, learning_rate=0.01),
                     s['variables'], ctx)
    x_f, x_r, ones = s['forget']['x'], s['retain']['x'], np.ones(len(s['forget']['y']))

    def kl_to_bad(variables):
      return float(distill.distill_kl(apply(variables, x_f, False)[0], apply(bad, x_f, False)[0],
                                      ones, 1.0))

    self.assertLess(kl_to_bad(out.variables), 0.2 * kl_to_bad(s['variables']))
    logits, _ = apply(out.variables, x_r, False)
    self.assertGreater(float(np.mean(np.argmax(logits, -1) == s['retain']['y'])), 0.9)


class BoundaryTest(absltest.TestCase):

  def test_fgsm_moves_each_pixel_by_the_bound_within_range_on_the_255_grid(self):
    lo, hi = np.float32(-0.5), np.float32(1.5)   # pixel p is lo + 2p
    pixels = np.array([[0.0, 0.95, 0.55, 0.25]], np.float32)   # no x.5/255 ties
    x = jnp.asarray((lo + 2 * pixels).reshape(1, 4, 1, 1))
    apply = lambda v, z, train: (z.reshape(1, 4) @ v, {})
    kernel = jnp.asarray(np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]],
                                  np.float32))
    task = helpers.classifier(apply, {'x': x}, 2)
    adv = np.asarray(boundary.fgsm(task, kernel, {'x': x, 'y': jnp.array([0])}, 0.1, lo,
                                   hi)).ravel()
    adv_pixels = (adv - lo) / 2
    # The CE of class 0 falls along kernel[:, 0] − kernel[:, 1] = (2, −2, 2, −2): ascent moves against it.
    np.testing.assert_allclose(adv_pixels, np.round(np.clip(pixels[0] + 0.1 * np.array(
        [-1, 1, -1, 1]), 0, 1) * 255) / 255, atol=1e-6)

  def test_shadow_logit_and_pruning(self):
    s = tm.setting()
    model, variables = s['model'], s['variables']
    wide = boundary.widen(variables, jax.random.PRNGKey(0))
    x = jnp.asarray(s['forget']['x'][:5])
    logits, _ = boundary.widened_logits(helpers.classifier(model, {'x': x}), wide, {'x': x}, True)
    features = model.penultimate(variables, x)
    head, shadow = wide['params']['head'], wide['params'][boundary.SHADOW]
    want = jnp.concatenate([head['kernel'], shadow['kernel']], 1)
    want = features @ want + jnp.concatenate([head['bias'], shadow['bias']])
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    self.assertTrue(tree_equal(boundary.prune(wide), variables))

  def test_both_move_the_forget_class_and_keep_the_architecture(self):
    s = tm.setting()
    for name in ('boundary_shrink', 'boundary_expand'):
      bound = dict(bound=0.3) if name == 'boundary_shrink' else {}   # blobs sit far apart
      out = run_method(create_method(name, learning_rate=0.05, epochs=3, batch_size=32, **bound),
                       s['variables'], tm.context())
      self.assertEqual(jax.tree.structure(out.variables), jax.tree.structure(s['variables']))
      self.assertEqual(jax.tree.map(np.shape, out.variables),
                       jax.tree.map(np.shape, s['variables']))
      self.assertLess(tm.forget_accuracy(out.variables), 20.0, name)


class SmoothTest(parameterized.TestCase):

  def test_sam_gradient_of_a_quadratic_is_the_gradient_at_the_ascended_point(self):
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    theta = {'w': jnp.array([1.0, -2.0])}
    grad_fn = lambda p: {'w': a @ p['w']}
    g = grad_fn(theta)
    got = sam_gradient(grad_fn, theta, g, 0.5)
    eps = 0.5 * g['w'] / jnp.linalg.norm(g['w'])
    np.testing.assert_allclose(got['w'], a @ (theta['w'] + eps), rtol=1e-6)
    masked = sam_gradient(grad_fn, theta, {'w': g['w'] * jnp.array([1.0, 0.0])}, 0.5,
                          {'w': jnp.array([True, False])})
    self.assertEqual(float(masked['w'][1]), 0.0)

  @parameterized.parameters('npo', 'boundary_expand', 'scrub')
  def test_rho_zero_is_the_plain_method_and_rho_positive_is_not(self, name):
    s = tm.setting()
    hp = dict(learning_rate=0.05, epochs=1)
    hp.update(dict(forget_batch_size=32, retain_batch_size=32) if name == 'scrub'
              else dict(batch_size=32))
    plain = run_method(create_method(name, **hp), s['variables'], tm.context())
    zero = run_method(create_method('smooth', method=name, rho=0.0, overrides=hp),
                      s['variables'], tm.context())
    self.assertTrue(tree_equal(plain.variables, zero.variables))
    sharp = run_method(create_method('smooth', method=name, rho=0.5, overrides=hp),
                       s['variables'], tm.context())
    self.assertFalse(tree_equal(plain.variables, sharp.variables))


if __name__ == '__main__':
  absltest.main()
