"""Many models trained, cached and unlearned at once: `jax.vmap` over members.

Member m trains with the recipe of `mu_jax.train` (the same `init_state`,
`make_train_step` and optimizer, vmapped) on its own subset of the data, given
as a 0/1 mask, and sees the rows of its subset only: each epoch is its own
seeded permutation of them, batched and padded exactly as `epoch_batches`
orders and pads `data.take(rows)` (the padding repeats the subset's first row
at weight 0). So a member equals the model `train_model(seed=s)` trains alone
on its subset, BatchNorm statistics included: no excluded row ever enters a
batch, not even at weight zero, where it would still move batch statistics.
A member on an α-subset thus takes ⌈αn/B⌉ full batches an epoch, in its
subset's own order (masking all n rows instead would leave excluded rows in
its batch statistics). Every member's subset has the same size, so all members
take the same number of steps and one compiled step trains them all on
fixed-shape batches (the datamodels/TRAK α-subsets all hold round(α·n) rows;
members of different sizes would need a ragged schedule). Each epoch is one call (a scan over its steps,
every member's rows gathered on device from its own index schedule), so no
step waits for the host.
Each epoch's per-step losses are fetched once the next epoch is queued (so the
device never waits) and recorded as 'ensemble/loss' (`mu_jax.logs`).

Ensembles are cached as Orbax checkpoints (`train_or_load_ensemble`), and any
unlearning method runs on every member of one (`run_method_ensemble`).
"""
import contextlib
import functools
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mu_jax import checkpoint, logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_order, num_batches
from mu_jax.errors import MuJaxError
from mu_jax.methods.base import (
    Context, Method, check_finite, check_request, drive, report, result_task)
from mu_jax.models import merge_variables, vmap_is_slow
from mu_jax.optim import make_optimizer
from mu_jax.tasks import Task
from mu_jax.train import init_state, make_train_step


def subset_masks(n: int, num_models: int, fraction: float, seed: int) -> np.ndarray:
  """[M, n] bool masks, each a uniformly random subset of round(fraction·n) rows."""
  if not 0.0 < fraction <= 1.0:
    raise MuJaxError(f'Subset fraction {fraction} is outside (0, 1]; pick one in it.')
  size = max(1, round(fraction * n))
  masks = np.zeros((num_models, n), bool)
  for m in range(num_models):
    masks[m, np.random.default_rng([seed, m]).permutation(n)[:size]] = True
  return masks


def member(stacked, m: int):
  """Member m of a stacked ensemble."""
  return jax.tree.map(lambda leaf: leaf[m], stacked)


def map_members(fn: Callable, *stacked):
  """fn over the members of equally stacked pytrees, results stacked: a vmap,
  or member after member where a vmap would lower convolutions to grouped
  ones (see `vectorizes`); traceable either way."""
  if vectorizes(stacked[0]):
    return jax.vmap(fn)(*stacked)
  return stack([fn(*(member(tree, m) for tree in stacked))
                for m in range(num_members(stacked[0]))])


def ensemble_apply(task: Task, stacked, batch: dict) -> jax.Array:
  """Eval-mode outputs [M, N, ...] of every member on the same batch."""
  return map_members(lambda v: task.apply(v, batch, False)[0], stacked)


def subset_rows(masks: np.ndarray) -> np.ndarray:
  """[M, s] sorted row indices of each member's subset, from [M, n] masks.

  Refuses an empty subset and subsets of different sizes (every member takes
  the same number of steps per epoch, see the module docstring).
  """
  sizes = masks.sum(axis=1)
  if not sizes.all():
    raise MuJaxError('An ensemble member has an empty training subset; raise the fraction.')
  if (sizes != sizes[0]).any():
    raise MuJaxError(f'Ensemble members have subsets of {sizes.min()} to {sizes.max()} rows; '
                     'give every member the same number of rows (as `subset_masks` does).')
  return np.stack([np.flatnonzero(mask) for mask in masks]).astype(np.int32)


