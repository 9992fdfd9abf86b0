"""A decoder-only (Llama-style) transformer language model, with a KV cache for decoding.

Tokens are embedded, go through `num_layers` pre-norm blocks

  x = x + attn(rms_norm(x))     causal multi-head self-attention, RoPE on q and k
  x = x + mlp(rms_norm(x))      SwiGLU: down(silu(gate(x)) * up(x))

and a final RMSNorm, then an output projection: the embedding transposed
(`tied_embeddings`) or a Dense 'head'. No biases, no dropout (as Llama).
Parameters are float32; `dtype` is the compute dtype; logits come back float32.

Parameter tree (kernels are [in, out], so a LoRA adapter can target any of them):

  params['embed']['embedding']                      [vocab_size, d_model]
  params['block_<i>']['attn_norm']['scale']         [d_model]
  params['block_<i>']['attn'][q|k|v|o]['kernel']    [d_model, d_model]
  params['block_<i>']['mlp_norm']['scale']          [d_model]
  params['block_<i>']['mlp'][gate|up]['kernel']     [d_model, d_ff]
  params['block_<i>']['mlp']['down']['kernel']      [d_ff, d_model]
  params['norm']['scale']                           [d_model]
  params['head']['kernel']                          [d_model, vocab_size]  (untied only)

Decoding (`mu_jax.models.decoding`) uses `decoder`: a prefill over right-padded
prompts fills a cache of per-layer keys and values [N, size, heads, head_dim];
each step then writes one token's key and value at its row's own index (the
row's length so far) and attends to that row's first index + 1 positions.
"""
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
from jax.custom_derivatives import SymbolicZero
import jax.numpy as jnp
import numpy as np

from mu_jax.errors import MuJaxError
from mu_jax.models import decoding

# Size presets (this library's choice: a test-sized model and CPU/1-GPU sized
# ones; d_ff = 3 d_model, near Llama's 8/3 d_model, and divisible for sharding).
SIZES = {
    'tiny': dict(d_model=32, num_layers=2, num_heads=2, d_ff=64),
    'small': dict(d_model=256, num_layers=4, num_heads=4, d_ff=768),
    'medium': dict(d_model=512, num_layers=8, num_heads=8, d_ff=1536),
    'large': dict(d_model=1024, num_layers=16, num_heads=16, d_ff=3072),
}
DTYPES = ('float32', 'bfloat16')
# GPT-2 and Llama initialise embeddings and kernels with normal(0.02).
_INIT = nn.initializers.normal(0.02)
# Llama 1's norm_eps.
_NORM_EPS = 1e-6

Cache = list[dict[str, jax.Array]]   # per layer {'k', 'v'}: [N, size, heads, head_dim]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int
  d_model: int = 256           # SIZES['small'], this library's default size
  num_layers: int = 4          # SIZES['small']
  num_heads: int = 4           # SIZES['small']
  d_ff: int = 768              # SIZES['small']
  max_len: int = 512           # this library's choice: a short context, cheap on one device
  # This library's choice: keeps its convention that params['head'] is the last
  # layer (Llama also unties; GPT-2 ties).
  tied_embeddings: bool = False
  dtype: str = 'float32'       # this library's choice: exact; 'bfloat16' for accelerators
  rope_base: float = 10000.0   # RoFormer / Llama

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)


def make_config(vocab_size: int, size: str = 'small',   # this library's default size
                **overrides) -> TransformerConfig:
  """The config of preset `size` with `overrides` (any TransformerConfig field), checked."""
  if size not in SIZES:
    raise MuJaxError(f'Unknown transformer size {size!r}; use one of {", ".join(SIZES)}.')
  fields = {f.name for f in dataclasses.fields(TransformerConfig)} - {'vocab_size'}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise MuJaxError(f'Transformer options {unknown} are unknown; use only {sorted(fields)}.')
  cfg = TransformerConfig(vocab_size=vocab_size, **{**SIZES[size], **overrides})
  counts = ('vocab_size', 'd_model', 'num_layers', 'num_heads', 'd_ff', 'max_len')
  if any(not isinstance(getattr(cfg, k), int) or getattr(cfg, k) < 1 for k in counts):
    raise MuJaxError(f'Transformer {", ".join(counts)} must be positive integers; got {cfg}.')
  if cfg.d_model % cfg.num_heads or cfg.head_dim % 2:
    raise MuJaxError(f'd_model={cfg.d_model} must split into num_heads={cfg.num_heads} heads '
                     'of an even size (RoPE rotates pairs); change either.')
  if cfg.dtype not in DTYPES:
    raise MuJaxError(f'Transformer dtype {cfg.dtype!r} is not supported; use one of {DTYPES}.')
  return cfg


