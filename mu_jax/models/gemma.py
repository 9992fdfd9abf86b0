"""Gemma language models from the `gemma` package (extra `mu_jax[gemma]`) as mu_jax `Model`s.

Why an adapter: mu_jax's language-model Task sees a model as pure functions over
int32 tokens [N, L] (BOS + prompt + answer + EOS, right-padded with 0) returning
float32 logits [N, L, V]. `gm.nn.Transformer` already takes such rows: it builds
its attention mask from `tokens != 0` (Gemma's pad id is 0) combined with a
causal mask, and positions from that mask, so right-padded rows need no extra
input and a position never sees later (or padded) tokens. Gemma has no dropout,
so `train` is ignored. The greedy decoder's recompute fallback serves generation
(no KV cache is registered).

Parameters are float32 unless `dtype` says otherwise (Gemma's own default is
bfloat16); a loaded checkpoint keeps the dtype it was saved in.
"""
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mu_jax.errors import MuJaxError
from mu_jax.models import Model

# The Gemma tokenizer classes by Gemma version.
_TOKENIZERS = {2: 'Gemma2Tokenizer', 3: 'Gemma3Tokenizer'}


def require_gemma():
  """The package's `gm` namespace, or a MuJaxError naming the extra when it is absent."""
  try:
    from gemma import gm   # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise MuJaxError(f'Gemma models need the gemma package ({e}); install it with '
                     'pip install "mu_jax[gemma]".') from e
  return gm


def tiny_config(vocab_size: int = 64):
  """A 2-layer Gemma 3 style config (a local sliding-window then a global attention
  layer, grouped-query attention, QK norm) small enough for CPU tests with random weights."""
  config = require_gemma().nn.config
  kinds = (config.AttentionType.LOCAL_SLIDING, config.AttentionType.GLOBAL)
  return config.TransformerConfig(
      num_embed=vocab_size, embed_dim=32, hidden_dim=64, num_heads=2, head_dim=16,
      num_kv_heads=1, final_logit_softcap=None, use_post_attn_norm=True,
      use_post_ffw_norm=True, use_qk_norm=True, sliding_window_size=4,
      attention_types=config.make_attention_layers_types(kinds, num_layers=2))


def gemma_module(config_or_name, dtype: str = 'float32'):
  """The text-only `gm.nn.Transformer` of a TransformerConfig or of a Gemma class name
  in `gm.nn` (e.g. 'Gemma3_270M'), with parameters of `dtype`."""
  gm = require_gemma()
  if isinstance(config_or_name, gm.nn.config.TransformerConfig):
    return gm.nn.Transformer(config=config_or_name, dtype=jnp.dtype(dtype))
  names = sorted(n for n in dir(gm.nn) if n.startswith('Gemma')
                 and issubclass(getattr(gm.nn, n), gm.nn.Transformer))
  if config_or_name not in names:
    raise MuJaxError(f'{config_or_name!r} is neither a gemma TransformerConfig nor a Gemma '
                     f'model name; use one of {", ".join(names)}.')
  cls = getattr(gm.nn, config_or_name)
  # Multimodal Gemma 3 classes drop their vision encoder with text_only.
  extra = {'text_only': True} if 'text_only' in cls.__dataclass_fields__ else {}
  return cls(dtype=jnp.dtype(dtype), **extra)


def gemma_model(config_or_name, dtype: str = 'float32') -> Model:
  """A Gemma transformer as the language-model `Model` contract (module docstring).

  init(rng, sample_x [1, L]) -> {'params': ...} with random weights;
  apply(variables, x [N, L], train) -> (float32 logits [N, L, V], {});
  penultimate(variables, x) -> float32 final-normed hidden states [N, L, D].
  Tokens of any numeric dtype are cast to int32 (the base Task inits with float zeros).
  """
  module = gemma_module(config_or_name, dtype)
  name = _label(config_or_name)

  def init(rng, sample_x):
    return {'params': module.init(rng, sample_x.astype(jnp.int32))['params']}

  def apply(variables, x, train):
    del train  # Gemma has no dropout or batch statistics.
    return module.apply(variables, x.astype(jnp.int32)).logits.astype(jnp.float32), {}

  def penultimate(variables, x):
    out = module.apply(variables, x.astype(jnp.int32), return_hidden_states=True)
    return out.hidden_states.astype(jnp.float32)

  return Model(name, init, apply, penultimate, None)


