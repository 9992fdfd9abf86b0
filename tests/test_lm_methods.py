"""The language-model unlearning losses against hand computations on tiny cases, and the
methods' invariants: jit = eager, 1 = 8 devices, frozen weights kept, FILA's start."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mu_jax import lora, sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.analytic import ridge
from mu_jax.methods import Context, acu, create_method, run_method
from mu_jax.methods.base import result_task
from mu_jax.methods.idk import dpo_loss, flat_loss, mean_token_probability
from mu_jax.methods.ihl import fila_init, inverted_hinge, weighted_low_rank
from mu_jax.methods.npo import npo_loss
from mu_jax.methods.rmu import activation_mse, control_vector
from mu_jax.methods.simnpo import simnpo_loss
from mu_jax.models import Model, create_model
from mu_jax.tasks import LanguageModel, create_task

VOCAB = 16
# One block: eager steps (jit = eager) dispatch op by op, and cost per block.
TASK = create_task('language_model', create_model('transformer', VOCAB, size='tiny', max_len=12,
                                                  num_layers=1), (12,), VOCAB)
VARIABLES = TASK.init(jax.random.PRNGKey(0))
sig = lambda z: 1 / (1 + np.exp(-z))


def rows(n: int, seed: int) -> Examples:
  """Token rows scored on positions 4-9, with refusals scored on positions 4-6."""
  rng = np.random.default_rng(seed)
  m, ma = np.zeros((n, 12), np.float32), np.zeros((n, 12), np.float32)
  m[:, 4:10], ma[:, 4:7] = 1, 1
  return Examples(x=rng.integers(1, VOCAB, (n, 12)).astype(np.int32), m=m,
                  xa=rng.integers(1, VOCAB, (n, 12)).astype(np.int32), ma=ma)


def context(mesh: str = 'data:1') -> Context:
  return Context(TASK, rows(8, 0), rows(16, 1), sharding.make_mesh(mesh), seed=3)


SMALL = {'grad_diff': {}, 'simnpo': {}, 'idk_dpo': {}, 'idk_nll': {}, 'flat': {},
         'ihl': dict(lora_rank=2, lora_targets='q,v,down'),
         'rmu': dict(layer=0, param_layers='0'), 'npo': {}, 'dp2unlearning': {}}


def build(name: str, **extra):
  return create_method(name, **{'epochs': 2, 'batch_size': 4, **SMALL[name], **extra})


# --- the losses by hand ------------------------------------------------------------------

def test_sequence_nll_of_a_language_model_is_the_summed_answer_nll():
  # Uniform logits over 16 tokens; 3 scored positions: 3 log 16 (the mean would be log 16).
  batch = {'x': np.ones((1, 5), np.int32), 'm': np.array([[0, 1, 1, 1, 0]], np.float32)}
  task = LanguageModel(Model('fixed', None, None, None), (5,), vocab_size=16)
  np.testing.assert_allclose(task.sequence_nll(np.zeros((1, 5, 16), np.float32), batch),
                             [3 * np.log(16)], rtol=1e-6)


def test_npo_and_simnpo_by_hand():
  nll, ref, w = np.array([2.0, 5.0, 1.0]), np.array([3.0, 4.0, 9.0]), np.array([1.0, 1.0, 0.0])
  beta = 0.5
  expected = np.mean([2 / beta * np.log1p(np.exp(beta * (r - n))) for n, r in zip(nll[:2], ref)])
  np.testing.assert_allclose(npo_loss(nll, ref, w, beta), expected, rtol=1e-6)
  delta = 0.3
  expected = np.mean([-2 / beta * np.log(sig(beta * (n - delta))) for n in nll[:2]])
  np.testing.assert_allclose(simnpo_loss(nll, w, beta, delta), expected, rtol=1e-6)


def test_dpo_by_hand():
  win, win_ref = np.array([1.0, 2.0]), np.array([1.5, 1.0])
  lose, lose_ref = np.array([4.0, 3.0]), np.array([3.0, 3.5])
  beta = 0.1
  margins = (win_ref - win) - (lose_ref - lose)   # [0.5 + 1, -1 - 0.5]
  expected = np.mean(-2 / beta * np.log(sig(beta * margins)))
  np.testing.assert_allclose(dpo_loss(win, win_ref, lose, lose_ref, np.ones(2), beta), expected,
                             rtol=1e-6)


def _two_token_batch():
  # Vocabulary 2; row 0 scores one token whose probability is 0.8; row 1 scores two tokens of
  # probabilities 0.5 and 0.2; row 2 is padding.
  logits = np.zeros((3, 3, 2), np.float32)
  logits[0, 0] = [0, np.log(4.0)]          # p(1) = 0.8
  logits[1, 0] = [0, 0]                    # p(1) = 0.5
  logits[1, 1] = [np.log(4.0), 0]          # p(1) = 0.2
  batch = {'x': np.array([[0, 1, 0], [0, 1, 1], [0, 1, 1]], np.int32),
           'm': np.array([[0, 1, 0], [0, 1, 1], [0, 1, 1]], np.float32),
           'w': np.array([1.0, 1.0, 0.0], np.float32)}
  return jnp.asarray(logits), batch


def test_flat_probability_and_total_variation_loss_by_hand():
  logits, batch = _two_token_batch()
  answer = mean_token_probability(logits, batch, 'answer')
  np.testing.assert_allclose(answer, np.mean([0.8, (0.5 + 0.2) / 2]), rtol=1e-6)
  padded = mean_token_probability(logits, batch, 'padded')   # 2 rows x 2 positions
  np.testing.assert_allclose(padded, (0.8 + 0.5 + 0.2) / 4, rtol=1e-6)
  np.testing.assert_allclose(flat_loss(0.6, 0.3, 'total_variation'),
                             -0.5 * np.tanh(0.3) + 0.5 * np.tanh(0.6), rtol=1e-6)
  np.testing.assert_allclose(flat_loss(0.6, 0.3, 'kl'), -0.3 + np.exp(0.6 - 1), rtol=1e-6)
  np.testing.assert_allclose(flat_loss(0.6, 0.3, 'pearson'), -0.3 + 0.36 / 4 + 0.6, rtol=1e-6)


def test_inverted_hinge_by_hand():
  logits, batch = _two_token_batch()
  # Per scored token 1 + p(y) − p(other) over two classes: 1 + 0.8 − 0.2, 1 + 0.5 − 0.5,
  # 1 + 0.2 − 0.8; a token mean over the 3 scored tokens of the real rows.
  np.testing.assert_allclose(inverted_hinge(logits, batch), (1.6 + 1.0 + 0.4) / 3, rtol=1e-6)


def test_rmu_distance_and_control_vector_by_hand():
  h = np.zeros((2, 2, 2), np.float32)
  h[0, 0] = [1, 1]     # squared distance to 0: 1 per feature
  h[0, 1] = [2, 0]     # 4 and 0: mean 2
  batch = {'m': np.array([[1, 0], [1, 1]], np.float32), 'w': np.array([1.0, 0.0], np.float32)}
  np.testing.assert_allclose(activation_mse(h, 0.0, batch, 'all'), (1 + 2) / 2, rtol=1e-6)
  np.testing.assert_allclose(activation_mse(h, 0.0, batch, 'scored'), 1.0, rtol=1e-6)
  c = np.asarray(control_vector(jax.random.PRNGKey(0), 8, 6.5))
  assert np.all(c >= 0) and abs(np.linalg.norm(c) - 6.5) < 1e-5


def test_grad_diff_step_zero_loss_is_the_retain_minus_forget_mean_loss():
  method, ctx = build('grad_diff'), context()
  state = method.prepare(ctx, VARIABLES)
  batch = next(iter(ctx.batches('forget', 4)))
  _, stats = jax.jit(method.update, static_argnums=0)(TASK, state, batch)
  forget = TASK.mean_loss(TASK.apply(VARIABLES, batch, False)[0], batch)
  rows = jax.random.randint(jax.random.fold_in(state.rng, 0), (4,), 0, 16)
  retain = {**jax.tree.map(lambda a: a[rows], ctx.retain.arrays()), 'w': batch['w']}
  kept = TASK.mean_loss(TASK.apply(VARIABLES, retain, False)[0], retain)
  np.testing.assert_allclose(stats['loss'], kept - forget, rtol=1e-5)


# --- invariants ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', sorted(SMALL))
def test_each_method_is_the_same_under_jit_and_eagerly(name):
  method, ctx = build(name), context()
  first, second = list(ctx.batches('forget', 4))
  update = jax.jit(method.update, static_argnums=0)
  start = method.prepare(ctx, VARIABLES)
  jitted, jit_stats = update(TASK, start, first)
  with jax.disable_jit():
    eager, eager_stats = method.update(TASK, start, first)
  np.testing.assert_allclose(eager_stats['loss'], jit_stats['loss'], rtol=1e-5)
  # The updates agree: the next step's loss (jitted) is the same from either state.
  np.testing.assert_allclose(update(TASK, eager, second)[1]['loss'],
                             update(TASK, jitted, second)[1]['loss'], rtol=1e-5)


def test_a_method_on_eight_devices_equals_one_device():
  one = run_method(build('simnpo', batch_size=8), VARIABLES, context('data:1')).variables
  eight = run_method(build('simnpo', batch_size=8), VARIABLES, context('data:8')).variables
  for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_rmu_moves_only_the_chosen_kernels():
  out = run_method(build('rmu'), VARIABLES, context()).variables
  before, after = (traverse_util.flatten_dict(v['params']) for v in (VARIABLES, out))
  for path, w in before.items():
    if path[-2] == 'down':   # the one block's
      assert np.abs(after[path] - w).max() > 0
    else:
      np.testing.assert_array_equal(after[path], w)


def test_fila_starts_from_the_original_model_with_a_weighted_low_rank_split():
  ctx = context()
  spec = lora.spec_of(2, 4.0, 'q,v,down', 'fila')
  frozen, adapters = fila_init(ctx, VARIABLES, spec, jax.random.PRNGKey(0))
  merged = traverse_util.flatten_dict(lora.merge(frozen, adapters, spec.scale))
  for path, w in traverse_util.flatten_dict(VARIABLES['params']).items():
    np.testing.assert_allclose(merged[path], w, atol=1e-6)
  # Uniform importance (w = √6 on every output): the adapters' product is the plain rank-r
  # truncated SVD, times w / (w + 1e-5).
  kernel = np.random.default_rng(0).normal(size=(6, 5))
  a, b = weighted_low_rank(kernel, np.ones((6, 5)), 2, 0.5)
  u, s, vt = np.linalg.svd(kernel)
  np.testing.assert_allclose(0.5 * a @ b, (u[:, :2] * s[:2]) @ vt[:2] * 6 ** 0.5 / (6 ** 0.5 + 1e-5),
                             rtol=1e-6)
  # Importance on one output unit only: that unit is reproduced best.
  weights = np.zeros((6, 5))
  weights[:, 3] = 1.0
  a, b = weighted_low_rank(kernel, weights + 1e-8, 1, 1.0)
  np.testing.assert_allclose((a @ b)[:, 3], kernel[:, 3], rtol=1e-3)


def test_refusal_methods_refuse_examples_without_refusals():
  ctx = context()
  bare = ctx._replace(forget=Examples(x=ctx.forget['x'], m=ctx.forget['m']))
  with pytest.raises(MuJaxError, match="needs each forget row's refusal answer"):
    build('idk_dpo').prepare(bare, VARIABLES)


def test_rmu_refuses_a_layer_the_model_lacks():
  with pytest.raises(MuJaxError, match='the model has blocks 0-0'):
    create_method('rmu', layer=7).prepare(context(), VARIABLES)


# --- ACU on the output projection -----------------------------------------------------------

def test_acu_on_a_language_model_is_ridge_on_the_retain_rows_scored_positions():
  ctx = context()
  out = run_method(create_method('acu', buffer_size=64), VARIABLES, ctx)
  head = out.variables['acu']
  # By hand: one head row per scored next-token prediction (position t predicts x[t + 1]
  # where m[t + 1] = 1: rows.m is 1 on positions 4-9, so t = 3..8) of the retain rows.
  retain = ctx.retain.arrays()
  h = np.asarray(TASK.model.penultimate(VARIABLES, retain['x']), np.float64)[:, 3:9]
  targets = np.eye(VOCAB)[retain['x'][:, 4:10]]
  with jax.enable_x64(True):
    expected = ridge.closed_form(acu.buffer_features(h.reshape(-1, h.shape[-1]), head['buffer']),
                                 targets.reshape(-1, VOCAB))
  np.testing.assert_allclose(head['head'], expected, rtol=2e-3, atol=2e-5)
  logits, _ = out.task.apply(out.variables, retain, False)
  assert logits.shape == (16, 12, VOCAB)
  by_hand = np.maximum(h @ np.asarray(head['buffer'], np.float64), 0) @ np.asarray(expected)
  np.testing.assert_allclose(logits[:, 3:9], by_hand, rtol=2e-3, atol=1e-4)
  # 'log' logits: log max(ŷ, floor), the same argmax.
  logged = result_task(create_method('acu', buffer_size=64, logits='log'), TASK)
  log_logits, _ = logged.apply(out.variables, retain, False)
  np.testing.assert_allclose(log_logits, np.log(np.maximum(logits, acu.LOG_FLOOR)), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(np.argmax(log_logits, -1)[:, 3:9], np.argmax(logits, -1)[:, 3:9])


def test_acu_ledger_holds_one_row_per_scored_position():
  ctx = context()
  ids = (np.arange(24)[:, None] * 12 + np.arange(3, 9)).ravel()   # example i, position t
  state = create_method('acu', buffer_size=32).prepare(ctx, VARIABLES)
  np.testing.assert_array_equal(ridge.learned_ids(state['ridge']), ids)
  np.testing.assert_array_equal(state['forget_ids'], ids[:8 * 6])


def test_acu_refuses_a_head_too_large_for_memory():
  with pytest.raises(MuJaxError, match='256000 outputs would hold'):
    acu.check_head_size(acu.BUFFER_SIZE, 256_000, ridge.CHUNK_SIZE)
  acu.check_head_size(acu.BUFFER_SIZE, 2048, ridge.CHUNK_SIZE)   # the default LM: 48 MiB
