"""The one unlearning-method interface and the generic driver that runs it.

A method is a small NamedTuple of pure functions, optax style:
  prepare(ctx, variables) -> state       statistics passes, optimizer init
  update(task, state, batch) -> (state, stats)   one pure step, jitted by the driver
  result(state) -> variables
plus the batch `stream` its update consumes. One-shot methods (SSD, ACU) use
the stream 'none' and get exactly one `update(task, state, None)`; iterative
ones get one update per batch of the forget, retain or union stream. A method
sees the problem only through its `Task` (`mu_jax.tasks`): forward pass,
per-example loss, statistics and capabilities; batches are opaque dicts.
"""
import contextlib
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import logs, sharding
from mu_jax.data import Examples, concat
from mu_jax.data.batching import Counted, epoch_batches
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.tasks import Task, requires

SOURCES = ('none', 'forget', 'retain', 'union')


class Stream(NamedTuple):
  """Which batches `update` consumes: `source` for `epochs` passes."""
  source: str = 'none'
  epochs: int = 1
  batch_size: int = 256


class Context(NamedTuple):
  """The unlearning request: the task (model included) and the data on either side of it."""
  task: Task
  forget: Examples
  retain: Examples
  mesh: Any
  seed: int = 0
  # A folder beside the original model's checkpoint where statistics that
  # depend only on that model and D (e.g. SSD's I_D) may be cached; None = no cache.
  cache_dir: str | None = None
  # The rows' indices in the training set (int arrays as long as `forget` and
  # `retain`), for methods that keep a ledger of the rows they hold (ACU);
  # None: the rows are numbered in the 'union' stream's order, D_f first.
  forget_ids: np.ndarray | None = None
  retain_ids: np.ndarray | None = None
  # Rows like the request's that the model never trained on (an LM's held-out authors),
  # for methods that calibrate against never-seen data (ECO's noise target); None = none.
  holdout: Examples | None = None

  def arrays(self, source: str) -> dict[str, np.ndarray]:
    """Host arrays of a stream; 'union' adds the flag 'f' (1 on forget rows)."""
    if source == 'forget':
      return self.forget.arrays()
    if source == 'retain':
      return self.retain.arrays()
    if source == 'union':
      flag = np.concatenate([np.ones(len(self.forget), np.float32),
                             np.zeros(len(self.retain), np.float32)])
      return {**concat(self.forget, self.retain).arrays(), 'f': flag}
    raise MuJaxError(f'Unknown stream source {source!r}; valid: {", ".join(SOURCES)}.')

  def batches(self, source: str, batch_size: int, *, epoch: int = 0,
              shuffle: bool = True) -> Iterator[dict]:
    """Sharded, padded, seed-deterministic device batches of a stream."""
    return self.batches_of(self.arrays(source), batch_size, epoch=epoch, shuffle=shuffle)

  def batches_of(self, arrays: dict[str, np.ndarray], batch_size: int, *, epoch: int = 0,
                 shuffle: bool = True) -> Iterator[dict]:
    """`batches` over any host arrays (a method's own rows): same order, padding, sharding."""
    sharding.check_batch_size(batch_size, self.mesh)
    host = epoch_batches(arrays, batch_size, seed=self.seed, epoch=epoch, shuffle=shuffle)
    return Counted((sharding.shard_batch(batch, self.mesh) for batch in host), len(host))


ORIGINAL = 'original'   # a method starts from the model that saw D (every method but one)
PRIVATE = 'private'     # from a DP-SGD-trained model of D (DP2Unlearning)
STARTS = (ORIGINAL, PRIVATE)


class Method(NamedTuple):
  prepare: Callable[[Context, dict], Any]
  update: Callable[[Task, Any, Any], tuple[Any, dict]]
  result: Callable[[Any], dict]
  stream: Stream
  # For methods that change the architecture (e.g. an analytic head on frozen
  # features): make_apply(task) -> forward(variables, batch, train) for the
  # variables `result` returns (`Task.with_forward`).
  make_apply: Callable[[Task], Callable] | None = None
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
  # Task capabilities the method needs (mu_jax.tasks: CLASS_LABELS, LINEAR_HEAD,
  # INPUT_RANGE); the driver refuses a task without them before any work.
  requires: tuple[str, ...] = ()
  # Continual methods (ACU): resume(ctx, state) -> the state for a further
  # request `ctx`, from the final state of the previous one (its ledger of held
  # rows included), in place of `prepare`.
  resume: Callable[[Context, Any], Any] | None = None
  # The model `prepare` is given: ORIGINAL (the one trained on D), or PRIVATE (one trained
  # on D with DP-SGD, which only a benchmark that trains it can supply; run_method cannot
  # tell the two apart, so the benchmarks refuse a PRIVATE method they cannot serve).
  start: str = ORIGINAL


