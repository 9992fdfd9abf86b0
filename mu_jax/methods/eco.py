"""ECO: embedding-corrupted prompts (Liu et al., "Large Language Model Unlearning via
Embedding-Corrupted Prompts", NeurIPS 2024, arXiv:2406.07933; official code
chrisliu298/llm-unlearn-eco).

The weights never change. A prompt classifier flags prompts about the forget
target; a flagged prompt's token embeddings get Gaussian noise of strength σ on
their first `dims` coordinates (the official `rand_noise_first_n`), on every
prompt token but the last (the official labels when no token classifier marks
entities, `AttackedModel.predict_token_attack_label`). Only the prompt is
corrupted: scored answer tokens and generated tokens are embedded cleanly, as
the official hook corrupts the prefill. The result is the original variables
plus a collection 'eco' (classifier weights and σ) that the returned forward
pass, and its decoder for greedy generation, read.

σ is found by the official scalar zeroth-order optimiser (`eco/optimizer/zoo.py`:
a central-difference estimate of df/dσ, a gradient step, a floor), here on log σ,
toward an objective f(σ) = (L_f(σ)/target − 1)², L_f the mean loss of the
forget rows' flagged prompts' answers.

Where this differs from the official code, on purpose:
- The classifier: the official code fine-tunes RoBERTa (`scripts/train_classifier.py`),
  which cannot be loaded offline; here it is a logistic regression on hashed
  unigram and bigram counts of the prompt's tokens, with the official
  class-balanced cross-entropy, trained full-batch by Adam.
- The noise is drawn from a key folded with a hash of the prompt's tokens (the
  official code draws fresh noise at every call), so one prompt always gets the
  same corruption: scoring and decoding see one model, and runs repeat exactly.
- The target: the official TOFU protocol picks σ from a grid by forget quality
  against the retain model, its WMDP protocol by this optimiser toward chance
  accuracy. Here the target is the original model's mean loss on held-out rows
  it never trained on (`Context.holdout`), which needs no retained model;
  `target_nll` > 0 sets it directly.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mu_jax import sharding
from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Context, Method, Stream
from mu_jax.models import decoding
from mu_jax.tasks import TOKENS, Task

# Odd multipliers of the bucket hash (Knuth's multiplicative constant and a second).
_HASH = (2654435761, 40503)


def prompt_lengths(batch: dict) -> jax.Array:
  """Each row's prompt length [N]: the first scored position (the whole row if none is)."""
  scored = batch['m'] > 0
  return jnp.where(scored.any(-1), jnp.argmax(scored, -1), scored.shape[1])


def prompt_features(x: jax.Array, lengths: jax.Array, buckets: int) -> jax.Array:
  """Hashed unigram and bigram counts of each row's prompt x[i, :lengths[i]], L2-normalised:
  float32 [N, buckets]."""
  n, width = x.shape
  t = jnp.arange(width)
  x = x.astype(jnp.uint32)
  uni = (x * jnp.uint32(_HASH[0])) % buckets
  bi = ((x[:, :-1] * jnp.uint32(_HASH[0])) ^ (x[:, 1:] * jnp.uint32(_HASH[1]))) % buckets
  keep_uni = (t[None] < lengths[:, None]).astype(jnp.float32)
  keep_bi = (t[None, 1:] < lengths[:, None]).astype(jnp.float32)
  rows = jnp.arange(n)[:, None]
  counts = jnp.zeros((n, buckets), jnp.float32)
  counts = counts.at[rows, uni.astype(jnp.int32)].add(keep_uni)
  counts = counts.at[rows, bi.astype(jnp.int32)].add(keep_bi)
  return counts / jnp.maximum(jnp.linalg.norm(counts, axis=-1, keepdims=True), 1e-12)


def flagged(eco: dict, x: jax.Array, lengths: jax.Array, buckets: int,
            threshold: float) -> jax.Array:
  """Whether the classifier's probability that a prompt is about the forget target
  exceeds `threshold` [N] bool."""
  logit = prompt_features(x, lengths, buckets) @ eco['w'] + eco['b']
  return jax.nn.sigmoid(logit) > threshold