@functools.lru_cache(maxsize=None)
def _rope_table(size: int, half: int, base: float) -> np.ndarray:
  """cos and sin of position * base^(-i/half), positions < size, i < half: [2, size, half]."""
  angle = np.arange(size)[:, None] * base ** (-np.arange(half) / half)
  table = np.stack([np.cos(angle), np.sin(angle)]).astype(np.float32)
  table.flags.writeable = False   # shared by every call
  return table


def rope(x: jax.Array, positions: jax.Array, base: float, size: int) -> jax.Array:
  """Rotary position embedding (RoFormer) of x [N, T, heads, D] at positions [N|1, T] < size.

  Pair (i, i + D/2) (GPT-NeoX's half-split layout) turns by angle position *
  base^(-2i/D), so the dot product of a rotated query and key depends on their
  positions only through the offset. The cosines and sines of all `size`
  positions are computed once on the host (float64, then float32) and gathered:
  computed in the graph, XLA:CPU evaluates them again for every element of each
  fused product, a scalar libm call per element (a few percent of the default
  LM's training step). The halves are swapped by a flip of a [2, D/2] view, which
  XLA fuses into the products; a split and a concatenation cost the step 2% more.
  """
  half = x.shape[-1] // 2
  cos, sin = jnp.take(_rope_table(size, half, base), positions, axis=1)   # [N|1, T, half] each
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], 2, half)        # [..., (x1, x2), half]
  signed_sin = jnp.stack([-sin, sin], axis=-2)[..., None, :, :]        # [N|1, T, 1, 2, half]
  out = pairs * cos[..., None, None, :] + jnp.flip(pairs, axis=-2) * signed_sin
  return out.reshape(x.shape).astype(x.dtype)                          # (x1 c - x2 s, x2 c + x1 s)


def _rows_times(rows, kernel, precision, preferred_element_type):
  """rows [R, in] @ kernel [in, out]."""
  return jax.lax.dot_general(rows, kernel, (((1,), (0,)), ((), ())), precision=precision,
                             preferred_element_type=preferred_element_type)


# `_rows_times` whose kernel tangent is taken against the rows transposed once
# into [in, R] (see `rows_dot_general`).
_rows_product = jax.custom_jvp(_rows_times, nondiff_argnums=(2, 3))


@functools.partial(_rows_product.defjvp, symbolic_zeros=True)
def _rows_product_jvp(precision, preferred_element_type, primals, tangents):
  rows, kernel = primals
  d_rows, d_kernel = tangents
  out = _rows_times(rows, kernel, precision, preferred_element_type)
  terms = []
  if not isinstance(d_rows, SymbolicZero):
    terms.append(_rows_times(d_rows, kernel, precision, preferred_element_type))
  if not isinstance(d_kernel, SymbolicZero):
    # The barrier keeps XLA from folding the transpose back into the product.
    columns = jax.lax.optimization_barrier(rows.T)                     # [in, R]
    terms.append(jax.lax.dot_general(columns, d_kernel, (((0,), (0,)), ((), ())),
                                     precision=precision,
                                     preferred_element_type=preferred_element_type))
  return out, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


