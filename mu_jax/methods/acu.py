"""Analytic Continual Unlearning (ACU): exact forgetting in a ridge head.

Tang et al., "ACU: Analytic Continual Unlearning for Efficient and Exact
Forgetting with Privacy Preservation", arXiv:2505.12239 (2025), built on the
analytic-learning family ACIL / GKEAL / DS-AL (official code:
github.com/ZHUANGHP/Analytic-continual-learning).

The trained backbone is frozen. Its penultimate features pass through a fixed
random buffer layer, relu(f @ W_b), and a ridge head is learned on top by
recursive least squares over the full training set D: the model re-expressed
analytically. The head's targets are the task's (`Task.head_targets`:
one-hot labels of a classifier, the targets of a regression), so ACU serves
any task with a final linear layer (LINEAR_HEAD). Each forget request is then a Woodbury downdate of (R, W), which
gives exactly the head a from-scratch ridge fit on the retained rows would give
(see mu_jax.analytic.ridge), without touching D_r. The learned (R, W) on D
depend only on the model, D and the hyper-parameters, so they are cached under
ctx.cache_dir and a request pays only for its downdate.

`prepare` learns (or loads) the float64 head on D and computes the forget
rows' buffer features; `update` is the request itself, the pure Woodbury
downdate, which the driver jits with 64-bit types enabled (`Method.x64`);
`result` returns float32 evaluation variables.
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import logs
from mu_jax.analytic import ridge
from mu_jax.errors import MuJaxError
from mu_jax.methods import cache
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.tasks import LINEAR_HEAD

BUFFER_SIZE = 2048   # ACIL official config.py: --buffer-size 8192; 2048 keeps R at 32 MB
BATCH_SIZE = 256     # ACIL official config.py: --batch-size 256 (IL batch size defaults to it)


def buffer_weights(seed: int, in_features: int, buffer_size: int) -> jax.Array:
  """The fixed random buffer W_b [in, buffer], float32.

  Uniform(+-1/sqrt(in)), the torch.nn.Linear default that ACIL's RandomBuffer
  keeps (analytic/Buffer.py calls reset_parameters and has no bias).
  """
  bound = 1.0 / np.sqrt(in_features)
  return jax.random.uniform(jax.random.key(seed), (in_features, buffer_size),
                            jnp.float32, -bound, bound)


def buffer_features(features, buffer) -> jax.Array:
  """relu(features @ W_b) in float64: the ridge head's input."""
  with jax.enable_x64(True):
    return jax.nn.relu(jnp.asarray(features, jnp.float64) @ jnp.asarray(buffer, jnp.float64))


def learn_chunk(state: ridge.RidgeState, features, targets, buffer, *,
                weights=None, chunk_size: int = ridge.CHUNK_SIZE) -> ridge.RidgeState:
  """Adds rows (penultimate features, float targets [N, C]) to the head:
  continual learning. `weights` (0 or 1 per row) drops padding rows."""
  return ridge.learn(state, *_rows(features, targets, buffer, weights), chunk_size)


def forget_chunk(state: ridge.RidgeState, features, targets, buffer, *,
                 weights=None, chunk_size: int = ridge.CHUNK_SIZE) -> ridge.RidgeState:
  """Removes previously learned rows from the head exactly: one unlearning request."""
  return ridge.forget(state, *_rows(features, targets, buffer, weights), chunk_size)


def fit(features, targets, buffer, *, gamma: float = ridge.GAMMA,
        chunk_size: int = ridge.CHUNK_SIZE) -> ridge.RidgeState:
  """Learns a fresh head on (features, targets [N, C]) by recursive least squares."""
  state = ridge.init(buffer.shape[1], np.shape(targets)[1], gamma)
  return learn_chunk(state, features, targets, buffer, chunk_size=chunk_size)


def _rows(features, targets, buffer, weights):
  """(X, Y) for the ridge in float64: buffer features and targets, zeroed where weight is 0."""
  X = buffer_features(features, buffer)
  with jax.enable_x64(True):
    Y = jnp.asarray(targets, jnp.float64)
    if weights is None:
      return X, Y
    w = jnp.asarray(weights, jnp.float64)[:, None]
    return X * w, Y * w