def prompt_noise(key: jax.Array, x: jax.Array, lengths: jax.Array, width: int,
                 dims: int) -> jax.Array:
  """Standard normal noise [N, width, dims]: position t of a row draws from `key` folded
  with a hash of the row's prompt tokens, then with t; so it depends on the prompt and the
  position only, not on the batch or the width."""
  t = jnp.arange(x.shape[1])
  weights = jax.random.bits(jax.random.fold_in(key, 1), (x.shape[1],), jnp.uint32)
  tokens = jnp.where(t[None] < lengths[:, None], x.astype(jnp.uint32) + 1, 0)
  digest = jnp.sum(tokens * weights[None], -1)   # wraps modulo 2^32

  def draw(d, position):
    return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, d), position), (dims,))

  positions = jnp.arange(width)
  return jax.vmap(lambda d: jax.vmap(lambda p: draw(d, p))(positions))(digest)


class Corruption(NamedTuple):
  """ECO's static settings: what the forward pass and the decoder need besides 'eco'."""
  dims: int           # noised coordinates per embedding (0: all)
  buckets: int
  threshold: float


def corrupter(settings: Corruption, eco: dict, x: jax.Array, lengths: jax.Array) -> Callable:
  """corrupt(embeddings [N, T, D]) -> embeddings with noise σ·ε on the first `dims`
  coordinates of the flagged rows' prompt tokens but the last (positions < length − 1).
  `eco` holds the classifier ('w', 'b'), 'sigma' and the noise 'key' (raw key data)."""
  hit = flagged(eco, x, lengths, settings.buckets, settings.threshold)

  def corrupt(embeddings):
    width, d = embeddings.shape[1], embeddings.shape[2]
    dims = d if settings.dims == 0 else min(settings.dims, d)
    noise = prompt_noise(jax.random.wrap_key_data(eco['key']), x, lengths, width, dims)
    where = hit[:, None] & (jnp.arange(width)[None] < (lengths - 1)[:, None])
    noise = jnp.where(where[..., None], eco['sigma'] * noise, 0.0)
    return embeddings + jnp.pad(noise, ((0, 0), (0, 0), (0, d - dims))).astype(embeddings.dtype)

  return corrupt


def without_eco(variables: dict) -> dict:
  """The model's own variables: all but the 'eco' collection."""
  return {k: v for k, v in variables.items() if k != 'eco'}


def eco_forward(task: Task, settings: Corruption) -> Callable:
  """forward(variables, batch, train) of the ECO-wrapped model (variables carry 'eco'), with
  a greedy decoder registered under it that corrupts the prefill only."""
  model = task.model

  def forward(variables, batch, train):
    eco, inner = variables['eco'], without_eco(variables)
    corrupt = corrupter(settings, eco, batch['x'], prompt_lengths(batch))
    return model.embedded(inner, batch['x'], train, corrupt)

  base = decoding.decoder_of(model)
  if base is not None:
    def prefill(variables, prompts, lengths, size):
      eco, inner = variables['eco'], without_eco(variables)
      return base.prefill(inner, prompts, lengths, size,
                          corrupter(settings, eco, prompts, lengths))

    def step(variables, cache, tokens, index):
      return base.step(without_eco(variables), cache, tokens, index)

    decoding.register_decoder(forward, decoding.Decoder(base.max_len, prefill, step))
  return forward


