"""TRAK: attribution by randomly projected after-kernel features (Park et al. 2023).

For an ensemble of M models (member m with parameters θ_m) of a classification
task (the output function and out-to-loss weight below are TRAK's for
cross-entropy; other tasks pass their own `output_fn` and `q_fn`):
  φ_m(z) = Pᵀ ∇_θ f(z; θ_m)            projected per-example output gradients,
                                        f the margin log(p/(1−p)) for training rows,
  Q_m(z) = −∂ℓ/∂f = 1 − p(z)            the out-to-loss weight,
  τ(x)_j = (1/M Σ_m φ_m(x)ᵀ (Φ_mᵀΦ_m + λI)⁺ φ_m(z_j)) · (1/M Σ_m Q_m(z_j)),
as MadryLab/trak `TRAKer.finalize_scores` ensembles it (scores averaged over
models, times the model-averaged out-to-loss). τ(x)_j estimates how much
training row j raises the output at x: removing j lowers it by about τ(x)_j.
Target outputs may be vectors (e.g. every logit), giving τ of shape [T, O, n].

Gradients are taken with `vmap(jacrev)` (a `lax.map` over rows where
`vmap_is_slow`) in chunks of `chunk_size` rows (the memory bound is
chunk_size × outputs × parameters floats), each chunk jitted and split over
the mesh's 'data' axis. The projection P is a function of its
seed, generated block by block: when parameters × k floats fit in
`MATRIX_BUDGET_BYTES` it is generated once per `features` call and reused by
every chunk; otherwise each chunk regenerates it block by block, so P need
not fit in memory. Both give the same P. `dim=0` skips the projection (exact
gradient features).
"""
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from mu_jax import ensembles, logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.errors import MuJaxError
from mu_jax.models import merge_variables, split_variables, vmap_is_slow
from mu_jax.tasks import margin

PROJECTIONS = ('rademacher', 'normal')
MATRIX_BUDGET_BYTES = 2 << 30   # materialise P when it fits in 2 GiB


class Projection(NamedTuple):
  """A seeded Johnson–Lindenstrauss projection to `dim` dims (0: none); static."""
  dim: int = 2048          # MadryLab/trak TRAKer(proj_dim=2048)
  kind: str = 'rademacher' # MadryLab/trak TRAKer: ProjectionType.rademacher
  seed: int = 0
  block: int = 4096        # parameters per generated block of P


def out_to_loss(logits: jax.Array, label: jax.Array) -> jax.Array:
  """Q = 1 − p_y = −∂(cross-entropy)/∂margin."""
  return 1.0 - jax.nn.softmax(logits)[label]


def margin_output(logits, label):
  """log(p_y / (1 − p_y)) = z_y − logsumexp_{k≠y} z_k, unclipped: TRAK's classification output."""
  return margin(logits[None], jnp.asarray(label)[None], clip=None)


def logits_output(logits, label):
  del label
  return logits


def _block(proj: Projection, b) -> jax.Array:
  """Rows [b·block, (b+1)·block) of P, [block, k], regenerated from the seed."""
  k = jax.random.fold_in(jax.random.PRNGKey(proj.seed), b)
  shape = (proj.block, proj.dim)
  if proj.kind == 'rademacher':
    return jax.random.rademacher(k, shape, jnp.float32)
  return jax.random.normal(k, shape, jnp.float32)


def _check(proj: Projection) -> None:
  if proj.kind not in PROJECTIONS:
    raise MuJaxError(f'Unknown projection {proj.kind!r}; valid: {", ".join(PROJECTIONS)}.')


