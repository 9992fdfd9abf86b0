"""LoRA adapters: the merge by hand, PEFT's start, frozen weights bit-identical through
unlearning, jit = eager, and the refusals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mu_jax import lora, sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.methods import Context, create_method, method_defaults, run_method
from mu_jax.models import create_model
from mu_jax.tasks import create_task

VOCAB = 16
TASK = create_task('language_model', create_model('transformer', VOCAB, size='tiny', max_len=12),
                   (12,), VOCAB)


def rows(n: int, seed: int) -> Examples:
  rng = np.random.default_rng(seed)
  m = np.zeros((n, 12), np.float32)
  m[:, 4:10] = 1
  return Examples(x=rng.integers(1, VOCAB, (n, 12)).astype(np.int32), m=m)


def context(mesh_spec: str = 'data:1') -> Context:
  return Context(TASK, rows(8, 0), rows(16, 1), sharding.make_mesh(mesh_spec), seed=3)


def flat(tree) -> dict:
  return traverse_util.flatten_dict(jax.device_get(tree))


VARIABLES = TASK.init(jax.random.PRNGKey(0))
SPEC = lora.spec_of(2, 4.0, 'q,v,down', 'peft')


def test_merge_adds_scaled_low_rank_products_to_the_targeted_kernels_only():
  params = VARIABLES['params']
  _, adapters = lora.peft_init(None, VARIABLES, SPEC, jax.random.PRNGKey(1))
  rng = np.random.default_rng(0)
  adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), adapters)
  merged, before, pieces = flat(lora.merge(params, adapters, SPEC.scale)), flat(params), flat(adapters)
  targeted = {p for p in before if p[-1] == 'kernel' and p[-2] in ('q', 'v', 'down')}
  assert len(targeted) == 6   # 2 layers x (q, v, down)
  for path, w in before.items():
    if path in targeted:
      a, b = pieces[(*path[:-1], 'a')], pieces[(*path[:-1], 'b')]
      np.testing.assert_allclose(merged[path], w + 2.0 * a @ b, rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(merged[path], w)
  assert lora.count(adapters) == sum(2 * sum(before[p].shape) for p in targeted)


def test_peft_start_leaves_the_model_unchanged():
  frozen, adapters = lora.peft_init(None, VARIABLES, SPEC, jax.random.PRNGKey(1))
  assert frozen is VARIABLES['params']
  for path, x in flat(adapters).items():
    if path[-1] == 'b':
      assert not np.any(x)
    else:   # a ~ U(±1/√in): torch's kaiming_uniform_(a=√5) bound
      assert np.abs(x).max() <= 1 / np.sqrt(x.shape[0]) and np.abs(x).max() > 0
  merged = lora.merge(frozen, adapters, SPEC.scale)
  for path, w in flat(VARIABLES['params']).items():
    np.testing.assert_array_equal(flat(merged)[path], w)


def npo_with_adapters(**extra):
  return create_method('npo', learning_rate=1e-2, epochs=2, batch_size=4, lora_rank=2,
                       lora_alpha=4.0, lora_targets='q,v,down', warmup_epochs=0, **extra)


def test_unlearning_with_adapters_never_moves_the_frozen_weights():
  method, ctx = npo_with_adapters(), context()
  state = method.prepare(ctx, VARIABLES)
  update = jax.jit(method.update, static_argnums=0)
  start = flat(state.params)
  for batch in ctx.batches('forget', 4):
    state, _ = update(TASK, state, batch)
  for path, w in flat(VARIABLES['params']).items():   # bit-identical, every leaf
    np.testing.assert_array_equal(flat(state.frozen)[path], w)
  moved = flat(state.params)
  assert any(not np.array_equal(moved[p], start[p]) for p in moved)
  out = flat(method.result(state)['params'])
  for path, w in flat(VARIABLES['params']).items():
    delta = out[path] - w
    if path[-2] in ('q', 'v', 'down'):   # the trained change has rank ≤ r
      assert np.linalg.matrix_rank(delta, tol=1e-6) <= 2 and np.abs(delta).max() > 0
    else:
      np.testing.assert_array_equal(out[path], w)
  assert method.report(state) == {'trainable': lora.count(state.params)}


def test_a_lora_step_is_the_same_under_jit_and_eagerly():
  # SGD (ga's optimizer): Adam's first step, g/(|g| + ε), would magnify rounding in tiny g.
  method = create_method('ga', learning_rate=1e-2, epochs=1, batch_size=4, lora_rank=2,
                         lora_targets='q,v,down')
  ctx = context()
  state = method.prepare(ctx, VARIABLES)
  batch = next(iter(ctx.batches('forget', 4)))
  jitted, _ = jax.jit(method.update, static_argnums=0)(TASK, state, batch)
  with jax.disable_jit():
    eager, _ = method.update(TASK, state, batch)
  for x, y in zip(jax.tree.leaves(jitted.params), jax.tree.leaves(eager.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_the_run_reports_trainable_numbers_and_its_rank_zero_is_the_plain_method():
  ctx = context()
  out = run_method(npo_with_adapters(), VARIABLES, ctx, 'npo')
  # q, v: [32, 32]; down: [64, 32]; 2 layers; rank 2: 2 * 2 * (64 + 64 + 96).
  assert out.info == {'trainable': 896.0}
  plain = dict(learning_rate=1e-2, epochs=1, batch_size=4, warmup_epochs=0)
  a = run_method(create_method('npo', **plain), VARIABLES, ctx).variables
  b = run_method(create_method('npo', lora_rank=0, **plain), VARIABLES, ctx).variables
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_every_gradient_method_offers_lora_and_the_others_do_not():
  assert lora.DEFAULTS.keys() <= method_defaults('ga').keys()
  assert lora.DEFAULTS.keys() <= method_defaults('smooth').keys()
  assert not lora.DEFAULTS.keys() & method_defaults('ssd').keys()
  assert not lora.DEFAULTS.keys() & method_defaults('salun').keys()   # it trains a mask


@pytest.mark.parametrize('hparams, message', [
    (dict(lora_rank=64), 'exceeds the smaller side'),
    (dict(lora_rank=2, lora_targets='attention'), 'the model\'s modules: down, gate, head'),
    (dict(lora_rank=2, lora_alpha=0.0), 'lora_alpha=0.0 must be > 0'),
    (dict(lora_rank=2, lora_init='svd'), 'Unknown LoRA initialisation'),
    (dict(lora_rank=-1), 'must be a positive integer'),
])
def test_bad_adapters_are_refused_in_one_sentence(hparams, message):
  with pytest.raises(MuJaxError, match=message):
    method = create_method('ga', **hparams)
    method.prepare(context(), VARIABLES)