def rows_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """`lax.dot_general` for a Dense layer, with the inputs [..., in] flattened to rows [R, in].

  Same values and derivatives. Autodiff then writes the kernel gradient as one
  [in, R] x [R, out] product; for the unflattened [N, T, in] inputs it contracts
  N and T, which XLA:CPU lays out by copying the output gradient transposed
  inside the elementwise fusion that makes it (a third of the default LM's
  training step). On a CPU, the rows are also transposed once into [in, R]
  for that product (`_rows_product`): XLA:CPU runs a product whose left operand
  is contracted along its leading dimension in a slower kernel (Eigen's, about
  two thirds of the rate); with the copy the step takes about 4% less time. Other
  platforms read transposed operands at full speed and get the plain product.
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  if (lhs.ndim > 2 and tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,)
      and not lhs_batch and not rhs_batch and rhs.ndim == 2):
    product = _rows_product if jax.default_backend() == 'cpu' else _rows_times
    out = product(lhs.reshape(-1, lhs.shape[-1]), rhs, precision, preferred_element_type)
    return out.reshape(*lhs.shape[:-1], rhs.shape[1])
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type)


def _dense(features: int, cfg: TransformerConfig) -> nn.Dense:
  return nn.Dense(features, use_bias=False, kernel_init=_INIT, dtype=cfg.compute_dtype,
                  dot_general=rows_dot_general)


def _norm(cfg: TransformerConfig) -> nn.RMSNorm:
  return nn.RMSNorm(epsilon=_NORM_EPS, dtype=cfg.compute_dtype)


def _attention(q, k, v, mask):
  """softmax(q·kᵀ/√D, masked)·v of q [N, T, H, D] and k, v [N, S, H, D] -> [N, T, H, D].

  `jax.nn.dot_product_attention`'s values (its XLA path). Written out so that the
  heads move ahead of the positions once per input, and the scale multiplies q
  (T·D numbers) instead of the scores (T·S): 4% of the default LM's training step
  on a CPU, where XLA otherwise transposes inside each product's fusion.
  """
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
  s = jnp.einsum('nhtd,nhsd->nhts', q, k, preferred_element_type=jnp.float32)
  s = jnp.where(mask, s, jnp.finfo(jnp.float32).min)
  p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
  return jnp.einsum('nhts,nhsd->nhtd', p, v).transpose(0, 2, 1, 3)


class Attention(nn.Module):
  """Causal multi-head self-attention with RoPE, over the inputs or a KV cache."""
  cfg: TransformerConfig

  def setup(self):
    self.q, self.k, self.v, self.o = (_dense(self.cfg.d_model, self.cfg) for _ in range(4))

  def __call__(self, x, positions, cache=None, index=None):
    """x [N, T, d_model] -> (y [N, T, d_model], {'k', 'v'}).

    Without a cache, T tokens attend causally to each other, and the keys and
    values returned are theirs. With one (T = 1), the token's key and value
    are written at each row's `index` [N] and it attends to positions ≤ index.
    """
    cfg = self.cfg
    n, t, _ = x.shape
    heads = lambda y: y.reshape(n, t, cfg.num_heads, cfg.head_dim)
    q = rope(heads(self.q(x)), positions, cfg.rope_base, cfg.max_len)
    k = rope(heads(self.k(x)), positions, cfg.rope_base, cfg.max_len)
    v = heads(self.v(x))
    if cache is None:
      mask = jnp.tril(jnp.ones((t, t), bool))
    else:
      slots = jnp.arange(cache['k'].shape[1])
      write = (slots == index[:, None])[:, :, None, None]
      k, v = jnp.where(write, k, cache['k']), jnp.where(write, v, cache['v'])
      mask = (slots <= index[:, None])[:, None, None, :]   # [N, 1, 1, size]
    y = _attention(q, k, v, mask)
    return self.o(y.reshape(n, t, cfg.d_model)), {'k': k, 'v': v}


class Mlp(nn.Module):
  """SwiGLU (Shazeer 2020, as in Llama): down(silu(gate(x)) * up(x))."""
  cfg: TransformerConfig

  def setup(self):
    self.gate, self.up = _dense(self.cfg.d_ff, self.cfg), _dense(self.cfg.d_ff, self.cfg)
    self.down = _dense(self.cfg.d_model, self.cfg)

  def __call__(self, x):
    return self.down(nn.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
  """Pre-norm residual attention, then pre-norm residual SwiGLU MLP."""
  cfg: TransformerConfig

  def setup(self):
    self.attn_norm, self.attn = _norm(self.cfg), Attention(self.cfg)
    self.mlp_norm, self.mlp = _norm(self.cfg), Mlp(self.cfg)

  def __call__(self, x, positions, cache=None, index=None):
    y, kv = self.attn(self.attn_norm(x), positions, cache, index)
    x = x + y
    return x + self.mlp(self.mlp_norm(x)), kv


class Transformer(nn.Module):
  """The language model; __call__(tokens [N, L]) -> float32 logits [N, L, vocab_size]."""
  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=_INIT,
                          dtype=cfg.compute_dtype)
    self.block = [Block(cfg) for _ in range(cfg.num_layers)]   # named block_0, block_1, ...
    self.norm = _norm(cfg)
    if not cfg.tied_embeddings:
      self.head = _dense(cfg.vocab_size, cfg)

  def hidden(self, tokens, positions, cache: Cache | None = None, index=None, corrupt=None):
    """(final-norm states [N, T, d_model] in the compute dtype, per-layer keys and values).

    Tokens of any numeric dtype are cast to int32 (the base Task inits with float zeros).
    `corrupt` (embeddings [N, T, d_model] -> the same) edits the input embeddings first
    (ECO's embedding-corrupted prompts).
    """
    if tokens.shape[1] > self.cfg.max_len:
      raise MuJaxError(f'Token sequences of length {tokens.shape[1]} exceed the transformer\'s '
                       f'max_len={self.cfg.max_len}; shorten them or raise max_len.')
    x = self.embed(tokens.astype(jnp.int32))
    if corrupt is not None:
      x = corrupt(x)
    kvs = []
    for i, block in enumerate(self.block):
      x, kv = block(x, positions, None if cache is None else cache[i], index)
      kvs.append(kv)
    return self.norm(x), kvs

  def logits(self, h):
    """float32 logits of final-norm states h [..., d_model]."""
    out = self.embed.attend(h) if self.cfg.tied_embeddings else self.head(h)
    return out.astype(jnp.float32)

  def __call__(self, tokens, corrupt=None):
    return self.logits(self.hidden(tokens, jnp.arange(tokens.shape[1])[None],
                                   corrupt=corrupt)[0])

  def prefill(self, prompts, lengths, size: int, corrupt=None):
    """(float32 logits [N, vocab] at each row's last prompt token, cache of `size` slots)."""
    h, kvs = self.hidden(prompts, jnp.arange(prompts.shape[1])[None], corrupt=corrupt)
    last = jnp.take_along_axis(h, (lengths - 1)[:, None, None], axis=1)[:, 0]
    pad = ((0, 0), (0, size - prompts.shape[1]), (0, 0), (0, 0))
    return self.logits(last), [jax.tree.map(lambda a: jnp.pad(a, pad), kv) for kv in kvs]

  def step(self, cache: Cache, tokens, index):
    """Feeds tokens [N] at positions index [N]: (float32 logits [N, vocab], cache)."""
    h, cache = self.hidden(tokens[:, None], index[:, None], cache, index)
    return self.logits(h[:, 0]), cache


def model_functions(cfg: TransformerConfig) -> tuple:
  """(init, apply, penultimate, activations, embedded) of the `Model` contract; its decoder
  is registered with `mu_jax.models.decoding` under `apply`."""
  module = Transformer(cfg)

  def init(rng, sample_x):
    return module.init(rng, sample_x)

  def apply(variables, x, train):
    del train  # No dropout or batch statistics.
    return module.apply(variables, x), {}

  def penultimate(variables, x):
    h, _ = module.apply(variables, x, jnp.arange(x.shape[1])[None], method=Transformer.hidden)
    return h.astype(jnp.float32)

  def activations(variables, x, train):
    """(logits, {}, [the residual stream after each block, [N, L, d_model]])."""
    del train
    is_block = lambda m, method: isinstance(m, Block) and method == '__call__'
    logits, state = module.apply(variables, x, capture_intermediates=is_block,
                                 mutable=['intermediates'])
    taps = state['intermediates']
    return logits, {}, [taps[f'block_{i}']['__call__'][0][0] for i in range(cfg.num_layers)]

  def embedded(variables, x, train, corrupt):
    del train
    return module.apply(variables, x, corrupt), {}

  decoding.register_decoder(apply, decoder(module))
  return init, apply, penultimate, activations, embedded


def decoder(module: Transformer) -> decoding.Decoder:
  """The KV-cache prefill and step functions of `module` (see the module docstring)."""

  def prefill(variables, prompts, lengths, size, corrupt=None):
    return module.apply(variables, prompts, lengths, size, corrupt, method=Transformer.prefill)

  def step(variables, cache, tokens, index):
    return module.apply(variables, cache, tokens, index, method=Transformer.step)

  return decoding.Decoder(module.cfg.max_len, prefill, step)
