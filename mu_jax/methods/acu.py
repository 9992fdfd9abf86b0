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

Every row carries its index in the training set (`Context.forget_ids` and
`retain_ids`; without them, its position in the 'union' stream), and the head
keeps the ledger of the ids it holds (`ridge.RidgeState.learned`): a request
naming a row the head does not hold, or one row twice, is refused whole before
any arithmetic, since its downdate would silently corrupt the head.

`prepare` learns (or loads) the float64 head on D, computes the forget rows'
buffer features and checks their ids against the ledger; `update` is the
request itself, the pure Woodbury downdate, which the driver jits with 64-bit
types enabled (`Method.x64`); `result` returns float32 evaluation variables.
`resume` continues the head of a previous request (continual unlearning): the
next request is checked against the ledger that request left.
"""
import functools
import hashlib
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
# What the head's outputs become as logits. 'scores': the outputs themselves (ACU's; only
# their argmax is read there). 'log': log max(ŷ, LOG_FLOOR). A least-squares fit to one-hot
# targets estimates p(y | x), so its log gives a softmax ∝ max(ŷ, floor): the argmax is
# unchanged and a language model's probabilities, losses and truth ratios stay usable,
# where softmax(ŷ) over a vocabulary of V tokens is near 1/V for every token.
LOGITS = ('scores', 'log')
LOG_FLOOR = 1e-6     # this library's: 2,048 floored tokens hold at most 0.2% of the mass
# The head is float64 [buffer_size, outputs] and a Woodbury step holds [chunk, outputs]
# more: a memory guard (this library's), refusing e.g. a 256k-token vocabulary.
MAX_HEAD_GIB = 4.0


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


def learn_chunk(state: ridge.RidgeState, features, targets, buffer, ids, *,
                weights=None, chunk_size: int = ridge.CHUNK_SIZE) -> ridge.RidgeState:
  """Adds rows (penultimate features, float targets [N, C], row ids [N]) to the
  head: continual learning. Rows of weight 0 (padding) are left out."""
  return ridge.learn(state, *_rows(features, targets, buffer, ids, weights), chunk_size)


def forget_chunk(state: ridge.RidgeState, features, targets, buffer, ids, *,
                 weights=None, chunk_size: int = ridge.CHUNK_SIZE) -> ridge.RidgeState:
  """Removes rows the head holds, exactly: one unlearning request (refused whole
  if an id is not held or repeated)."""
  return ridge.forget(state, *_rows(features, targets, buffer, ids, weights), chunk_size)


def fit(features, targets, buffer, *, ids=None, num_ids: int | None = None,
        gamma: float = ridge.GAMMA, chunk_size: int = ridge.CHUNK_SIZE) -> ridge.RidgeState:
  """Learns a fresh head on (features, targets [N, C]) by recursive least squares.

  The rows' ids default to 0..N-1; the ledger spans ids 0..num_ids-1 (default:
  up to the largest id), so rows learned later need ids below num_ids.
  """
  ids = np.arange(np.shape(targets)[0]) if ids is None else np.asarray(ids)
  if num_ids is None:
    num_ids = int(ids.max()) + 1 if ids.size else 1
  state = ridge.init(buffer.shape[1], np.shape(targets)[1], num_ids, gamma)
  return learn_chunk(state, features, targets, buffer, ids, chunk_size=chunk_size)


def _rows(features, targets, buffer, ids, weights):
  """(X, Y, ids) for the ridge: float64 buffer features and targets of the rows
  of nonzero weight (all rows if `weights` is None), and their host ids."""
  ids = np.asarray(ids)
  if weights is not None:
    real = np.asarray(weights) > 0
    features, targets, ids = np.asarray(features)[real], np.asarray(targets)[real], ids[real]
  with jax.enable_x64(True):
    return buffer_features(features, buffer), jnp.asarray(targets, jnp.float64), ids


def make_apply(task, logits: str = 'scores'):
  """forward(variables, batch, train) -> (relu(f(x) @ W_b) @ W, {}) for `result`'s
  variables, or its log (`LOGITS`)."""

  def forward(variables, batch, train):
    del train   # the backbone is frozen and evaluated in eval mode
    model_variables = {k: v for k, v in variables.items() if k != 'acu'}
    features = task.features(model_variables, batch)
    head = variables['acu']
    scores = jax.nn.relu(features @ head['buffer']) @ head['head']
    return (scores if logits == 'scores' else jnp.log(jnp.maximum(scores, LOG_FLOOR))), {}

  return forward


def row_ids(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
  """The training-set ids of D_f's and D_r's rows (`Context.forget_ids` and
  `retain_ids`), or their positions in the 'union' stream if the context has none."""
  given = (ctx.forget_ids is not None, ctx.retain_ids is not None)
  if not any(given):
    return (np.arange(len(ctx.forget)),
            len(ctx.forget) + np.arange(len(ctx.retain)))
  if not all(given):
    raise MuJaxError('ACU needs the training-set ids of both D_f and D_r '
                     '(Context.forget_ids and retain_ids), or of neither.')
  ids = []
  for name, rows, given_ids in (('forget', ctx.forget, ctx.forget_ids),
                                ('retain', ctx.retain, ctx.retain_ids)):
    given_ids = np.asarray(given_ids)
    if given_ids.shape != (len(rows),) or not (
        given_ids.size == 0 or np.issubdtype(given_ids.dtype, np.integer)):
      raise MuJaxError(f'Context.{name}_ids must hold one integer id per {name} row '
                       f'({len(rows)}), got dtype {given_ids.dtype} and shape '
                       f'{given_ids.shape}.')
    ids.append(given_ids.astype(np.int64))
  values, counts = np.unique(np.concatenate(ids), return_counts=True)
  if (counts > 1).any() or (values < 0).any():
    bad = values[(counts > 1) | (values < 0)]
    raise MuJaxError(f'Context.forget_ids and retain_ids must name each training row once, '
                     f'by an id >= 0; they do not for {ridge.listed(bad)}.')
  return ids[0], ids[1]


def positions(task, example: dict) -> int:
  """Head rows per example: 1, or, for a task whose examples have positions
  (`Task.head_mask`), its context length P: example i's position t is head row i·P + t."""
  return 1 if jax.eval_shape(task.head_mask, example) is None else task.input_shape[0]


