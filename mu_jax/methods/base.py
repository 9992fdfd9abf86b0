"""The one unlearning-method interface and the generic driver that runs it.

A method is a small NamedTuple of pure functions, optax style:
  prepare(ctx, variables) -> state       statistics passes, optimizer init
  update(spec, state, batch) -> (state, stats)   one pure step, jitted by the driver
  result(state) -> variables
plus the batch `stream` its update consumes. One-shot methods (SSD, ACU) use
the stream 'none' and get exactly one `update(spec, state, None)`; iterative
ones get one update per batch of the forget, retain or union stream.
"""
import contextlib
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import sharding
from mu_jax.data import Split
from mu_jax.data.batching import epoch_batches
from mu_jax.errors import MuJaxError, NonFiniteError

SOURCES = ('none', 'forget', 'retain', 'union')


class ModelSpec(NamedTuple):
  """What an update may know of the model: static, hashable."""
  apply_fn: Callable   # apply_fn(variables, x, train) -> (logits, new_model_state)
  num_classes: int
  features_fn: Callable | None = None   # features_fn(variables, x) -> penultimate [N, D]


class Stream(NamedTuple):
  """Which batches `update` consumes: `source` for `epochs` passes."""
  source: str = 'none'
  epochs: int = 1
  batch_size: int = 256


class Context(NamedTuple):
  """The unlearning request: the model and the data on either side of it."""
  spec: ModelSpec
  forget: Split
  retain: Split
  mesh: Any
  seed: int = 0
  # A folder beside the original model's checkpoint where statistics that
  # depend only on that model and D (e.g. SSD's I_D) may be cached; None = no cache.
  cache_dir: str | None = None

  def arrays(self, source: str) -> dict[str, np.ndarray]:
    """Host arrays of a stream; 'union' adds the flag 'f' (1 on forget rows)."""
    if source == 'forget':
      return {'x': self.forget.x, 'y': self.forget.y}
    if source == 'retain':
      return {'x': self.retain.x, 'y': self.retain.y}
    if source == 'union':
      return {'x': np.concatenate([self.forget.x, self.retain.x]),
              'y': np.concatenate([self.forget.y, self.retain.y]),
              'f': np.concatenate([np.ones(len(self.forget.y), np.float32),
                                   np.zeros(len(self.retain.y), np.float32)])}
    raise MuJaxError(f'Unknown stream source {source!r}; valid: {", ".join(SOURCES)}.')

  def batches(self, source: str, batch_size: int, *, epoch: int = 0,
              shuffle: bool = True) -> Iterator[dict]:
    """Sharded, padded, seed-deterministic device batches of a stream."""
    return self.batches_of(self.arrays(source), batch_size, epoch=epoch, shuffle=shuffle)

  def batches_of(self, arrays: dict[str, np.ndarray], batch_size: int, *, epoch: int = 0,
                 shuffle: bool = True) -> Iterator[dict]:
    """`batches` over any host arrays (a method's own rows): same order, padding, sharding."""
    sharding.check_batch_size(batch_size, self.mesh)
    for batch in epoch_batches(arrays, batch_size, seed=self.seed, epoch=epoch,
                               shuffle=shuffle):
      yield sharding.shard_batch(batch, self.mesh)


class Method(NamedTuple):
  prepare: Callable[[Context, dict], Any]
  update: Callable[[ModelSpec, Any, Any], tuple[Any, dict]]
  result: Callable[[Any], dict]
  stream: Stream
  # For methods that change the architecture (e.g. an analytic head on frozen
  # features): make_apply(spec) -> apply_fn for the variables `result` returns.
  make_apply: Callable[[ModelSpec], Callable] | None = None
  # Numbers worth reporting beside the metrics (e.g. SSD's selected count):
  # report(state) -> {name: float}, called once after the last update.
  report: Callable[[Any], dict] | None = None
  # True: `update` and `result` run with 64-bit types enabled (jax.enable_x64),
  # for float64 state such as ACU's ridge head, which 32-bit jit would truncate.
  x64: bool = False
  # Methods with their own batch schedule (SCRUB's alternating passes over D_f
  # and D_r, DMM's indices into the fine-tuning rows its state holds):
  # batches(ctx, epoch) -> that epoch's sharded batches, used instead of the
  # stream's; `stream` still sets the epochs (and a source other than 'none').
  batches: Callable[[Context, int], Iterator[dict]] | None = None


def epoch_stream(method: Method, ctx: Context, epoch: int) -> Iterator[dict]:
  """The batches `method.update` consumes in `epoch`: its own schedule, else its stream's."""
  if method.batches:
    return method.batches(ctx, epoch)
  return ctx.batches(method.stream.source, method.stream.batch_size, epoch=epoch)


class Unlearned(NamedTuple):
  variables: dict
  seconds: float   # wall time of prepare + all updates, compilation included
  steps: int
  apply_fn: Callable   # evaluates `variables`: the model's own unless make_apply
  info: dict           # method.report(state), or {}


def _check_finite(tree, what: str) -> None:
  if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree)):
    raise NonFiniteError(f'{what} became non-finite; lower the learning rate '
                         '(no result was saved).')


def run_method(method: Method, variables: dict, ctx: Context, name: str = 'method') -> Unlearned:
  """Runs any method to completion and times it; refuses non-finite results."""
  if method.stream.source not in SOURCES:
    raise MuJaxError(f'Unknown stream source {method.stream.source!r}; '
                     f'valid: {", ".join(SOURCES)}.')
  began = time.perf_counter()
  state = method.prepare(ctx, sharding.replicate(variables, ctx.mesh))
  update = jax.jit(method.update, static_argnums=0)
  steps = 0
  with jax.enable_x64(True) if method.x64 else contextlib.nullcontext():
    state = sharding.onto_mesh(state, ctx.mesh)   # as update's outputs: no retrace
    if method.stream.source == 'none':
      state, _ = update(ctx.spec, state, None)
      steps = 1
    for epoch in range(method.stream.epochs if method.stream.source != 'none' else 0):
      losses = []
      for batch in epoch_stream(method, ctx, epoch):
        state, stats = sharding.pace(update(ctx.spec, state, batch), ctx.mesh)
        losses.append(stats['loss'])
        steps += 1
      _check_finite(losses, f'The {name} loss in epoch {epoch + 1}')
    out = method.result(state)
  _check_finite(out, f'The parameters produced by {name}')
  jax.block_until_ready(out)
  seconds = time.perf_counter() - began
  apply_fn = method.make_apply(ctx.spec) if method.make_apply else ctx.spec.apply_fn
  info = {k: float(v) for k, v in method.report(state).items()} if method.report else {}
  return Unlearned(out, seconds, steps, apply_fn, info)
