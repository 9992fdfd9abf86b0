"""Training the original model on D and the oracle on D_r, resumably and sharded.

`train_model` is a Python epoch loop around one pure, jitted train step with
declared shardings (batch split over the mesh's 'data' axis, state replicated
or, for large leaves, split over 'model'; see `mu_jax.sharding`). The step
donates the state it replaces, sums the epoch's statistics on device, and is
traced once per run: the loop does no implicit host transfers (batches are
placed with an explicit device_put; statistics and the per-step losses are
fetched once per epoch, then recorded to the current metric writer, see
`mu_jax.logs`).
It checkpoints through `CheckpointStore` so a killed run resumes from its last
finished epoch and a finished run is loaded, not retrained.
The whole unlearning setting (data, forget set, original, oracle) is built
on top of this by `mu_jax.experiments.setting`.
"""
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from mu_jax import checkpoint, logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import (
    epoch_batches, length_grouped_batches, num_batches, poisson_batches)
from mu_jax.errors import MuJaxError, NonFiniteError
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import decayed_weights, gradient_norm_sum, make_optimizer
from mu_jax.privacy import dp_sgd
from mu_jax.tasks import Task


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any


class Trained(NamedTuple):
  variables: dict
  train_seconds: float   # wall time of all epochs, summed over resumed runs
  epochs: int
  directory: str = ''    # its checkpoint folder; statistics of it may be cached beside