def make_apply(task):
  """forward(variables, batch, train) -> (relu(f(x) @ W_b) @ W, {}) for `result`'s variables."""

  def forward(variables, batch, train):
    del train   # the backbone is frozen and evaluated in eval mode
    model_variables = {k: v for k, v in variables.items() if k != 'acu'}
    features = task.features(model_variables, batch)
    head = variables['acu']
    return jax.nn.relu(features @ head['buffer']) @ head['head'], {}

  return forward


def _stream(ctx: Context, source: str, batch_size: int, features_fn):
  """Host (features, head targets, weights) per batch of a stream, in a fixed order."""
  batches = ctx.batches(source, batch_size, shuffle=False)
  for batch in logs.progress(batches, unit='batch', desc=f'ACU features of {source}'):
    yield jax.device_get((features_fn(batch), ctx.task.head_targets(batch), batch['w']))


def acu(*, buffer_size: int = BUFFER_SIZE,
        gamma: float = ridge.GAMMA,             # ACIL official config.py: --gamma 0.1
        batch_size: int = BATCH_SIZE,
        chunk_size: int = ridge.CHUNK_SIZE) -> Method:
  """ACU: a ridge head on frozen random-buffer features, D_f removed by Woodbury."""
  if not (isinstance(buffer_size, int) and buffer_size > 0):
    raise MuJaxError(f'ACU buffer_size must be a positive integer, got {buffer_size!r}.')
  ridge.check_gamma(gamma)
  if chunk_size < 1:
    raise MuJaxError(f'ACU chunk_size must be positive, got {chunk_size}.')

  def prepare(ctx: Context, variables):
    features_fn = functools.partial(jax.jit(ctx.task.features), variables)
    probe = jax.eval_shape(ctx.task.features, variables, ctx.retain.take(slice(0, 1)).arrays())
    outputs = jax.eval_shape(ctx.task.head_targets, ctx.retain.take(slice(0, 1)).arrays())
    buffer = buffer_weights(ctx.seed, probe.shape[1], buffer_size)
    path = None
    if ctx.cache_dir:
      key = cache.fingerprint(ctx, 'acu', buffer_size, float(gamma), ctx.seed,
                              outputs.shape[1], variables=variables)
      path = os.path.join(ctx.cache_dir, f'acu_{key}')
    saved = cache.load(path) if path else None
    cache_hit = saved is not None
    if cache_hit:
      with jax.enable_x64(True):
        state = ridge.RidgeState(jnp.asarray(saved['R']), jnp.asarray(saved['W']))
    else:
      state = ridge.init(buffer_size, outputs.shape[1], gamma)
      for f, y, w in _stream(ctx, 'union', batch_size, features_fn):
        state = learn_chunk(state, f, y, buffer, weights=w, chunk_size=chunk_size)
      if path:
        cache.save(path, state._asdict())
    f, y, w = (np.concatenate(parts) for parts in
               zip(*_stream(ctx, 'forget', batch_size, features_fn)))
    real = w > 0
    forget_x, forget_y = _rows(f[real], y[real], buffer, None)
    return {'variables': variables, 'buffer': buffer, 'ridge': state,
            'forget_x': forget_x, 'forget_y': forget_y, 'cache_hit': jnp.float32(cache_hit)}

  def update(task, state, batch):
    del task, batch   # one request: the forget rows live in the state
    downdated = ridge.forget(state['ridge'], state['forget_x'], state['forget_y'], chunk_size)
    return {**state, 'ridge': downdated}, {}

  def result(state):
    head = state['ridge'].W.astype(jnp.float32)
    return {**state['variables'], 'acu': {'buffer': state['buffer'], 'head': head}}

  def report(state):
    return {'cache_hit': state['cache_hit']}

  return Method(prepare, update, result, Stream('none', 1, batch_size),
                make_apply=make_apply, report=report, x64=True, requires=(LINEAR_HEAD,))
