"""ECO (embedding-corrupted prompts): the classifier's features and the corruption by hand,
determinism given the seed, untouched weights, prefill-only corruption in decoding, and the
zeroth-order search on a closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.methods import Context, create_method, run_method
from mu_jax.methods.eco import (
    Corruption, corrupter, prompt_features, prompt_lengths, prompt_noise,
    zeroth_order)
from mu_jax.models import create_model, decoding
from mu_jax.tasks import create_task

VOCAB, LENGTH, PROMPT = 16, 12, 4
TASK = create_task('language_model', create_model('transformer', VOCAB, size='tiny',
                                                  max_len=LENGTH, num_layers=1),
                   (LENGTH,), VOCAB)
VARIABLES = TASK.init(jax.random.PRNGKey(0))
MARKER = VOCAB - 1   # only forget prompts hold this token
logits_of = jax.jit(lambda task, variables, batch: task.apply(variables, batch, False)[0],
                    static_argnums=0)


def rows(n: int, seed: int, forget: bool) -> Examples:
  """Prompts of PROMPT tokens (a forget prompt holds MARKER at position 1), answers after."""
  rng = np.random.default_rng(seed)
  x = rng.integers(1, MARKER, (n, LENGTH)).astype(np.int32)
  if forget:
    x[:, 1] = MARKER
  m = np.zeros((n, LENGTH), np.float32)
  m[:, PROMPT:] = 1
  return Examples(x=x, m=m)


def context(seed: int = 3) -> Context:
  return Context(TASK, rows(8, 0, True), rows(24, 1, False), sharding.make_mesh('data:1'),
                 seed=seed, holdout=rows(8, 2, False))


def eco_vars(flag_weight: float, sigma: float, seed: int = 0) -> dict:
  """An 'eco' collection whose classifier puts `flag_weight` on every bucket (bias −5)."""
  return {'w': jnp.full(64, flag_weight), 'b': jnp.float32(-5.0), 'sigma': jnp.float32(sigma),
          'key': jax.random.key_data(jax.random.key(seed))}


def test_prompt_lengths_are_the_first_scored_position_or_the_whole_row():
  m = np.array([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], np.float32)
  np.testing.assert_array_equal(prompt_lengths({'m': m}), [2, 4, 0])


def test_prompt_features_count_hashed_unigrams_and_bigrams_of_the_prompt_only():
  x = jnp.array([[3, 5, 3, 9]], jnp.int32)
  got = np.asarray(prompt_features(x, jnp.array([3]), 1 << 20))
  h = lambda a: (a * 2654435761) % (1 << 32)
  uni = [h(t) % (1 << 20) for t in (3, 5, 3)]
  bi = [((h(a) ^ ((b * 40503) % (1 << 32))) % (1 << 20)) for a, b in ((3, 5), (5, 3))]
  expected = np.zeros(1 << 20)
  for b in uni + bi:
    expected[b] += 1
  np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), rtol=1e-6)


def test_corruption_adds_sigma_noise_to_flagged_prompts_but_their_last_token_only():
  settings = Corruption(dims=3, buckets=64, threshold=0.99)
  x = jnp.asarray(rows(2, 5, False)['x'])
  lengths = jnp.array([PROMPT, PROMPT])
  embeddings = jax.random.normal(jax.random.key(1), (2, LENGTH, 8))
  corrupt = jax.jit(lambda eco, e: corrupter(settings, eco, x, lengths)(e))
  clean = corrupt(eco_vars(0.0, 0.5), embeddings)   # p = σ(−5): none flagged
  np.testing.assert_array_equal(clean, embeddings)
  eco = eco_vars(10.0, 0.5)      # σ(10·‖f‖₁/‖f‖₂ − 5) > 0.99: every prompt flagged
  changed = np.asarray(corrupt(eco, embeddings) - embeddings)
  noise = np.asarray(prompt_noise(jax.random.wrap_key_data(eco['key']), x, lengths, LENGTH, 3))
  np.testing.assert_allclose(changed[:, :PROMPT - 1, :3], 0.5 * noise[:, :PROMPT - 1],
                             rtol=1e-6)
  assert not changed[:, PROMPT - 1:].any() and not changed[..., 3:].any()


def test_prompt_noise_depends_on_the_prompt_only():
  x = jnp.asarray(rows(2, 5, False)['x'])
  other = x.at[:, PROMPT:].set(1)     # same prompts, other answers
  key = jax.random.key(0)
  a = prompt_noise(key, x, jnp.array([PROMPT] * 2), LENGTH, 4)
  np.testing.assert_array_equal(a, prompt_noise(key, other, jnp.array([PROMPT] * 2), LENGTH, 4))
  assert not np.allclose(a[0], a[1])   # two prompts, two draws


def test_zeroth_order_takes_the_official_central_difference_step_on_log_sigma():
  f = lambda s: (np.log(s) - np.log(2.0)) ** 2
  sigma, trace = zeroth_order(f, 1.0, steps=2, lr=0.25, eps=0.1, tolerance=0.0)
  g = (f(np.exp(0.1)) - f(np.exp(-0.1))) / 0.2
  assert trace[0] == {'sigma': 1.0, 'f_forward': f(np.exp(0.1)), 'f_backward': f(np.exp(-0.1))}
  assert trace[1]['sigma'] == pytest.approx(np.exp(-0.25 * g), rel=1e-12)
  assert sigma == pytest.approx(np.exp(-0.25 * g + 0.1))   # the best probe seen
  best, trace = zeroth_order(f, 1.0, steps=40, lr=0.5, eps=0.01, tolerance=2e-4)
  assert best == pytest.approx(2.0, rel=0.011) and len(trace) < 40


@pytest.fixture(scope='module')
def unlearned():
  return run_method(create_method('eco', batch_size=8), VARIABLES, context(), 'eco')


def test_eco_flags_the_forget_prompts_only_and_leaves_the_weights_untouched(unlearned):
  info = unlearned.info
  assert info['flagged forget'] == 1.0 and info['flagged retain'] == 0.0
  chex_equal = jax.tree.map(np.array_equal, VARIABLES['params'],
                            unlearned.variables['params'])
  assert all(jax.tree.leaves(chex_equal))
  # The searched σ moved the forget loss toward the target.
  assert abs(info['forget_nll'] - info['target_nll']) < abs(
      info['forget_nll_clean'] - info['target_nll'])


def test_eco_changes_flagged_rows_only(unlearned):
  task, variables = unlearned.task, unlearned.variables
  # The request's own rows: the classifier flags every forget prompt and no retain prompt.
  for examples, changed in ((context().forget.take(np.arange(4)), True),
                            (context().retain.take(np.arange(4)), False)):
    batch = {**examples.arrays(), 'w': np.ones(4, np.float32)}
    eco_logits = logits_of(task, variables, batch)
    plain = logits_of(TASK, VARIABLES, batch)
    assert np.allclose(eco_logits, plain) != changed


def test_eco_is_deterministic_given_the_seed(unlearned):
  again = run_method(create_method('eco', batch_size=8), VARIABLES, context(), 'eco')
  same = jax.tree.map(np.array_equal, unlearned.variables['eco'], again.variables['eco'])
  assert all(jax.tree.leaves(same))
  other = run_method(create_method('eco', batch_size=8), VARIABLES, context(seed=4), 'eco')
  batch = {**context().forget.take(np.arange(2)).arrays(), 'w': np.ones(2, np.float32)}
  assert not np.allclose(logits_of(unlearned.task, unlearned.variables, batch),
                         logits_of(other.task, other.variables, batch))


def test_decoding_corrupts_the_prefill_only(unlearned):
  """Greedy tokens through ECO's KV-cache decoder = argmax of the corrupted forward pass over
  the prompt and the tokens so far, these scored (so clean)."""
  task, variables = unlearned.task, unlearned.variables
  prompts = rows(3, 9, True)['x'][:, :PROMPT]
  steps = 5
  got = np.asarray(decoding.generate(decoding.task_model(task), variables, prompts,
                                     np.full(3, PROMPT), steps, eos_id=-1, pad_id=0))
  tokens = np.concatenate([prompts, np.zeros((3, steps), np.int32)], 1)
  for t in range(steps):
    m = np.zeros_like(tokens, np.float32)
    m[:, PROMPT:] = 1
    logits = logits_of(task, variables, {'x': tokens, 'm': m})
    tokens[:, PROMPT + t] = np.argmax(logits[:, PROMPT + t - 1], -1)
  np.testing.assert_array_equal(got, tokens[:, PROMPT:])


def test_eco_refusals():
  with pytest.raises(MuJaxError, match='held-out rows'):
    run_method(create_method('eco'), VARIABLES, context()._replace(holdout=None), 'eco')
  plain = TASK.model._replace(embedded=None)
  with pytest.raises(MuJaxError, match='Model.embedded'):
    run_method(create_method('eco'), VARIABLES,
               context()._replace(task=TASK.__class__(plain, (LENGTH,), vocab_size=VOCAB)),
               'eco')
  with pytest.raises(MuJaxError, match='threshold'):
    create_method('eco', threshold=1.0)
