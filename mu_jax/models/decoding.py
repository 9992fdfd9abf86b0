"""Greedy decoding of a language `Model`, jitted, with a KV cache where the model has one.

A language model's `apply(variables, tokens [N, L], train)` returns float32
logits [N, L, vocab] of a causal model (position t sees tokens ≤ t only).
Prompts are right-padded: row i's prompt is prompts[i, :prompt_lengths[i]].

The decode contract: a model factory may register a `Decoder` under its
`apply` function (`register_decoder`; `mu_jax.models.transformer` does):

  prefill(variables, prompts [N, P], lengths [N], size[, corrupt]) -> (logits [N, V], cache)
    the logits after each row's last prompt token, and a cache of `size` ≥ P
    positions holding the prompts' keys and values (those past a row's length
    are overwritten before they are attended to); a model with `Model.embedded`
    also takes `corrupt`, applied to the prompts' input embeddings;
  step(variables, cache, tokens [N], index [N]) -> (logits [N, V], cache)
    feeds each row's token at its own position `index` (its length so far),
    attending to its positions ≤ index only.

Every row thus stays left-aligned and keeps its true positions. A task evaluated
through a replacement forward pass (`Task.forward`) decodes through `task_model`:
that forward as a model, with the decoder registered under the forward, if any.
A model with no
registered decoder (an adapter around another library's model, or an `apply`
wrapped by e.g. LoRA) falls back to recomputing the whole forward pass over a
fixed [N, P + max_new_tokens] buffer at every step: the same tokens, slower.
"""
import functools
import weakref
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax.errors import MuJaxError

if TYPE_CHECKING:   # mu_jax.models imports this module's users, so only for annotations.
  from mu_jax.models import Model


class Decoder(NamedTuple):
  """A model's KV-cache functions (see the module docstring)."""
  max_len: int   # the longest sequence (prompt width + new tokens) it can hold
  prefill: Callable[[Any, jax.Array, jax.Array, int], tuple[jax.Array, Any]]
  step: Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


# Keyed weakly by the model's apply function, so a dropped model frees its decoder.
_DECODERS: 'weakref.WeakKeyDictionary[Callable, Decoder]' = weakref.WeakKeyDictionary()


def register_decoder(apply: Callable, decoder: Decoder) -> None:
  """Makes `generate` decode the model whose apply function is `apply` with `decoder`."""
  _DECODERS[apply] = decoder


def decoder_of(model: 'Model') -> Decoder | None:
  return _DECODERS.get(model.apply)


# Per replacement forward pass, the model `task_model` built around it.
_FORWARD_MODELS: 'weakref.WeakKeyDictionary[Callable, Model]' = weakref.WeakKeyDictionary()


def task_model(task) -> 'Model':
  """The model that greedy decoding runs for `task`: its model, or, when a forward pass
  replaces it, that forward over token rows (one model per forward, so one compilation)."""
  forward = task.forward
  if forward is None:
    return task.model
  if forward not in _FORWARD_MODELS:
    # A weak reference, so that the entry (keyed weakly by the forward) dies with it.
    ref = weakref.ref(forward)

    def apply(variables, x, train):   # no scored positions: the whole row is the prompt
      return ref()(variables, {'x': x, 'm': jnp.zeros(x.shape, jnp.float32)}, train)

    if forward in _DECODERS:
      _DECODERS[apply] = _DECODERS[forward]
    _FORWARD_MODELS[forward] = task.model._replace(
        name=f'{task.model.name} (replaced forward)', apply=apply, penultimate=None,
        activations=None, embedded=None)
  return _FORWARD_MODELS[forward]


def generate(model: 'Model', variables, prompts, prompt_lengths, max_new_tokens: int,
             eos_id: int,
             pad_id: int = 0,   # this library's choice: the usual padding id
             ) -> jax.Array:
  """Greedy continuations int32 [N, max_new_tokens] of right-padded prompts int32 [N, P].

  Each row continues its own prompt, prompts[i, :prompt_lengths[i]], by the
  argmax token; a row's tokens after its first `eos_id` are `pad_id`. The
  prompt lengths must be concrete (they are checked here); one compilation
  serves every call with the same model, shapes and max_new_tokens.
  """
  prompts, lengths = jnp.asarray(prompts, jnp.int32), np.asarray(prompt_lengths)
  if prompts.ndim != 2 or lengths.shape != prompts.shape[:1]:
    raise MuJaxError(f'Prompts {prompts.shape} must be [N, P] with prompt_lengths [N]; '
                     f'got prompt_lengths {lengths.shape}.')
  if lengths.size and (lengths.min() < 1 or lengths.max() > prompts.shape[1]):
    raise MuJaxError(f'Prompt lengths must lie in [1, {prompts.shape[1]}] (the prompt '
                     'width); give every row at least one token.')
  if max_new_tokens < 1:
    raise MuJaxError(f'max_new_tokens={max_new_tokens} must be at least 1.')
  decoder = decoder_of(model)
  width = prompts.shape[1] + max_new_tokens
  if decoder is not None and width > decoder.max_len:
    raise MuJaxError(f'A prompt width of {prompts.shape[1]} plus {max_new_tokens} new tokens '
                     f'exceeds the model\'s max_len={decoder.max_len}; ask for fewer tokens.')
  return _generate(model, decoder, variables, prompts, jnp.asarray(lengths, jnp.int32),
                   max_new_tokens, eos_id, pad_id)


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _generate(model, decoder, variables, prompts, lengths, max_new_tokens, eos_id, pad_id):
  n, width = prompts.shape[0], prompts.shape[1] + max_new_tokens
  rows = jnp.arange(n)
  if decoder is not None:
    first, state = decoder.prefill(variables, prompts, lengths, width)

    def advance(cache, token, t):
      return decoder.step(variables, cache, token, lengths + t - 1)
  else:
    buffer = jnp.pad(prompts, ((0, 0), (0, max_new_tokens)), constant_values=pad_id)
    at = lambda tokens, index: model.apply(variables, tokens, False)[0][rows, index]
    first, state = at(buffer, lengths - 1), buffer

    def advance(tokens, token, t):
      tokens = tokens.at[rows, lengths + t - 1].set(token)
      return at(tokens, lengths + t - 1), tokens

  def emit(t, logits, done, out):
    token = jnp.where(done, pad_id, jnp.argmax(logits, -1).astype(jnp.int32))
    return token, done | (token == eos_id), out.at[:, t].set(token)

  def body(t, carry):
    token, done, out, state = carry
    logits, state = advance(state, token, t)
    return *emit(t, logits, done, out), state

  out = jnp.full((n, max_new_tokens), pad_id, jnp.int32)
  carry = (*emit(0, first, jnp.zeros(n, bool), out), state)
  return jax.lax.fori_loop(1, max_new_tokens, body, carry)[2]