def train_classifier(features: jax.Array, labels: jax.Array, *, steps: int,
                     learning_rate: float) -> dict:
  """Logistic regression {'w', 'b'} by full-batch Adam from zero, each class weighted by
  N / (2 N_class) (the official weighted cross-entropy)."""
  counts = jnp.stack([jnp.sum(1 - labels), jnp.sum(labels)])
  weights = jnp.where(labels > 0, 1.0, 0.0) * (labels.size / (2 * counts[1])) + \
      jnp.where(labels > 0, 0.0, 1.0) * (labels.size / (2 * counts[0]))
  params = {'w': jnp.zeros(features.shape[1], jnp.float32), 'b': jnp.zeros((), jnp.float32)}
  optimizer = optax.adam(learning_rate)

  def loss(p):
    logits = features @ p['w'] + p['b']
    return jnp.mean(weights * optax.sigmoid_binary_cross_entropy(logits, labels))

  def body(_, carry):
    p, opt = carry
    updates, opt = optimizer.update(jax.grad(loss)(p), opt, p)
    return optax.apply_updates(p, updates), opt

  return jax.lax.fori_loop(0, steps, body, (params, optimizer.init(params)))[0]


def zeroth_order(objective: Callable[[float], float], sigma: float, *, steps: int, lr: float,
                 eps: float, tolerance: float) -> tuple[float, list[dict]]:
  """(best σ seen, the trace) of the official scalar zeroth-order optimiser on s = log σ:
  g = (f(e^(s+ε)) − f(e^(s−ε))) / 2ε, s ← s − lr·g, stopping once f < tolerance."""
  s, best, trace = float(np.log(sigma)), (float('inf'), sigma), []
  for _ in range(steps):
    forward, backward = objective(float(np.exp(s + eps))), objective(float(np.exp(s - eps)))
    best = min(best, (forward, float(np.exp(s + eps))), (backward, float(np.exp(s - eps))))
    trace.append({'sigma': float(np.exp(s)), 'f_forward': forward, 'f_backward': backward})
    if best[0] < tolerance:
      break
    s -= lr * (forward - backward) / (2 * eps)
  return best[1], trace


class EcoState(NamedTuple):
  variables: dict     # the original variables with 'eco'
  info: dict          # report numbers (host floats)


