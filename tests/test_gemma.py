"""The Gemma adapter (mu_jax.models.gemma); all but the missing-extra test need the extra."""
import importlib.util
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from mu_jax.errors import MuJaxError
from mu_jax.models import gemma

needs_gemma = pytest.mark.skipif(importlib.util.find_spec('gemma') is None,
                                 reason='the gemma extra is not installed')
# BOS=2, a prompt and answer, EOS=1, right padding 0 (Gemma's special ids).
TOKENS = jnp.array([[2, 10, 11, 12, 13, 1, 0, 0], [2, 20, 21, 1, 0, 0, 0, 0]], jnp.int32)


@pytest.mark.skipif(importlib.util.find_spec('gemma') is not None,
                    reason='the gemma extra is installed')
def test_missing_extra_names_it():
  with pytest.raises(MuJaxError, match=r'pip install "mu_jax\[gemma\]"'):
    gemma.gemma_model('Gemma3_270M')


@pytest.fixture(scope='module')
def tiny():
  pytest.importorskip('gemma')
  model = gemma.gemma_model(gemma.tiny_config())
  return model, model.init(jax.random.key(0), TOKENS[:1])


@needs_gemma
def test_logits_equal_the_package_call(tiny):
  model, variables = tiny
  logits, state = model.apply(variables, TOKENS, False)
  own = gemma.gemma_module(gemma.tiny_config()).apply(variables, TOKENS).logits
  assert state == {} and logits.dtype == jnp.float32 and logits.shape == (2, 8, 64)
  np.testing.assert_array_equal(logits, own)
  assert model.penultimate(variables, TOKENS).shape == (2, 8, 32)


@needs_gemma
def test_right_padding_is_causal(tiny):
  model, variables = tiny
  tail = TOKENS.at[:, 6:].set(jnp.array([[30, 31], [32, 33]]))
  base, _ = model.apply(variables, TOKENS, False)
  changed, _ = model.apply(variables, tail, False)
  np.testing.assert_allclose(base[:, :6], changed[:, :6], atol=1e-5)
  assert not np.allclose(base[:, 6:], changed[:, 6:])


@needs_gemma
def test_next_token_training_lowers_the_loss(tiny):
  model, variables = tiny
  mask = (TOKENS[:, 1:] != 0).astype(jnp.float32)

  def loss(params):
    logits, _ = model.apply({'params': params}, TOKENS[:, :-1], True)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:])
    return (nll * mask).sum() / mask.sum()

  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  params = variables['params']
  opt_state = opt.init(params)
  first = None
  for _ in range(5):
    params, opt_state, value = step(params, opt_state)
    first = value if first is None else first
  assert loss(params) < first


@needs_gemma
def test_checkpoint_round_trip_and_refusals(tiny, tmp_path):
  _, variables = tiny
  with pytest.raises(MuJaxError, match='No Gemma checkpoint directory'):
    gemma.load_gemma_params(str(tmp_path / 'missing'), gemma.tiny_config())
  path = str(tmp_path / 'ckpt')
  checkpointer = ocp.StandardCheckpointer()   # what gm.ckpts.save_params does
  checkpointer.save(path, variables['params'])
  checkpointer.wait_until_finished()
  loaded = gemma.load_gemma_params(path, gemma.tiny_config())
  jax.tree.map(np.testing.assert_array_equal, loaded, variables['params'])
  with pytest.raises(MuJaxError, match='does not fit model'):
    gemma.load_gemma_params(path, gemma.tiny_config(vocab_size=96))


@needs_gemma
def test_tokenizer_adapter_and_vocab_check(tmp_path):
  spm = pytest.importorskip('sentencepiece')
  model = io.BytesIO()
  texts = ['the cat sat on the mat', 'a dog ran in the park', 'who wrote the book'] * 20
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=40, model_type='bpe',
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, num_threads=1, minloglevel=2)
  path = tmp_path / 'tokenizer.model'
  path.write_bytes(model.getvalue())
  tokenizer = gemma.GemmaTokenizer(str(path))
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 1, 2)
  ids = tokenizer.encode('the cat ran')
  assert tokenizer.decode(ids + [0, 0]) == 'the cat ran' and 2 not in ids
  gemma.check_vocab(tokenizer, gemma.tiny_config(vocab_size=40))
  with pytest.raises(MuJaxError, match='has 40 tokens'):
    gemma.check_vocab(tokenizer, gemma.tiny_config())
  with pytest.raises(MuJaxError, match='No tokenizer model file'):
    gemma.GemmaTokenizer(str(tmp_path / 'missing.model'))


@needs_gemma
def test_the_lm_benchmark_runs_on_a_gemma_model(tmp_path):
  """The generated benchmark, tokenised with a Gemma-style tokenizer, fine-tunes and scores
  a (tiny, random) Gemma through the same task and suite as the small transformer."""
  from mu_jax.data import text
  from mu_jax.experiments.lm import benchmark, suite
  from tests import helpers
  spm = pytest.importorskip('sentencepiece')
  config = helpers.load_config('tofu_tiny', 'epochs=1')
  corpus = text.generate_corpus(seed=config.data.corpus_seed, num_authors=config.data.num_authors,
                                qa_per_author=config.data.qa_per_author,
                                holdout_authors=config.data.holdout_authors)
  model_file = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus.texts()), model_writer=model_file, vocab_size=512,
      model_type='bpe', pad_id=0, eos_id=1, bos_id=2, unk_id=3, num_threads=1, minloglevel=2)
  path = tmp_path / 'tokenizer.model'
  path.write_bytes(model_file.getvalue())
  tokenizer = gemma.GemmaTokenizer(str(path))
  model = gemma.gemma_model(gemma.tiny_config(vocab_size=512))
  variables = model.init(jax.random.key(0), TOKENS[:1])
  setting = benchmark.prepare_lm_setting(config, str(tmp_path / 'w'), model=model,
                                         context=256, tokenizer=tokenizer, base=variables)
  assert not (tmp_path / 'w' / 'models' / 'base').exists()   # no pre-training here
  data = setting.data
  measured = [suite.measure(setting.task, m.variables, data.suite, tokenizer, batch_size=32,
                            mesh=setting.mesh, k=0.4) for m in (setting.target, setting.retain[0])]
  row = suite.score(measured[0], data.suite, tokenizer, oracle=measured[1], reference=None,
                    k=0.4)
  assert 0.0 <= row['forget quality'] <= 1.0 and 'AUC Min-K++' in row
  with pytest.raises(MuJaxError, match='predicts 64 token ids'):
    benchmark.prepare_lm_setting(config, str(tmp_path / 'x'),
                                 model=gemma.gemma_model(gemma.tiny_config()), context=256,
                                 tokenizer=tokenizer, base=variables)
