"""The decoder-only transformer: causality, RoPE, dtypes, sharded training, greedy decoding."""
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

from mu_jax import sharding
from mu_jax.errors import MuJaxError
from mu_jax.models import Model, create_model, decoding, transformer

VOCAB = 64


def tiny(**overrides) -> Model:
  return create_model('transformer', VOCAB, **{'size': 'tiny', 'max_len': 32, **overrides})


def tokens(shape, seed=0) -> jax.Array:
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, VOCAB, jnp.int32)


# One model, its jitted functions and training step shared by the tests: on this
# shared CPU compiling dominates their time.
MODEL = tiny()
APPLY = jax.jit(MODEL.apply, static_argnums=2)
INIT = jax.jit(MODEL.init)


def next_token_loss(model: Model, params, batch) -> jax.Array:
  """Mean cross-entropy of each token given the ones before it."""
  logits, _ = model.apply({'params': params}, batch, True)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch[:, 1:]).mean()


def train_step(tx: optax.GradientTransformation):
  """(params, opt_state, batch) -> (params, opt_state, loss): one step of MODEL's loss."""

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(lambda p: next_token_loss(MODEL, p, batch))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


class ModelTest(absltest.TestCase):
  """Most checks run jitted: on this shared CPU an eager pass costs seconds."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = MODEL
    cls.variables = INIT(jax.random.PRNGKey(0), tokens((1, 8)))
    cls.x = tokens((2, 12))
    cls.logits, cls.state = APPLY(cls.variables, cls.x, False)

  def test_shapes_and_parameter_tree(self):
    self.assertEqual((self.logits.shape, self.logits.dtype, self.state),
                     ((2, 12, VOCAB), jnp.float32, {}))
    params = self.variables['params']
    self.assertEqual(set(params), {'embed', 'block_0', 'block_1', 'norm', 'head'})
    self.assertEqual(set(params['block_0']['attn']), {'q', 'k', 'v', 'o'})
    self.assertEqual(set(params['block_0']['mlp']), {'gate', 'up', 'down'})
    h = jax.jit(self.model.penultimate)(self.variables, self.x)
    self.assertEqual((h.shape, h.dtype), ((2, 12, 32), jnp.float32))
    np.testing.assert_allclose(h @ params['head']['kernel'], self.logits, atol=1e-5)

  def test_tied_embeddings_have_no_head(self):
    model = tiny(tied_embeddings=True)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens((1, 8)))
    variables = {'params': {k: v for k, v in self.variables['params'].items() if k != 'head'}}
    chex.assert_trees_all_equal_shapes(shapes, variables)
    both = jax.jit(lambda v, x: (model.apply(v, x, False)[0], model.penultimate(v, x)))
    logits, h = both(variables, self.x)
    embedding = variables['params']['embed']['embedding']
    np.testing.assert_allclose(h @ embedding.T, logits, atol=1e-5)

  def test_causal(self):
    changed = self.x.at[:, 6].set((self.x[:, 6] + 1) % VOCAB)
    after, _ = APPLY(self.variables, changed, False)
    np.testing.assert_array_equal(self.logits[:, :6], after[:, :6])
    self.assertGreater(float(jnp.abs(self.logits[:, 6:] - after[:, 6:]).min()), 0)

  def test_jit_matches_eager(self):
    eager, _ = self.model.apply(self.variables, self.x, False)
    np.testing.assert_allclose(self.logits, eager, rtol=1e-5, atol=1e-6)

  def test_bfloat16_compute_gives_float32_logits_near_float32_ones(self):
    model = tiny(dtype='bfloat16')
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens((1, 8)))
    self.assertTrue(all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes)))
    low, _ = jax.jit(model.apply, static_argnums=2)(self.variables, self.x, False)
    self.assertEqual(low.dtype, jnp.float32)
    np.testing.assert_allclose(low, self.logits, atol=0.02 * float(jnp.abs(self.logits).max()))

  def test_rope_scores_depend_only_on_the_offset(self):
    q, k = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 1, 1, 16))
    score = lambda m, n: float(jnp.sum(transformer.rope(q, jnp.array([[m]]), 10000.0, 64) *
                                       transformer.rope(k, jnp.array([[n]]), 10000.0, 64)))
    np.testing.assert_allclose([score(3, 1), score(10, 8), score(52, 50)], score(2, 0),
                               rtol=1e-4)
    self.assertGreater(abs(score(3, 0) - score(2, 0)), 1e-3)

  def test_rope_turns_each_half_split_pair_by_its_angle(self):
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 2, 8))
    positions = jnp.array([[0, 1, 5], [2, 3, 7]])
    got = np.asarray(transformer.rope(x, positions, 100.0, 8))
    angle = np.asarray(positions, np.float64)[..., None, None] * 100.0 ** (-np.arange(4) / 4)
    x1, x2 = np.asarray(x[..., :4], np.float64), np.asarray(x[..., 4:], np.float64)
    want = np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                           x2 * np.cos(angle) + x1 * np.sin(angle)], -1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  def test_attention_is_dot_product_attention_with_the_mask(self):
    q, k, v = jax.random.normal(jax.random.PRNGKey(5), (3, 2, 6, 4, 8))
    causal = jnp.tril(jnp.ones((6, 6), bool))
    per_row = (jnp.arange(6) <= jnp.array([0, 3])[:, None])[:, None, None, :]   # a cache's
    for mask in (causal, per_row):
      np.testing.assert_allclose(transformer._attention(q, k, v, mask),
                                 jax.nn.dot_product_attention(q, k, v, mask=mask),
                                 rtol=1e-5, atol=1e-6)

  def test_memorises_a_repeated_sequence(self):
    batch = jnp.tile(tokens((1, 16), seed=3), (8, 1))
    params, tx = self.variables['params'], optax.adam(1e-2)
    opt_state, step, losses = tx.init(params), jax.jit(train_step(tx)), []
    for _ in range(40):
      params, opt_state, loss = step(params, opt_state, batch)
      losses.append(float(loss))
    self.assertGreater(losses[0], 3.5)   # about ln(64) at init
    self.assertLess(losses[-1], 0.3)

  def test_rows_dot_general_is_dot_general_in_value_and_derivatives(self):
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4))
    w = jax.random.normal(jax.random.PRNGKey(2), (4, 6))
    dense = (((2,), (0,)), ((), ()))
    ours = lambda x, w: jnp.sum(jnp.sin(transformer.rows_dot_general(x, w, dense)))
    plain = lambda x, w: jnp.sum(jnp.sin(jax.lax.dot_general(x, w, dense)))
    np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-6)
    for a, b in zip(jax.grad(ours, (0, 1))(x, w), jax.grad(plain, (0, 1))(x, w)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # forward over reverse (Hessian-vector products), through the custom JVP on a CPU
    hvp = lambda f: jax.jvp(jax.grad(f, 1), (x, w), (x, w))[1]
    np.testing.assert_allclose(hvp(ours), hvp(plain), rtol=1e-5, atol=1e-5)
    # any other contraction passes straight through
    batched = (((2,), (2,)), ((0,), (0,)))
    y = jax.random.normal(jax.random.PRNGKey(3), (3, 6, 4))
    np.testing.assert_array_equal(transformer.rows_dot_general(x, y, batched),
                                  jax.lax.dot_general(x, y, batched))

  def test_kernel_gradient_contracts_no_left_operand_along_its_leading_dimension(self):
    # XLA:CPU runs such a product in a slower kernel; the plain dot_general's
    # kernel gradient is one, so this test fails without the custom JVP.
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 32))
    w = jax.random.normal(jax.random.PRNGKey(2), (32, 48))
    dense = (((2,), (0,)), ((), ()))
    loss = lambda x, w: jnp.sum(jnp.sin(transformer.rows_dot_general(x, w, dense)))
    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()
    self.assertEqual(re.findall(r' dot\(.*?lhs_contracting_dims=\{(\d+)\}', hlo), ['1'] * 3)

  def test_bad_options_are_refused(self):
    with self.assertRaisesRegex(MuJaxError, 'heads'):
      tiny(num_heads=3)
    with self.assertRaisesRegex(MuJaxError, 'dtype'):
      tiny(dtype='float16')
    with self.assertRaisesRegex(MuJaxError, 'Unknown transformer size'):
      tiny(size='huge')
    with self.assertRaisesRegex(MuJaxError, 'max_len=32'):
      jax.eval_shape(self.model.apply, self.variables, tokens((1, 33)), False)


class ShardedTrainingTest(absltest.TestCase):

  def test_data_and_model_mesh_matches_one_device(self):
    self.assertEqual(jax.device_count(), 8)
    params = INIT(jax.random.PRNGKey(0), tokens((1, 8)))['params']
    batch = tokens((8, 16), seed=1)
    # SGD: Adam's first steps, g / (|g| + eps), would magnify float rounding in tiny gradients.
    tx = optax.sgd(0.1, momentum=0.9)
    step = train_step(tx)
    single = (params, tx.init(params))
    for _ in range(2):
      *single, single_loss = jax.jit(step)(*single, batch)
    single = tuple(single)

    mesh = sharding.make_mesh('data:4,model:2')
    # Small enough that every kernel and the embedding are split over 'model'.
    shardings = sharding.state_sharding(single, mesh, min_size=1024)
    sharded_step = jax.jit(step, in_shardings=(*shardings, sharding.batch_sharding(mesh)),
                           out_shardings=(*shardings, sharding.replicated(mesh)))
    state = jax.device_put((params, tx.init(params)), shardings)
    for _ in range(2):
      *state, loss = sharded_step(*state, sharding.shard_batch(batch, mesh))
    state = tuple(state)

    q = state[0]['block_0']['attn']['q']['kernel']
    self.assertIn(sharding.MODEL_AXIS, q.sharding.spec)
    self.assertIn(sharding.MODEL_AXIS, state[0]['embed']['embedding'].sharding.spec)
    self.assertEqual(q.addressable_shards[0].data.shape, (16, 32))   # half of [32, 32]
    chex.assert_trees_all_close(sharding.to_host((state, loss)),
                                jax.device_get((single, single_loss)), rtol=1e-5, atol=1e-6)


def naive_greedy(variables, prompt, max_new_tokens, eos_id, pad_id):
  """One row's greedy continuation by a Python loop of MODEL's forward passes over
  the sequence so far (right-padded to max_len, so that apply compiles once)."""
  seq, out, done = list(prompt), [], False
  for _ in range(max_new_tokens):
    if done:
      out.append(pad_id)
      continue
    logits, _ = APPLY(variables, jnp.array([seq + [pad_id] * (32 - len(seq))]), False)
    out.append(int(jnp.argmax(logits[0, len(seq) - 1])))
    seq.append(out[-1])
    done = out[-1] == eos_id
  return out


class GenerateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = MODEL
    # A larger init than 0.02 so that greedy continuations vary from token to token.
    params = INIT(jax.random.PRNGKey(0), tokens((1, 8)))['params']
    cls.variables = {'params': jax.tree.map(lambda p: p * 20 if p.ndim == 2 else p, params)}
    # The same network without a registered decoder: generate recomputes the prefix.
    cls.uncached = Model('uncached', cls.model.init,
                         lambda v, x, train: cls.model.apply(v, x, train), None)
    cls.prompts = tokens((4, 7), seed=5)   # padding holds random tokens, never read
    cls.lengths = jnp.array([5, 2, 7, 1], jnp.int32)

  def check_all_agree(self, eos_id, max_new_tokens=8):
    cached = decoding.generate(self.model, self.variables, self.prompts, self.lengths,
                               max_new_tokens, eos_id)
    full = decoding.generate(self.uncached, self.variables, self.prompts, self.lengths,
                             max_new_tokens, eos_id)
    naive = [naive_greedy(self.variables, p[:n].tolist(), max_new_tokens, eos_id, 0)
             for p, n in zip(np.asarray(self.prompts), np.asarray(self.lengths))]
    self.assertEqual((cached.shape, cached.dtype), ((4, max_new_tokens), jnp.int32))
    np.testing.assert_array_equal(cached, naive)
    np.testing.assert_array_equal(full, naive)
    return np.asarray(cached)

  def test_cache_full_recompute_and_naive_loop_agree(self):
    self.assertIsNotNone(decoding.decoder_of(self.model))
    self.assertIsNone(decoding.decoder_of(self.uncached))
    out = self.check_all_agree(eos_id=-1)
    self.assertGreater(len(set(out.ravel().tolist())), 4)   # not one repeated token

  def test_tokens_after_eos_are_padding(self):
    eos_id = int(self.check_all_agree(eos_id=-1)[0, 2])
    out = self.check_all_agree(eos_id=eos_id)
    first = list(out[0]).index(eos_id)
    self.assertLessEqual(first, 2)
    np.testing.assert_array_equal(out[0, first + 1:], 0)

  def test_too_long_a_continuation_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, 'exceeds the model.s max_len=32'):
      decoding.generate(self.model, self.variables, self.prompts, self.lengths, 26, eos_id=1)
    with self.assertRaisesRegex(MuJaxError, 'Prompt lengths'):
      decoding.generate(self.model, self.variables, self.prompts, self.lengths.at[1].set(0), 3,
                        eos_id=1)


if __name__ == '__main__':
  absltest.main()