def check_head_size(buffer_size: int, outputs: int, chunk_size: int,
                    limit_gib: float = MAX_HEAD_GIB) -> None:
  """Refuses a float64 head (and a Woodbury step's residuals) above `limit_gib`."""
  gib = 8 * (buffer_size + chunk_size) * outputs / 2 ** 30
  if gib > limit_gib:
    raise MuJaxError(f'ACU\'s head for {outputs} outputs would hold {gib:.1f} GiB of float64 '
                     f'(buffer_size {buffer_size} + chunk_size {chunk_size} rows), above its '
                     f'{limit_gib} GiB limit; lower buffer_size and chunk_size or raise '
                     'max_head_gib.')


def _stream(ctx: Context, source: str, ids: np.ndarray, batch_size: int, features_fn):
  """Host (features, head targets, weights, head row ids) per batch of a stream's examples
  in ascending id order: for 'union' (D) the same order for every request, so a cached
  head is exactly the one a cold request computes. An example with positions
  (`Task.head_mask`) gives a head row per masked position, id i·P + t."""
  order = np.argsort(ids, kind='stable')
  arrays = {k: v[order] for k, v in {**ctx.arrays(source), 'id': ids}.items()}
  batches = ctx.batches_of(arrays, batch_size, shuffle=False)
  for batch in logs.progress(batches, unit='batch', desc=f'ACU features of {source}'):
    f, y, w, i, mask = jax.device_get((features_fn(batch), ctx.task.head_targets(batch),
                                       batch['w'], batch['id'], ctx.task.head_mask(batch)))
    if mask is None:
      yield f, y, w, i
      continue
    row, t = np.nonzero((np.asarray(mask) > 0) & (np.asarray(w)[:, None] > 0))
    yield (f[row, t], y[row, t], np.ones(len(row), np.float32),
           i[row] * ctx.task.input_shape[0] + t)


def _features_fn(ctx: Context, variables):
  return functools.partial(jax.jit(ctx.task.features), variables)