def epoch_stream(method: Method, ctx: Context, epoch: int) -> Iterator[dict]:
  """The batches `method.update` consumes in `epoch`: its own schedule, else its stream's."""
  if method.batches:
    return method.batches(ctx, epoch)
  return ctx.batches(method.stream.source, method.stream.batch_size, epoch=epoch)


class Unlearned(NamedTuple):
  variables: dict
  seconds: float   # wall time of prepare + all updates, compilation included
  steps: int
  task: Task       # evaluates `variables`: the context's task, through make_apply if any
  info: dict       # method.report(state), or {}


def check_finite(tree, what: str) -> None:
  """Raises NonFiniteError naming `what` if any leaf of `tree` holds a NaN or infinity."""
  if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree)):
    raise NonFiniteError(f'{what} became non-finite; lower the learning rate '
                         '(no result was saved).')


def drive(method: Method, ctx: Context, state, step: Callable, name: str,
          where: str = '', on_epoch: Callable[[int, Any], None] | None = None
          ) -> tuple[Any, int]:
  """The one step loop of every driver: (final state, updates taken).

  `step(state, batch) -> (state, loss)` is one update (of one model, of a
  vmapped ensemble, or of each member in turn). One-shot methods (stream
  'none') take a single step on None; iterative ones one per batch of each
  epoch, and a non-finite loss in an epoch stops the run. Each epoch's losses
  are fetched once at its end and recorded as 'unlearn/loss' per update (the
  members' mean for an ensemble) to the current metric writer.
  """
  if method.stream.source == 'none':
    return step(state, None)[0], 1
  steps, epochs = 0, method.stream.epochs
  for epoch in range(epochs):
    losses = []
    for batch in logs.progress(epoch_stream(method, ctx, epoch), unit='batch',
                               desc=f'{name} epoch {epoch + 1}/{epochs}'):
      state, loss = step(state, batch)
      losses.append(loss)
      steps += 1
    losses = sharding.to_host(losses)   # the epoch's losses, fetched once
    _record_losses(steps - len(losses) + 1, losses)
    if not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(losses)):
      raise NonFiniteError(f'The {name} loss in epoch {epoch + 1}{where} became non-finite; '
                           'lower the learning rate (no result was saved).')
    if on_epoch is not None:
      on_epoch(epoch + 1, state)
  return state, steps


def _record_losses(first_step: int, losses: list) -> None:
  """Records each update's host loss (the mean over ensemble members)."""
  for i, loss in enumerate(losses):
    if jax.tree.leaves(loss):   # None: the method's update reports no loss
      logs.record(first_step + i, {'loss': np.mean(jax.tree.leaves(loss))}, prefix='unlearn')


def run_method(method: Method, variables: dict, ctx: Context, name: str = 'method',
               on_epoch: Callable[[int, dict], None] | None = None) -> Unlearned:
  """Runs any method to completion and times it; refuses non-finite results.

  `on_epoch(epoch, variables)` sees the result after each epoch of an iterative method
  (an unlearning trajectory); its time counts in `Unlearned.seconds`.
  """
  check_request(method, ctx, name)
  began = time.perf_counter()
  state = method.prepare(ctx, sharding.replicate(variables, ctx.mesh))
  update = jax.jit(method.update, static_argnums=0)

  def step(state, batch):
    state, stats = sharding.pace(update(ctx.task, state, batch), ctx.mesh)
    return state, stats.get('loss')

  with jax.enable_x64(True) if method.x64 else contextlib.nullcontext():
    state = sharding.onto_mesh(state, ctx.mesh)   # as update's outputs: no retrace
    results = None if on_epoch is None else (
        lambda epoch, state: on_epoch(epoch, method.result(state)))
    state, steps = drive(method, ctx, state, step, name, on_epoch=results)
    out = method.result(state)
  check_finite(out, f'The parameters produced by {name}')
  jax.block_until_ready(out)
  seconds = time.perf_counter() - began
  return Unlearned(out, seconds, steps, result_task(method, ctx.task), report(method, state))


def result_task(method: Method, task: Task) -> Task:
  """The task that evaluates `method`'s result: `task`, or its make_apply forward."""
  return task.with_forward(method.make_apply(task)) if method.make_apply else task


def report(method: Method, state) -> dict:
  return {k: float(v) for k, v in method.report(state).items()} if method.report else {}


def check_request(method: Method, ctx: Context, name: str) -> None:
  """Refuses an unknown stream, a task the method cannot serve, or examples the task
  cannot read."""
  if method.stream.source not in SOURCES:
    raise MuJaxError(f'Unknown stream source {method.stream.source!r}; '
                     f'valid: {", ".join(SOURCES)}.')
  requires(ctx.task, name, *method.requires)
  ctx.task.check_examples(ctx.forget, 'forget')
  ctx.task.check_examples(ctx.retain, 'retain')
