"""Mesh and NamedSharding helpers: batches are split over 'data', params replicated."""
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mu_jax.errors import MuJaxError

DATA_AXIS = 'data'


def make_mesh(spec: str = '') -> Mesh:
  """Builds a mesh from a spec like 'data:8' or 'data:4,model:2'.

  An empty spec (or 'auto') puts every visible device on the data axis; a
  spec may use fewer devices than are visible (the first ones).
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
  if math.prod(sizes) > jax.device_count():
    raise MuJaxError(
        f'Mesh spec {spec!r} needs {math.prod(sizes)} devices but only '
        f'{jax.device_count()} are visible; change the mesh option.')
  return _mesh(tuple(sizes), tuple(names))


def _mesh(sizes: tuple[int, ...], names: tuple[str, ...]) -> Mesh:
  # Auto axes: XLA propagates shardings from the inputs (batch split over
  # 'data', params replicated), so model code needs no sharding annotations.
  return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(sizes),
                       devices=jax.devices()[:math.prod(sizes)])


def data_size(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch, mesh: Mesh):
  """Places a host batch on the mesh, split along its leading axis."""
  return jax.device_put(batch, batch_sharding(mesh))


def replicate(tree, mesh: Mesh):
  """Places a pytree on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  if batch_size % data_size(mesh):
    raise MuJaxError(
        f'Batch size {batch_size} does not divide over {data_size(mesh)} '
        'data-parallel devices; use a multiple of the data axis size.')


def to_host(tree):
  """Fetches a (possibly sharded) pytree as NumPy arrays."""
  return jax.tree.map(np.asarray, jax.device_get(tree))