def _forget_rows(ctx: Context, head: ridge.RidgeState, features_fn, buffer, batch_size: int):
  """The request's forget rows for `update`, their ids checked against the head's ledger."""
  f, y, w, ids = (np.concatenate(parts) for parts in
                  zip(*_stream(ctx, 'forget', row_ids(ctx)[0], batch_size, features_fn)))
  forget_x, forget_y, forget_ids = _rows(f, y, buffer, ids, w)
  ridge.check_forget(head, forget_ids)
  return {'forget_x': forget_x, 'forget_y': forget_y, 'forget_ids': forget_ids}


def acu(*, buffer_size: int = BUFFER_SIZE,
        gamma: float = ridge.GAMMA,             # ACIL official config.py: --gamma 0.1
        batch_size: int = BATCH_SIZE,
        chunk_size: int = ridge.CHUNK_SIZE,
        logits: str = 'scores',
        max_head_gib: float = MAX_HEAD_GIB) -> Method:
  """ACU: a ridge head on frozen random-buffer features, D_f removed by Woodbury."""
  if logits not in LOGITS:
    raise MuJaxError(f'Unknown ACU logits={logits!r}; valid: {", ".join(LOGITS)}.')
  if not (isinstance(buffer_size, int) and buffer_size > 0):
    raise MuJaxError(f'ACU buffer_size must be a positive integer, got {buffer_size!r}.')
  ridge.check_gamma(gamma)
  if chunk_size < 1:
    raise MuJaxError(f'ACU chunk_size must be positive, got {chunk_size}.')

  def prepare(ctx: Context, variables):
    forget_ids, retain_ids = row_ids(ctx)
    union_ids = np.concatenate([forget_ids, retain_ids])
    features_fn = _features_fn(ctx, variables)
    example = ctx.retain.take(slice(0, 1)).arrays()
    probe = jax.eval_shape(ctx.task.features, variables, example)
    outputs = jax.eval_shape(ctx.task.head_targets, example).shape[-1]
    check_head_size(buffer_size, outputs, chunk_size, max_head_gib)
    buffer = buffer_weights(ctx.seed, probe.shape[-1], buffer_size)
    num_ids = (int(union_ids.max()) + 1) * positions(ctx.task, example)
    path = None
    if ctx.cache_dir:
      ledger = hashlib.sha1(np.sort(union_ids).tobytes()).hexdigest()   # the held ids
      key = cache.fingerprint(ctx, 'acu', buffer_size, float(gamma), ctx.seed,
                              outputs, num_ids, ledger, variables=variables)
      path = os.path.join(ctx.cache_dir, f'acu_{key}')
    saved = cache.load(path) if path else None
    cache_hit = saved is not None
    if cache_hit:
      with jax.enable_x64(True):
        state = ridge.RidgeState(*(jnp.asarray(saved[k]) for k in ridge.RidgeState._fields))
    else:
      state = ridge.init(buffer_size, outputs, num_ids, gamma)
      for f, y, w, ids in _stream(ctx, 'union', union_ids, batch_size, features_fn):
        state = learn_chunk(state, f, y, buffer, ids, weights=w, chunk_size=chunk_size)
      if path:
        cache.save(path, state._asdict())
    return {'variables': variables, 'buffer': buffer, 'ridge': state,
            'cache_hit': jnp.float32(cache_hit),
            **_forget_rows(ctx, state, features_fn, buffer, batch_size)}

  def resume(ctx: Context, state):
    if ctx.forget_ids is None:
      raise MuJaxError('ACU continues a head across requests only by training-set row ids; '
                       'give the request Context.forget_ids and retain_ids.')
    features_fn = _features_fn(ctx, state['variables'])
    return {**state, **_forget_rows(ctx, state['ridge'], features_fn, state['buffer'],
                                    batch_size)}

  def update(task, state, batch):
    del task, batch   # one request: the forget rows live in the state
    downdated = ridge.downdate(state['ridge'], state['forget_x'], state['forget_y'],
                               state['forget_ids'], chunk_size)
    return {**state, 'ridge': downdated}, {}

  def result(state):
    head = state['ridge'].W.astype(jnp.float32)
    return {**state['variables'], 'acu': {'buffer': state['buffer'], 'head': head}}

  def report(state):
    return {'cache_hit': state['cache_hit']}

  return Method(prepare, update, result, Stream('none', 1, batch_size),
                make_apply=functools.partial(make_apply, logits=logits), report=report, x64=True, requires=(LINEAR_HEAD,),
                resume=resume)