def _epoch_indices(rows: np.ndarray, seeds: Sequence[int], batch_size: int,
                   epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """Row indices and weights [S, M, B] of one epoch: member m's subset rows[m]
  in the order and padding that `epoch_batches` with its seed gives
  `data.take(rows[m])` (padding: the subset's first row, weight 0)."""
  size = rows.shape[1]
  padded = num_batches(size, batch_size) * batch_size
  position = np.zeros((len(seeds), padded), np.int64)
  for m, seed in enumerate(seeds):
    position[m, :size] = epoch_order(size, seed=int(seed), epoch=epoch, shuffle=True)
  idx = np.take_along_axis(rows, position, axis=1)
  w = np.broadcast_to(np.arange(padded) < size, idx.shape)
  shape = (len(seeds), -1, batch_size)
  return (idx.reshape(shape).transpose(1, 0, 2),
          w.astype(np.float32).reshape(shape).transpose(1, 0, 2))


def _recipe_key(train_cfg, steps_per_epoch: int) -> tuple:
  """What of a training recipe the compiled step depends on, hashable."""
  total = steps_per_epoch * train_cfg.epochs if train_cfg.schedule != 'constant' else 0
  return (train_cfg.optimizer, train_cfg.learning_rate, train_cfg.momentum,
          train_cfg.weight_decay, train_cfg.schedule, total,
          train_cfg.get('gradient_restriction', 0.0))


@functools.lru_cache(maxsize=16)
def _training_fns(task: Task, recipe: tuple):
  """Jitted (vmapped init, vmapped step, one member's step), built once per
  task and recipe: every ensemble of a run (originals, oracles, references)
  reuses the compilation."""
  optimizer, lr, momentum, weight_decay, schedule, total, restriction = recipe
  tx = make_optimizer(optimizer, lr, total_steps=total, momentum=momentum,
                      weight_decay=weight_decay, schedule=schedule)
  init = jax.jit(jax.vmap(lambda seed: init_state(task, tx, seed)))
  one = make_train_step(task, tx, restriction)
  vmapped = jax.vmap(one)

  @functools.partial(jax.jit, donate_argnums=0, static_argnames='batch_sharding')
  def epoch(state, rows, idx, w, *, batch_sharding):
    """Every step of one epoch in one call (idx, w: [S, M, B]); the rows are
    gathered on device, so no step waits for the host. Returns the state and
    the steps' statistics [S, M]."""
    def body(st, iw):
      i, wi = iw
      batch = jax.lax.with_sharding_constraint(
          {**jax.tree.map(lambda a: a[i], rows), 'w': wi}, batch_sharding)
      return vmapped(st, batch)
    return jax.lax.scan(body, state, (idx, w))

  return init, epoch, jax.jit(one, donate_argnums=0)


def vectorizes(stacked) -> bool:
  """Whether members of `stacked` run vmapped (else one after another): not a
  convolutional model on CPU (2-member Fashion-MNIST CNN, batch 128, Adam step,
  2-core CPU under load: vmap 2.2 s, a `lax.map` over members 9.7 s, the two
  members' own steps 0.30 s)."""
  return not vmap_is_slow(stacked, stacked=True)


def train_ensemble(task: Task, train_cfg, data: Examples, *, seeds: Sequence[int],
                   mesh, masks: np.ndarray | None = None, shard_members: bool = False,
                   vectorize: bool | None = None) -> dict:
  """Trains len(seeds) models with `train_cfg`; member m on the rows masks[m]
  only, all masks holding the same number of rows (`subset_rows`).

  Returns the stacked variables (leading axis M). By default batches are split
  over the mesh's 'data' axis and the ensemble state is replicated; with
  `shard_members` the members themselves are split over that axis (each
  device trains M / devices members on their own batches, with no
  communication), which needs M divisible by the axis size. `vectorize`
  picks one vmapped step for all members (True) or each member's own step
  in turn on the same batches (False; not with `shard_members`); None: see
  `vectorizes`. Both give the same members.
  """
  n = len(data)
  masks = np.ones((len(seeds), n), bool) if masks is None else np.asarray(masks, bool)
  if masks.shape != (len(seeds), n):
    raise MuJaxError(f'Ensemble masks have shape {masks.shape}; expected '
                     f'{(len(seeds), n)} (one row per seed, one column per example).')
  rows = subset_rows(masks)
  steps = num_batches(rows.shape[1], train_cfg.batch_size)
  recipe = _recipe_key(train_cfg, steps)
  init, epoch_steps, member_step = _training_fns(task, recipe)
  state = init(jnp.asarray(seeds, jnp.uint32))
  if vectorize is None:
    vectorize = shard_members or vectorizes(state.params)
  if shard_members:
    if len(seeds) % sharding.data_size(mesh):
      raise MuJaxError(f'{len(seeds)} ensemble members do not divide over '
                       f'{sharding.data_size(mesh)} devices; use a multiple of the data axis size.')
    if not vectorize:
      raise MuJaxError('shard_members needs the vmapped step; drop vectorize=False.')
    state = jax.device_put(state, NamedSharding(mesh, P(sharding.DATA_AXIS)))
    batch_sharding = NamedSharding(mesh, P(sharding.DATA_AXIS, None))
  else:
    sharding.check_batch_size(train_cfg.batch_size, mesh)
    state = sharding.replicate(state, mesh)
    batch_sharding = NamedSharding(mesh, P(None, sharding.DATA_AXIS))
  if vectorize:
    arrays = sharding.replicate(data.arrays(), mesh)
    schedule = NamedSharding(mesh, P(None, *batch_sharding.spec))   # [S, M, B]
  else:
    states = [member(state, m) for m in range(len(seeds))]
  previous = None   # (epoch, its step statistics), recorded once the next epoch is queued
  for epoch in logs.progress(range(train_cfg.epochs), unit='epoch',
                             desc=f'ensemble of {len(seeds)}'):
    idx, w = _epoch_indices(rows, seeds, train_cfg.batch_size, epoch)
    if vectorize:
      state, stats = sharding.pace(epoch_steps(state, arrays, *jax.device_put((idx, w), schedule),
                                               batch_sharding=batch_sharding), mesh)
    else:
      stats = []
      for step_idx, step_w in zip(idx, w):
        stepped = [sharding.pace(member_step(st, sharding.shard_batch(
                       {**data.take(i).arrays(), 'w': wi}, mesh)), mesh)
                   for st, i, wi in zip(states, step_idx, step_w)]
        states = [st for st, _ in stepped]
        stats.append([step_stats for _, step_stats in stepped])
    if previous:
      _record_epoch(*previous, steps)
    previous = epoch, stats
  if previous:
    _record_epoch(*previous, steps)
  if not vectorize:
    state = stack(states)
  return merge_variables(state.params, state.model_state)


def _record_epoch(epoch: int, stats, steps: int) -> None:
  """Records each step's loss over every member's real rows, from an epoch's
  statistics: [S, M] sums, or (member after member) [S][M] dicts of scalars."""
  stats = sharding.to_host(stats)
  if isinstance(stats, list):
    stats = {k: np.array([[member_stats[k] for member_stats in step] for step in stats])
             for k in ('loss_sum', 'count')}
  losses = stats['loss_sum'].sum(1) / np.maximum(stats['count'].sum(1), 1.0)
  logs.record_steps(epoch * steps + 1, {'loss': losses}, prefix='ensemble')


def stack(trees: Sequence) -> dict:
  """Stacks equally-shaped pytrees along a new leading member axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def num_members(stacked) -> int:
  return jax.tree.leaves(stacked)[0].shape[0]


def train_or_load_ensemble(task: Task, train_cfg, data: Examples, *, seeds: Sequence[int],
                           mesh, directory: str, masks: np.ndarray | None = None,
                           shard_members: bool = False) -> tuple[dict, float]:
  """`train_ensemble`, cached as one Orbax checkpoint in `directory`.

  Returns (stacked variables, training seconds). The caller names the
  directory after everything that determines the ensemble (see
  `checkpoint.config_key`); a finished checkpoint there is loaded instead of
  training, and one of another shape is refused.
  """
  store = checkpoint.CheckpointStore(directory)
  try:
    if store.latest_step() is not None:
      shapes = jax.eval_shape(jax.vmap(lambda s: task.init(jax.random.PRNGKey(s))),
                              jnp.asarray(seeds, jnp.uint32))
      like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                         sharding=sharding.replicated(mesh)),
                          shapes)
      restored = store.restore_latest(like)   # None: a damaged one was discarded
      if restored is not None:
        return restored[0], restored[1]['train_seconds']
    began = time.perf_counter()
    stacked = train_ensemble(task, train_cfg, data, seeds=seeds, mesh=mesh, masks=masks,
                             shard_members=shard_members)
    jax.block_until_ready(stacked)
    seconds = time.perf_counter() - began
    store.save(1, stacked, {'train_seconds': seconds, 'members': len(seeds)})
    return stacked, seconds
  finally:
    store.close()


class EnsembleUnlearned(NamedTuple):
  variables: dict      # stacked unlearned variables, leading axis M
  seconds: float       # wall time for all members: prepares and updates, compilation included
  steps: int           # updates per member
  task: Task           # evaluates one member's variables
  vmapped: bool        # True: one vmapped update per batch for all members at once
  info: dict           # {name: [M] values} of method.report, or {}
  states: list | None = None   # a continual method's (Method.resume) final member states


def run_method_ensemble(method: Method, stacked: dict, ctx: Context, *, seeds: Sequence[int],
                        name: str = 'method', vectorize: bool | None = None,
                        previous: list | None = None) -> EnsembleUnlearned:
  """Runs `method` on every member of `stacked`, member m with seed seeds[m].

  Each member's `prepare` runs on its own (statistics passes are host loops
  of compiled functions, compiled once and reused by every member), with
  `ctx.seed` replaced by its seed and no statistics cache (each member is a
  different model). Then:
  - iterative methods (a stream other than 'none': ft, ga, rl and every
    method built on `methods.gradient`) stack the members' states and take
    ONE vmapped, jitted update per batch for all members, every member seeing
    the same batches (the stream's, or the method's own `batches` schedule,
    drawn with `ctx.seed`); with `vectorize=False` (default for convolutional
    models on CPU, see `vectorizes`) each member takes its own jitted update
    of the same batch in turn;
  - one-shot methods (stream 'none': ssd, iau, acu, dm_direct) apply their single
    jitted update member by member, since their cost is in `prepare`.
  A non-finite loss or result in any member raises NonFiniteError. With
  `previous` (the `states` of the last request), a continual method resumes
  each member's state (`Method.resume`) instead of preparing it afresh.
  """
  if len(seeds) != num_members(stacked):
    raise MuJaxError(f'{len(seeds)} seeds for an ensemble of {num_members(stacked)} members; '
                     'give one seed per member.')
  check_request(method, ctx, name)
  began = time.perf_counter()
  states = [method.resume(ctx._replace(seed=int(s), cache_dir=None), previous[m])
            if previous is not None else
            method.prepare(ctx._replace(seed=int(s), cache_dir=None),
                           sharding.replicate(member(stacked, m), ctx.mesh))
            for m, s in enumerate(seeds)]
  task, iterative = ctx.task, method.stream.source != 'none'
  vectorize = iterative and (vectorizes(stacked['params']) if vectorize is None else vectorize)
  with jax.enable_x64(True) if method.x64 else contextlib.nullcontext():
    one = jax.jit(method.update, static_argnums=0)
    if vectorize:
      vmapped = jax.jit(jax.vmap(lambda st, batch: method.update(task, st, batch),
                                 in_axes=(0, None)))

      def step(state, batch):
        state, stats = sharding.pace(vmapped(state, batch), ctx.mesh)
        return state, stats['loss']

      state, steps = drive(method, ctx, stack(states), step, name, ' of some ensemble member')
      out = jax.vmap(method.result)(state)
      final = ([member(state, m) for m in range(len(seeds))]
               if method.report or method.resume else [])
    else:
      def step(states, batch):   # each member's own update of the same batch, in turn
        stepped = [sharding.pace(one(task, st, batch), ctx.mesh) for st in states]
        return [st for st, _ in stepped], [stats.get('loss') for _, stats in stepped]

      final, steps = drive(method, ctx, states, step, name, ' of some ensemble member')
      out = stack([method.result(st) for st in final])
  check_finite(out, f'The parameters produced by {name} in some ensemble member')
  jax.block_until_ready(out)
  seconds = time.perf_counter() - began
  reports = [report(method, st) for st in final]
  info = {k: [r[k] for r in reports] for k in reports[0]} if reports and reports[0] else {}
  return EnsembleUnlearned(out, seconds, steps, result_task(method, task), vectorize, info,
                           final if method.resume else None)