def optimizer_from_config(train_cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """The recipe's optimizer. Keys only some recipes set (absent from older configs, so
  their cached models keep their keys): `warmup_epochs` (of the 'linear' schedule) and
  `decay_norms` (False: no weight decay on biases and normalisation scales, as the
  Hugging Face Trainer groups them, `optim.decayed_weights`)."""
  return make_optimizer(
      train_cfg.optimizer, train_cfg.learning_rate,
      total_steps=steps_per_epoch * train_cfg.epochs,
      momentum=train_cfg.momentum, weight_decay=train_cfg.weight_decay,
      schedule=train_cfg.schedule,
      warmup_steps=steps_per_epoch * train_cfg.get('warmup_epochs', 0),
      decay_mask=decayed_weights if train_cfg.get('decay_norms', True) is False else None)


def make_train_step(task: Task, tx: optax.GradientTransformation,
                    gradient_restriction: float = 0.0, microbatch: int = 0, data_size: int = 1,
                    privacy: dp_sgd.Privacy | None = None, noise_seed: int = 0):
  """One pure SGD-family step of the task's mean loss on a weighted batch.

  With `gradient_restriction` α > 0 the objective is IAU's GR loss
  ℓ + α·Σ_tensors ‖∇_θ ℓ‖₂, differentiated through (double backprop), which
  trains an "IAU-ready" model; the returned stats are those of ℓ alone.
  With `microbatch` m > 0 the batch's gradient is accumulated over parts of m
  rows (`microbatches`): the same step up to float rounding, for models
  without batch statistics, faster where a whole batch's activations overflow
  the CPU's caches. With `privacy` the gradient is DP-SGD's (`dp_sgd.private_gradient`:
  per-example clipping and Gaussian noise keyed by `noise_seed` and the step).
  """

  def loss_fn(params, model_state, batch):
    outputs, new_model_state = task.apply(merge_variables(params, model_state), batch, True)
    loss = task.mean_loss(outputs, batch)
    return loss, (loss, new_model_state)

  def restricted_loss_fn(params, model_state, batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, model_state, batch)
    return loss + gradient_restriction * gradient_norm_sum(grads), aux

  def summed_loss(params, model_state, part):
    outputs, _ = task.apply(merge_variables(params, model_state), part, True)
    return jnp.sum(task.losses(outputs, part) * part['w'])

  def accumulated(params, model_state, batch):
    """(mean loss, gradient of it) summed over micro-batches; no model state."""
    total, grads = 0.0, None
    for part in microbatches(batch, microbatch, data_size):
      value, g = jax.value_and_grad(summed_loss)(params, model_state, part)
      total = total + value
      grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    count = jnp.maximum(jnp.sum(batch['w']), 1.0)
    return total / count, jax.tree.map(lambda g: g / count, grads)

  def example_loss(params, model_state, row):
    outputs, _ = task.apply(merge_variables(params, model_state), row, True)
    return task.losses(outputs, row)[0]

  if privacy is not None and (microbatch or gradient_restriction):
    raise MuJaxError('DP-SGD clips each example\'s gradient itself; set train.microbatch and '
                     'train.gradient_restriction to 0.')
  if microbatch and gradient_restriction:
    raise MuJaxError('train.microbatch cannot split the gradient restriction, a norm of the '
                     "whole batch's gradient; set one of them to 0.")
  objective = restricted_loss_fn if gradient_restriction else loss_fn

  def step(state: TrainState, batch):
    if privacy is not None:
      rng = jax.random.fold_in(jax.random.PRNGKey(noise_seed), state.step)
      loss, grads = dp_sgd.private_gradient(
          lambda p, row: example_loss(p, state.model_state, row), state.params, batch,
          privacy, rng)
      new_model_state = state.model_state
    elif microbatch:
      loss, grads = accumulated(state.params, state.model_state, batch)
      new_model_state = state.model_state
    else:
      (_, (loss, new_model_state)), grads = jax.value_and_grad(
          objective, has_aux=True)(state.params, state.model_state, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = new_model_state or state.model_state
    new_state = TrainState(state.step + 1, params, model_state, opt_state)
    count = jnp.sum(batch['w'])
    return new_state, {'loss_sum': loss * count, 'count': count}

  return step


def microbatches(batch: dict, rows: int, data_size: int = 1) -> list[dict]:
  """`batch` cut into parts of `rows` rows, each spread evenly over the `data_size`
  devices of the 'data' axis (every device holds its own rows of every part)."""
  n = len(batch['w'])
  parts = n // rows

  def part(a, k):
    a = a.reshape(data_size, parts, n // (data_size * parts), *a.shape[1:])
    return a[:, k].reshape(rows, *a.shape[3:])

  return [jax.tree.map(lambda a: part(a, k), batch) for k in range(parts)]


def check_microbatch(train_cfg, model_state, mesh) -> int:
  """`train_cfg.microbatch` (0: whole batches), refused where it would change the step."""
  rows = train_cfg.get('microbatch', 0)
  if not rows:
    return 0
  size, data = train_cfg.batch_size, sharding.data_size(mesh)
  if size % rows or rows % data:
    raise MuJaxError(f'train.microbatch={rows} must divide train.batch_size={size} and be a '
                     f"multiple of the mesh's data axis ({data}); change it or set 0.")
  if jax.tree.leaves(model_state):
    raise MuJaxError('train.microbatch would split the batch statistics of a model with '
                     'BatchNorm state; set it to 0.')
  return rows


def _summing_stats(step: Callable) -> Callable:
  """(state, totals, batch) -> (state, totals + the step's batch statistics, its mean loss)."""

  def run(state, totals, batch):
    state, stats = step(state, batch)
    return state, jax.tree.map(jnp.add, totals, stats), stats['loss_sum'] / stats['count']

  return run


def zero_stats(mesh) -> dict[str, jax.Array]:
  """Replicated zero sums for `sharded_training`'s step to add a batch's statistics to."""
  return sharding.replicate({k: np.zeros((), np.float32) for k in ('loss_sum', 'count')}, mesh)


def init_state(task: Task, tx, seed) -> TrainState:
  return state_from(task.init(jax.random.PRNGKey(seed)), tx)


def state_from(variables, tx) -> TrainState:
  """Step 0 of training `variables` with the optimizer `tx`."""
  params, model_state = split_variables(variables)
  return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))


def sharded_training(task: Task, train_cfg, steps_per_epoch: int, *,
                     seed: int, mesh, start=None,
                     privacy: dp_sgd.Privacy | None = None) -> tuple[TrainState, Callable]:
  """The initial state, placed with its shardings, and the jitted step.

  step(state, totals, batch) -> (state, totals + batch statistics, batch mean
  loss) takes a batch split over 'data' (`sharding.shard_batch`), donates the
  state and totals it replaces, and keeps the state's shardings
  (`sharding.state_sharding`).
  The state is initialized by one jitted call straight into those shardings,
  so a state split over 'model' is never whole on one device. With `start`
  (variables, e.g. a pre-trained model to fine-tune) training starts from them
  instead of a fresh initialisation.
  """
  tx = optimizer_from_config(train_cfg, steps_per_epoch)
  if start is None:
    init, given = (lambda seed_: init_state(task, tx, seed_)), np.uint32(seed)
  else:
    init, given = (lambda variables: state_from(variables, tx)), start
  given = sharding.replicate(given, mesh)
  state_shardings = sharding.state_sharding(jax.eval_shape(init, given), mesh)
  state = jax.jit(init, out_shardings=state_shardings)(given)
  microbatch = check_microbatch(train_cfg, state.model_state, mesh)
  if privacy is not None and jax.tree.leaves(state.model_state):
    raise MuJaxError('DP-SGD cannot train a model with BatchNorm state: its batch statistics '
                     'mix the examples that per-example clipping keeps apart.')
  step = jax.jit(
      _summing_stats(make_train_step(task, tx, train_cfg.get('gradient_restriction', 0.0),
                                     microbatch, sharding.data_size(mesh), privacy, seed)),
      in_shardings=(state_shardings, sharding.replicated(mesh), sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh), sharding.replicated(mesh)),
      donate_argnums=(0, 1))
  return state, step


class PrivatePlan(NamedTuple):
  """DP-SGD's schedule for a recipe with `dp_epsilon` > 0 (`private_plan`)."""
  privacy: dp_sgd.Privacy
  sample_rate: float
  steps_per_epoch: int


