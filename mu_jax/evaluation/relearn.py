"""The relearning attack: how fast does fine-tuning on D_f bring the forget set back?

Golatkar et al. 2020 ("Eternal Sunshine of the Spotless Net", relearn time)
and later unlearning audits fine-tune an unlearned model on the forget set
(or a small part of it) and count the steps until its forget accuracy returns
to the original model's; a model that only hid D_f relearns it in far fewer
steps than the oracle, which never saw it. Every member of an ensemble is
fine-tuned at once (one vmapped step per batch, the same batches for all),
member m until it reaches targets[m].

The fine-tuning updates 'params' only (as training does): a method whose
unlearned model keeps a head outside 'params' (ACU's analytic head) is
relearned through its backbone alone.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.errors import MuJaxError
from mu_jax.models import merge_variables, split_variables
from mu_jax.optim import make_optimizer
from mu_jax.train import TrainState, make_train_step

MAX_STEPS = 200   # a budget: ten epochs of digits' training set (~20 batches of 64 each)
EVAL_BATCH = 512


@jax.jit(static_argnums=0)
def _correct(task, stacked, batch):
  correct = jax.vmap(lambda v: task.statistics(task.apply(v, batch, False)[0], batch)['correct'])
  return jnp.sum(batch['w'] * correct(stacked), -1)


def _probe_batches(probe: Examples, batch_size: int, mesh) -> list[dict]:
  size = min(EVAL_BATCH, -(-len(probe) // batch_size) * batch_size)
  return [sharding.shard_batch(b, mesh) for b in
          epoch_batches(probe.arrays(), size, shuffle=False)]


def _accuracy(task, stacked, probe_batches, n: int) -> np.ndarray:
  return 100.0 * np.asarray(sum(_correct(task, stacked, b) for b in probe_batches)) / n


def probe_accuracy(task, stacked: dict, probe: Examples, *, batch_size: int,
                   mesh) -> np.ndarray:
  """Per-member accuracy [M] on `probe`, computed exactly as `relearn_steps` checks it.

  Use it for the targets: the same batches and compiled function give bitwise
  the same value for the same model.
  """
  return _accuracy(task, sharding.replicate(stacked, mesh),
                   _probe_batches(probe, batch_size, mesh), len(probe))


@functools.lru_cache(maxsize=32)
def _compiled(task, optimizer, learning_rate, momentum, weight_decay):
  """Jitted (vmapped init, vmapped step) for one model and recipe, built once per process."""
  tx = make_optimizer(optimizer, learning_rate, total_steps=1, momentum=momentum,
                      weight_decay=weight_decay)

  def init(variables):
    params, model_state = split_variables(variables)
    return TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))

  train_step = make_train_step(task, tx)
  return (jax.jit(jax.vmap(init)),
          jax.jit(jax.vmap(lambda st, batch: train_step(st, batch)[0], in_axes=(0, None))))


def split_relearn(forget: Examples, fraction: float,
                  seed: int) -> tuple[Examples, Examples]:
  """(relearn set, probe set): all of D_f twice, or a seeded `fraction` and the rest."""
  if fraction == 1.0:
    return forget, forget
  if not 0.0 < fraction < 1.0 or round(fraction * len(forget)) in (0, len(forget)):
    raise MuJaxError(f'Relearn fraction {fraction} leaves no relearn or no probe rows among '
                     f'{len(forget)} forget examples; use 1.0 or a fraction in between.')
  order = np.random.default_rng(seed).permutation(len(forget))
  cut = round(fraction * len(forget))
  return forget.take(np.sort(order[:cut])), forget.take(np.sort(order[cut:]))


def relearn_steps(task, stacked: dict, relearn: Examples, probe: Examples,
                  targets: np.ndarray, *, optimizer: str, learning_rate: float,
                  batch_size: int, mesh, max_steps: int = MAX_STEPS, seed: int = 0,
                  momentum: float = 0.9, weight_decay: float = 0.0) -> np.ndarray:
  """Steps [M] until member m's accuracy on `probe` is ≥ targets[m] (percent).

  Compute the targets with `probe_accuracy` (same batch size and mesh).
  0 if it already is; np.inf if not within `max_steps`. Batches of `relearn`
  are drawn epoch after epoch, shuffled by `seed`; the optimizer state starts
  fresh, with a constant learning rate. Records the members' mean probe
  accuracy after each step as 'relearn/probe_accuracy' (`mu_jax.logs`).
  """
  if len(relearn) == 0 or len(probe) == 0:
    raise MuJaxError('The relearning attack needs a non-empty forget set.')
  sharding.check_batch_size(batch_size, mesh)
  init, step = _compiled(task, optimizer, learning_rate, momentum, weight_decay)
  state = init(sharding.replicate(stacked, mesh))
  probe_batches = _probe_batches(probe, batch_size, mesh)

  def accuracy(st):
    return _accuracy(task, merge_variables(st.params, st.model_state), probe_batches,
                     len(probe))

  targets = np.asarray(targets, np.float64)
  steps = np.where(accuracy(state) >= targets, 0.0, np.inf)
  taken, epoch = 0, 0
  while taken < max_steps and np.isinf(steps).any():
    batches = epoch_batches(relearn.arrays(), batch_size, seed=seed, epoch=epoch)
    for batch in logs.progress(batches, unit='step', desc=f'relearning epoch {epoch + 1}'):
      state = step(state, sharding.shard_batch(batch, mesh))
      taken += 1
      probed = accuracy(state)
      logs.record(taken, {'probe_accuracy': np.mean(probed)}, prefix='relearn')
      reached = np.isinf(steps) & (probed >= targets)
      steps[reached] = taken
      if taken == max_steps or not np.isinf(steps).any():
        break
    epoch += 1
  return steps