def _label(config_or_name) -> str:
  return config_or_name if isinstance(config_or_name, str) else 'gemma'


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def load_gemma_params(path: str, config_or_name):
  """The params of the Gemma checkpoint directory `path` (local only: nothing is
  downloaded), checked against the shapes of `config_or_name`'s text-only model; use
  them as {'params': params} with `gemma_model(config_or_name)`.

  Restored with orbax's StandardCheckpointer (the format `gm.ckpts.save_params`
  writes, nested like `init`'s params) because `gm.ckpts` itself fails to import
  with jax 0.10 (see docs/gemma.md); shapes are checked from the metadata first.
  """
  if not os.path.isdir(path):
    raise MuJaxError(f'No Gemma checkpoint directory at {path}; give the local directory of '
                     'a downloaded checkpoint (mu_jax never downloads one).')
  module = gemma_module(config_or_name)
  sample = jnp.zeros((1, 1), jnp.int32)
  expected = _shapes(jax.eval_shape(module.init, jax.random.key(0), sample)['params'])
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(path).item_metadata.tree
  found = _shapes(stored)
  if found != expected:
    diff = sorted(set(found.items()) ^ set(expected.items()))[0][0]
    raise MuJaxError(f'The checkpoint at {path} does not fit model {_label(config_or_name)!r} '
                     f'(first differing parameter: {diff}, {found.get(diff)} in the '
                     f'checkpoint, {expected.get(diff)} in the model).')
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), stored)
  return checkpointer.restore(path, target)


class GemmaTokenizer:
  """The gemma package's SentencePiece tokenizer over a local model file, with mu_jax's
  tokenizer interface (encode without BOS/EOS, decode skipping padding, special ids)."""

  def __init__(self, path: str, version: int = 3):
    if not os.path.isfile(path):
      raise MuJaxError(f'No tokenizer model file at {path}; give the local path of the '
                       'Gemma tokenizer.model (mu_jax never downloads one).')
    if version not in _TOKENIZERS:
      raise MuJaxError(f'Gemma tokenizer version {version!r} is not supported; '
                       f'use one of {sorted(_TOKENIZERS)}.')
    self._tokenizer = getattr(require_gemma().text, _TOKENIZERS[version])(path=path)
    try:
      self.vocab_size = self._tokenizer.vocab_size
    except (OSError, RuntimeError) as e:
      raise MuJaxError(f'Cannot read a SentencePiece model from {path} ({e}).') from e
    special = self._tokenizer.special_tokens
    self.pad_id, self.bos_id, self.eos_id = int(special.PAD), int(special.BOS), int(special.EOS)
    self.path = path

  def encode(self, text: str) -> list[int]:
    """The ids of `text`, without BOS or EOS."""
    return self._tokenizer.encode(text)

  def decode(self, ids) -> str:
    """The text of `ids`, skipping padding."""
    return self._tokenizer.decode([int(i) for i in ids if int(i) != self.pad_id])


def check_vocab(tokenizer, config_or_name) -> None:
  """Refuses a tokenizer whose vocabulary size is not the model's embedding count."""
  vocab = gemma_module(config_or_name).config.num_embed
  if tokenizer.vocab_size != vocab:
    raise MuJaxError(f'The tokenizer at {tokenizer.path} has {tokenizer.vocab_size} tokens '
                     f'but model {_label(config_or_name)!r} embeds {vocab}; use the matching pair.')