@functools.partial(jax.jit, static_argnums=(0, 1))
def projection_matrix(proj: Projection, num_params: int) -> jax.Array:
  """P [num_params, k], the same blocks `project` regenerates, unscaled."""
  _check(proj)
  nb = -(-num_params // proj.block)
  blocks = jax.lax.map(lambda b: _block(proj, b), jnp.arange(nb))
  return blocks.reshape(nb * proj.block, proj.dim)[:num_params]


def fits_in_memory(proj: Projection, num_params: int) -> bool:
  return proj.dim > 0 and num_params * proj.dim * 4 <= MATRIX_BUDGET_BYTES


def project(grads: jax.Array, proj: Projection, matrix: jax.Array | None = None) -> jax.Array:
  """[..., P] -> [..., k]: grads @ P / sqrt(k); P is `matrix` if given, else regenerated."""
  if proj.dim == 0:
    return grads
  _check(proj)
  lead, p = grads.shape[:-1], grads.shape[-1]
  if matrix is not None:
    return (grads.reshape(-1, p) @ matrix / jnp.sqrt(proj.dim)).reshape(*lead, proj.dim)
  nb = -(-p // proj.block)
  flat = jnp.pad(grads.reshape(-1, p), ((0, 0), (0, nb * proj.block - p)))
  blocks = flat.reshape(flat.shape[0], nb, proj.block).transpose(1, 0, 2)

  def body(acc, xs):
    b, g = xs
    return acc + g @ _block(proj, b), None

  out, _ = jax.lax.scan(body, jnp.zeros((flat.shape[0], proj.dim), jnp.float32),
                        (jnp.arange(nb), blocks))
  return (out / jnp.sqrt(proj.dim)).reshape(*lead, proj.dim)


def _rows_features(variables, batch, matrix, *, task, output_fn, q_fn, proj, rowwise):
  """φ [B, O, k] and Q [B] of the rows of `batch`; padding rows are zero."""
  params, model_state = split_variables(variables)
  flat, unravel = ravel_pytree(params)
  rows = {k: batch[k] for k in task.keys}

  def outputs_of(p, row):
    one_row = jax.tree.map(lambda a: a[None], row)
    return task.apply(merge_variables(unravel(p), model_state), one_row, False)[0][0]

  def one(row):
    jac = jax.jacrev(lambda p: output_fn(outputs_of(p, row), row['y']))(flat)   # [O, P]
    return jac, q_fn(outputs_of(flat, row), row['y'])

  jac, q = jax.lax.map(one, rows) if rowwise else jax.vmap(one)(rows)
  w = batch['w']
  return project(jac, proj, matrix) * w[:, None, None], q * w


@functools.partial(jax.jit, static_argnames=('mesh', 'task', 'output_fn', 'q_fn', 'proj',
                                             'rowwise'))
def _chunk_features(variables, batch, matrix, *, mesh, **kwargs):
  """`_rows_features` of one padded chunk, each device on its own rows.

  Explicitly per device (shard_map): features need no communication, and
  XLA's automatic partitioning of the vmapped per-example convolution
  gradients returned wrong rows on the second of two CPU devices.
  """
  return jax.shard_map(functools.partial(_rows_features, **kwargs), mesh=mesh,
                       in_specs=(P(), P(sharding.DATA_AXIS), P()),
                       out_specs=P(sharding.DATA_AXIS), axis_names={sharding.DATA_AXIS},
                       check_vma=False)(variables, batch, matrix)


def features(task, stacked, examples: Examples, *,
             output_fn: Callable = margin_output, q_fn: Callable = out_to_loss,
             proj: Projection = Projection(), chunk_size: int = 64,
             mesh=None, rowwise: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-member projected output gradients [M, n, O, k] and out-to-loss weights [M, n].

  `stacked` holds M members (leading axis) of `task`'s model; output_fn(logits, y) -> [O];
  q_fn(logits, y) -> scalar. Members are featurized one after another so
  memory stays one chunk of one model. Each chunk's rows are vmapped, or with
  `rowwise` taken one at a time (None: where `vmap_is_slow`).
  """
  mesh = mesh or sharding.make_mesh('data:1')
  n = len(examples)
  num_models = jax.tree.leaves(stacked)[0].shape[0]
  num_params = sum(leaf[0].size for leaf in jax.tree.leaves(split_variables(stacked)[0]))
  matrix = (sharding.replicate(projection_matrix(proj, num_params), mesh)
            if fits_in_memory(proj, num_params) else None)
  if rowwise is None:
    rowwise = vmap_is_slow(stacked, stacked=True)
  phis, qs = [], []
  for m in range(num_models):
    variables = sharding.replicate(jax.tree.map(lambda leaf: leaf[m], stacked), mesh)
    chunks = epoch_batches({k: examples[k] for k in task.keys}, chunk_size, shuffle=False)
    parts = [_chunk_features(variables, sharding.shard_batch(batch, mesh), matrix, mesh=mesh,
                             task=task, output_fn=output_fn, q_fn=q_fn, proj=proj,
                             rowwise=rowwise)
             for batch in logs.progress(chunks, unit='chunk',
                                        desc=f'TRAK features, model {m + 1}/{num_models}')]
    phis.append(jnp.concatenate([p for p, _ in parts])[:n])
    qs.append(jnp.concatenate([q for _, q in parts])[:n])
  return jnp.stack(phis), jnp.stack(qs)


class TrakState(NamedTuple):
  """What scoring needs of the training set, per member m."""
  phi: jax.Array         # [M, n, k] training features (margin gradients)
  kernel_inv: jax.Array  # [M, k, k] (Φ_mᵀΦ_m + λI)⁺
  q: jax.Array           # [n] out-to-loss, averaged over members


@jax.jit
def _kernel_inverse(phi: jax.Array, lam: jax.Array) -> jax.Array:
  xtx = phi.T @ phi
  return jnp.linalg.pinv(xtx + lam * jnp.eye(xtx.shape[0]), hermitian=True)


def fit(task, stacked, examples: Examples, *,
        lam: float = 0.0, proj: Projection = Projection(), chunk_size: int = 64,
        mesh=None, output_fn: Callable = margin_output,
        q_fn: Callable = out_to_loss) -> TrakState:
  """Featurizes the training set with every member and inverts each kernel.

  With lam=0 the pseudo-inverse is used, so k > n (an interpolating kernel) is fine.
  """
  phi, q = features(task, stacked, examples, output_fn=output_fn, q_fn=q_fn, proj=proj,
                    chunk_size=chunk_size, mesh=mesh)
  if phi.shape[2] != 1:
    raise MuJaxError('TRAK training features need a scalar output function (O = 1).')
  phi = phi[:, :, 0]
  kinv = jax.vmap(_kernel_inverse, (0, None))(phi, jnp.float32(lam))
  return TrakState(phi, kinv, jnp.mean(q, axis=0))


@jax.jit
def scores(state: TrakState, target_phi: jax.Array) -> jax.Array:
  """τ [T, O, n] from target features [M, T, O, k]."""
  per_model = jnp.einsum('mtok,mkl,mnl->ton', target_phi, state.kernel_inv, state.phi)
  return per_model / target_phi.shape[0] * state.q


@jax.jit
def removal_direction(state: TrakState, rows: jax.Array) -> jax.Array:
  """v_m = (Φ_mᵀΦ_m + λI)⁺ Σ_{j∈rows} φ_m(z_j) Q_j, [M, k]: τ summed over `rows`."""
  phi = state.phi[:, rows]                         # [M, r, k]
  return jnp.einsum('mkl,mrl,r->mk', state.kernel_inv, phi, state.q[rows])


@jax.jit
def summed_scores(target_phi: jax.Array, direction: jax.Array) -> jax.Array:
  """Σ_{j∈rows} τ(x)_j [T, O] from target features [M, T, O, k] and `removal_direction`."""
  return jnp.einsum('mtok,mk->to', target_phi, direction) / target_phi.shape[0]


def lift(direction: jax.Array, proj: Projection, num_params: int) -> jax.Array:
  """P v / sqrt(k) [M, P]: so φ(x)ᵀ v = ∇f(x)ᵀ lift(v), a directional derivative."""
  if proj.dim == 0:
    return direction
  _check(proj)
  nb = -(-num_params // proj.block)
  out = jax.lax.map(lambda b: direction @ _block(proj, b).T, jnp.arange(nb))   # [nb, M, block]
  out = out.transpose(1, 0, 2).reshape(direction.shape[0], -1)[:, :num_params]
  return out / jnp.sqrt(proj.dim)


def removal_tangents(state: TrakState, rows: np.ndarray, stacked, proj: Projection):
  """Per-member parameter tangents u_m (pytrees like params, stacked) with
  Σ_{j∈rows} τ(x)_j = 1/M Σ_m ∂_u f(x; θ_m): attribution at any x by one JVP."""
  params, _ = split_variables(stacked)
  flat, unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], params))
  u = lift(removal_direction(state, jnp.asarray(rows)), proj, flat.size)
  return jax.vmap(unravel)(u)


def directional_outputs(task, stacked, tangents, batch: dict) -> jax.Array:
  """1/M Σ_m (d/dε) outputs(x; θ_m + ε u_m) [N, C], eval mode: summed scores at x."""
  params, model_state = split_variables(stacked)

  def one(p, s, u):
    fn = lambda q: task.apply(merge_variables(q, s), batch, False)[0]
    return jax.jvp(fn, (p,), (u,))[1]

  return jnp.mean(ensembles.map_members(one, params, model_state, tangents), axis=0)
