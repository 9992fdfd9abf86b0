"""Meshes and NamedShardings: batches split over 'data', large params over 'model'.

A mesh comes from a spec such as 'data:8' or 'data:4,model:2'. Batches are
split along their leading axis over 'data'; parameters and optimizer state are
replicated, except that on a mesh with a 'model' axis every leaf of at least
`MIN_SHARDED_SIZE` elements is split over it (`state_sharding`), so that large
models need not fit on one device. Jitted steps declare these shardings and
XLA partitions the computation.

Multi-host: after `jax.distributed.initialize()` (see `mu_jax.cli`) every
process runs the same program on the same host data; `shard_batch` and
`replicate` then build global arrays of which each process transfers only its
own devices' shards, `to_host` gathers across processes, and `is_primary`
picks the one process that writes logs and results.
"""
import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mu_jax.errors import MuJaxError

DATA_AXIS = 'data'
MODEL_AXIS = 'model'
AXES = (DATA_AXIS, MODEL_AXIS)
# Leaves smaller than this (elements; 4 MiB of float32) stay replicated on a
# 'model' axis: splitting them saves little memory and adds collectives.
MIN_SHARDED_SIZE = 2**20


def make_mesh(spec: str = '') -> Mesh:
  """Builds a mesh from a spec like 'data:8' or 'data:4,model:2'.

  An empty spec (or 'auto') puts every device on the data axis; a spec may
  use fewer devices than there are (the first ones).
  """
  if spec in ('', 'auto'):
    return _mesh((jax.device_count(),), (DATA_AXIS,))
  names, sizes = [], []
  for part in spec.split(','):
    name, _, size = part.partition(':')
    if not size.strip().isdigit() or int(size) < 1:
      raise MuJaxError(
          f"Mesh spec {spec!r} is malformed; write axes as 'data:8' or "
          "'data:4,model:2'.")
    names.append(name.strip())
    sizes.append(int(size))
  if DATA_AXIS not in names:
    raise MuJaxError(f"Mesh spec {spec!r} has no 'data' axis; add one.")
  if len(set(names)) != len(names) or not set(names) <= set(AXES):
    raise MuJaxError(f"Mesh spec {spec!r} names axes other than once each of "
                     f"{', '.join(AXES)}; use e.g. 'data:4,model:2'.")
  if math.prod(sizes) > jax.device_count():
    raise MuJaxError(
        f'Mesh spec {spec!r} needs {math.prod(sizes)} devices but only '
        f'{jax.device_count()} are visible; change the mesh option.')
  return _mesh(tuple(sizes), tuple(names))


def _mesh(sizes: tuple[int, ...], names: tuple[str, ...]) -> Mesh:
  # Auto axes: XLA propagates shardings from the declared inputs and outputs,
  # so model code needs no sharding annotations.
  return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(sizes),
                       devices=jax.devices()[:math.prod(sizes)])


def data_size(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def is_primary() -> bool:
  """True on the one process (index 0) that writes logs, results and files."""
  return jax.process_index() == 0


def _put(leaf, sharding: NamedSharding) -> jax.Array:
  """`leaf` as a global array with `sharding`; each process fills its own shards."""
  if jax.process_count() == 1 or isinstance(leaf, jax.Array):
    return jax.device_put(leaf, sharding)
  leaf = np.asarray(leaf)
  return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])


def shard_batch(batch, mesh: Mesh):
  """Places a host batch on the mesh, split along its leading axis over 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda leaf: _put(leaf, sharding), batch)


def pace(tree, mesh: Mesh):
  """Waits for `tree` when `mesh` spans several CPU devices, else returns at once.

  XLA:CPU runs fake devices on one shared thread pool: with several
  collective-bearing steps in flight, their all-reduces can hold every pool
  thread while waiting for devices that have no thread left (seen with 8 fake
  devices on 2 cores: half the devices waited forever). Real accelerators
  keep their asynchronous dispatch.
  """
  if mesh.size > 1 and mesh.devices.flat[0].platform == 'cpu':
    jax.block_until_ready(tree)
  return tree


def replicate(tree, mesh: Mesh):
  """Places a pytree on every device of the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda leaf: _put(leaf, sharding), tree)


def onto_mesh(tree, mesh: Mesh):
  """Replicates every array leaf that is not yet on `mesh`; others keep their sharding.

  A jitted step's outputs live on the mesh; giving its first inputs the same
  placement keeps the second call from retracing.
  """

  def place(leaf):
    on_mesh = isinstance(leaf, jax.Array) and getattr(leaf.sharding, 'mesh', None) == mesh
    return leaf if on_mesh or not isinstance(leaf, (jax.Array, np.ndarray)) else (
        _put(leaf, replicated(mesh)))

  return jax.tree.map(place, tree)


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh,
                  min_size: int = MIN_SHARDED_SIZE) -> NamedSharding:
  """Split over 'model' along the largest dimension it divides, if the leaf is large."""
  ways = mesh.shape.get(MODEL_AXIS, 1)
  if ways == 1 or math.prod(shape) < min_size:
    return replicated(mesh)
  fits = [d for d in range(len(shape)) if shape[d] % ways == 0]
  if not fits:
    return replicated(mesh)
  dim = max(fits, key=lambda d: shape[d])
  return NamedSharding(mesh, P(*([None] * dim), MODEL_AXIS))


def state_sharding(tree, mesh: Mesh, min_size: int = MIN_SHARDED_SIZE):
  """NamedShardings for a params / optimizer-state pytree (see `leaf_sharding`)."""
  return jax.tree.map(lambda leaf: leaf_sharding(np.shape(leaf), mesh, min_size), tree)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % data_size(mesh):
    raise MuJaxError(
        f'Batch size {batch_size} does not divide over {data_size(mesh)} '
        'data-parallel devices; use a multiple of the data axis size.')


def to_host(tree):
  """Fetches a (possibly sharded, possibly multi-host) pytree as NumPy arrays."""

  def fetch(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))

  return jax.tree.map(fetch, tree)