def eco(threshold: float = 0.99,    # official scripts/evaluate_tofu.py --classifier_threshold
        dims: int = 0,              # 0 = every coordinate: the TOFU grid's {embedding_dim}
        sigma: float = 0.1,         # official zeroth_order_optim.py initial_corrupt_strength
        zo_steps: int = 10,         # official zeroth_order_optim.py num_steps
        zo_lr: float = 10.0,        # this library's choice: the objective here is unitless
        zo_eps: float = 0.1,        # this library's choice: ±10% of σ per difference
        tolerance: float = 1e-3,    # this library's choice: f < 1e-3 is |L_f/target − 1| < 3%
        target_nll: float = 0.0,    # 0 = the original model's mean loss on Context.holdout
        buckets: int = 16384,       # this library's choice: 2^14 hashed n-gram features
        classifier_steps: int = 300,   # this library's choice (full-batch Adam)
        classifier_lr: float = 0.1,    # this library's choice
        batch_size: int = 64,       # forward passes of the σ search
        ) -> Method:
  """ECO: a prompt classifier and embedding noise of a searched strength; weights untouched."""
  if not 0.0 < threshold < 1.0 or sigma <= 0 or dims < 0 or zo_steps < 1 or buckets < 2:
    raise MuJaxError('ECO needs 0 < threshold < 1, sigma > 0, dims ≥ 0 (0 = all), '
                     'zo_steps ≥ 1 and buckets ≥ 2.')

  def prepare(ctx: Context, variables: dict) -> EcoState:
    # A model already wrapped by ECO (an earlier request) is wrapped anew for this one.
    variables = without_eco(variables)
    if ctx.task.model.embedded is None:
      raise MuJaxError(f'Method \'eco\' corrupts token embeddings, which model '
                       f'{ctx.task.model.name!r} does not expose (Model.embedded); pick another '
                       'method.')
    settings = Corruption(dims, buckets, threshold)
    key = jax.random.key_data(jax.random.key(ctx.seed))
    forget, retain = ctx.forget.arrays(), ctx.retain.arrays()
    x = jnp.concatenate([forget['x'], retain['x']])
    lengths = prompt_lengths({'m': jnp.concatenate([forget['m'], retain['m']])})
    labels = jnp.concatenate([jnp.ones(len(forget['x'])), jnp.zeros(len(retain['x']))])
    asks = lengths >= 2   # rows with a question (passages have only BOS before their text)
    if not bool(jnp.any(asks[:len(forget['x'])])):
      raise MuJaxError('ECO classifies prompts, and no forget row has one (each row scores '
                       'its tokens from the first on); give it question–answer rows.')
    features, labels = prompt_features(x, lengths, buckets)[asks], labels[asks]
    classifier = jax.jit(train_classifier, static_argnames=('steps',))(
        features, labels, steps=classifier_steps, learning_rate=classifier_lr)
    task = ctx.task.with_forward(eco_forward(ctx.task, settings))
    mean_loss = _mean_loss(task)
    forget_rows = {k: v[np.asarray(asks[:len(forget['x'])])] for k, v in forget.items()}

    losses = {}   # σ -> L_f(σ): the search's best σ is not scored again

    def forget_loss(s):
      if s not in losses:
        eco_vars = {**variables, 'eco': {**classifier, 'sigma': jnp.float32(s), 'key': key}}
        losses[s] = _average(mean_loss, eco_vars, ctx, forget_rows, batch_size)
      return losses[s]

    target = target_nll or _holdout_loss(ctx, variables, batch_size)
    start = forget_loss(0.0)
    best, trace = zeroth_order(lambda s: (forget_loss(s) / target - 1.0) ** 2, sigma,
                               steps=zo_steps, lr=zo_lr, eps=zo_eps, tolerance=tolerance)
    # The flags of the rows the classifier was fitted on, from the same features.
    flags = jax.nn.sigmoid(features @ classifier['w'] + classifier['b']) > threshold
    mean_flag = lambda rows: float(jnp.mean(flags[rows])) if bool(jnp.any(rows)) else float('nan')
    info = {'sigma': best, 'target_nll': float(target), 'forget_nll_clean': float(start),
            'forget_nll': float(forget_loss(best)), 'zo_evaluations': 2 * len(trace),
            'flagged forget': mean_flag(labels > 0), 'flagged retain': mean_flag(labels == 0)}
    out = {**variables, 'eco': {**classifier, 'sigma': jnp.float32(best), 'key': key}}
    return EcoState(sharding.replicate(out, ctx.mesh), info)

  def update(task, state, batch):
    del task, batch
    return state, {}

  return Method(prepare, update, lambda s: s.variables, Stream('none'),
                make_apply=lambda task: eco_forward(task, Corruption(dims, buckets, threshold)),
                report=lambda s: s.info, requires=(TOKENS,))


def _mean_loss(task: Task) -> Callable:
  @jax.jit
  def run(variables, batch):
    outputs = task.apply(variables, batch, False)[0]
    return jnp.sum(task.losses(outputs, batch) * batch['w']), jnp.sum(batch['w'])
  return run


def _average(run: Callable, variables: dict, ctx: Context, rows: dict,
             batch_size: int) -> float:
  """Mean per-example loss of `rows` under `run`, in the request's sharded batches
  (summed on device, fetched once)."""
  sums = [run(variables, batch) for batch in ctx.batches_of(rows, batch_size, shuffle=False)]
  total, count = (float(sum(part)) for part in zip(*sums))
  return total / max(count, 1.0)


def _holdout_loss(ctx: Context, variables: dict, batch_size: int) -> float:
  if ctx.holdout is None or not len(ctx.holdout):
    raise MuJaxError("ECO's σ search aims at the original model's loss on held-out rows, and "
                     'this request has none; set target_nll > 0.')
  rows = ctx.holdout.arrays()
  asks = np.asarray(prompt_lengths({'m': jnp.asarray(rows['m'])})) >= 2
  return _average(_mean_loss(ctx.task), variables, ctx,
                  {k: v[asks] for k, v in rows.items()}, batch_size)