def private_plan(train_cfg, num_examples: int) -> PrivatePlan | None:
  """The recipe's DP-SGD plan, or None: keys `dp_epsilon` (0 or absent: plain training),
  `dp_delta` and `dp_clip`; the batch size is the Poisson batches' expected size and σ
  spends (ε, δ) over all epochs (`dp_sgd.plan`)."""
  if not train_cfg.get('dp_epsilon', 0):
    return None
  privacy, rate, steps = dp_sgd.plan(num_examples, train_cfg.batch_size, train_cfg.epochs,
                                     epsilon=train_cfg.dp_epsilon, delta=train_cfg.dp_delta,
                                     clip=train_cfg.dp_clip)
  return PrivatePlan(privacy, rate, steps // train_cfg.epochs)


def training_batches(task: Task, train_cfg, arrays: dict, *, seed: int,
                     private: PrivatePlan | None = None, data_size: int = 1) -> Callable:
  """epoch -> that epoch's batches: shuffled, or with `train_cfg.group_by_length`
  grouped by the task's example lengths and cut to each batch's longest
  (`length_grouped_batches`: the same per-example losses on fewer padded positions);
  for DP-SGD (`private`), Poisson-sampled, cut to their longest where examples vary."""
  if private is not None:
    multiple = math.lcm(8, data_size)
    lengths = task.lengths(arrays)
    return lambda epoch: poisson_batches(arrays, private.sample_rate, private.steps_per_epoch,
                                         seed=seed, epoch=epoch, multiple=multiple,
                                         lengths=lengths, sequence_keys=task.sequence_keys)
  if not train_cfg.get('group_by_length', False):
    return lambda epoch: epoch_batches(arrays, train_cfg.batch_size, seed=seed, epoch=epoch)
  lengths = task.lengths(arrays)
  if lengths is None:
    raise MuJaxError(f'train.group_by_length needs examples of varying length; the '
                     f'{task.name} task has one fixed shape, so set it to False.')
  return lambda epoch: length_grouped_batches(arrays, train_cfg.batch_size, lengths,
                                              task.sequence_keys, seed=seed, epoch=epoch)


def train_model(task: Task, train_cfg, data: Examples, *, seed: int,
                mesh, store: checkpoint.CheckpointStore | None = None,
                name: str = 'model', start=None) -> Trained:
  """Trains the task's model on `data` with the recipe `train_cfg`, resuming from `store`;
  from the variables `start` where given (fine-tuning), else from a fresh initialisation;
  by DP-SGD where the recipe sets `dp_epsilon` (`private_plan`).

  Records 'train/loss' per step and 'train/epoch_loss' per epoch, at the global
  step, to the current metric writer (`logs.writing_to`).
  """
  if len(data) == 0:
    raise MuJaxError(f'Cannot train the {name}: its training set is empty.')
  task.check_examples(data, f'{name} training')
  sharding.check_batch_size(train_cfg.batch_size, mesh)
  private = private_plan(train_cfg, len(data))
  steps = private.steps_per_epoch if private else num_batches(len(data), train_cfg.batch_size)
  state, step_fn = sharded_training(task, train_cfg, steps, seed=seed, mesh=mesh, start=start,
                                    privacy=private.privacy if private else None)
  start, seconds = 0, 0.0
  resumed = store.restore_latest(state) if store is not None else None
  if resumed is not None:
    state, meta = resumed
    start, seconds = meta['epoch'], meta['train_seconds']
    if start:
      logging.info('%s: resuming after epoch %d from %s', name, start, store.directory)
  arrays = data.arrays()
  batching = training_batches(task, train_cfg, arrays, seed=seed, private=private,
                              data_size=sharding.data_size(mesh))
  for epoch in range(start, train_cfg.epochs):
    began = time.perf_counter()
    totals, losses = zero_stats(mesh), []
    batches = batching(epoch)
    for batch in logs.progress(batches, total=steps, unit='batch',
                               desc=f'{name} epoch {epoch + 1}/{train_cfg.epochs}'):
      state, totals, step_loss = sharding.pace(
          step_fn(state, totals, sharding.shard_batch(batch, mesh)), mesh)
      losses.append(step_loss)
    totals, losses = sharding.to_host((totals, jnp.stack(losses)))
    seconds += time.perf_counter() - began
    loss = float(totals['loss_sum'] / totals['count'])
    logs.record_steps(epoch * steps + 1, {'loss': losses}, prefix='train')
    logs.record((epoch + 1) * steps, {'epoch_loss': loss}, prefix='train')
    if not np.isfinite(loss):
      raise NonFiniteError(
          f'The {name} reached a non-finite training loss in epoch {epoch + 1}; '
          'lower the learning rate (nothing was saved for this epoch).')
    logging.info('%s epoch %d/%d: loss %.4f (%.1fs)', name, epoch + 1, train_cfg.epochs, loss,
                 time.perf_counter() - began)
    last = epoch + 1 == train_cfg.epochs
    if store is not None and (last or (epoch + 1) % train_cfg.checkpoint_every == 0):
      store.save(epoch + 1, state, {'epoch': epoch + 1, 'train_seconds': seconds,
                                    'complete': last})
  variables = merge_variables(state.params, state.model_state)
  return Trained(variables, seconds, train_cfg.epochs)
