"""The only module that talks to Orbax: atomic, resumable, config-keyed checkpoints.

A training run owns one directory, named after a hash of the configuration
that produced it, holding its latest epoch checkpoint (state pytree plus JSON
metadata). Orbax writes each step to a temporary directory and renames it when
complete, so a run killed at any moment leaves either the previous checkpoint
or the new one, never a half-written one. `save_tree` / `load_tree` keep a
single pytree of host arrays (cached statistics) the same way.
`load_variables` reads a model's variables saved outside mu_jax (an Orbax
pytree or a Flax msgpack file) into the structure of freshly initialised ones.
"""
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from mu_jax.errors import MuJaxError


def config_key(payload) -> str:
  """A short stable hash of a JSON-serialisable description of a run."""
  text = json.dumps(payload, sort_keys=True, default=_jsonable)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value):
  if isinstance(value, np.ndarray):
    return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
  if isinstance(value, (tuple, set)):
    return list(value)
  raise TypeError(f'Cannot key a run on {type(value).__name__}.')


def tree_shapes(tree) -> dict[str, list[int]]:
  """Maps each leaf's key path to its shape, to detect mismatched models."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): list(np.shape(leaf)) for path, leaf in flat}


class CheckpointStore:
  """Epoch checkpoints of one run: the latest is kept, older ones deleted."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, cleanup_tmp_directories=True,
            enable_async_checkpointing=False),
        item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    meta = dict(meta, shapes=tree_shapes(state))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self._manager.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    return self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, like) -> tuple[object, dict]:
    """Restores the state at `step` into the structure, shapes and shardings of `like`."""
    meta = self.read_meta(step)
    expected = tree_shapes(like)
    if meta.get('shapes') != expected:
      raise MuJaxError(
          f'The checkpoint in {self.directory} was made by a model of a '
          f'different shape ({_first_difference(meta.get("shapes"), expected)}); '
          'delete that directory or use the configuration that made it.')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return restored['state'], meta

  def close(self) -> None:
    self._manager.close()


def save_tree(directory: str, tree) -> None:
  """Writes a pytree of arrays to `directory`, atomically, replacing a stale one."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), jax.tree.map(np.asarray, tree), force=True)
  checkpointer.wait_until_finished()


def load_tree(directory: str):
  """The pytree saved by `save_tree` as host NumPy arrays (dtypes kept), or None."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    return None
  like = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), _saved_tree(directory))
  return ocp.StandardCheckpointer().restore(directory, like)


def _saved_tree(directory: str):
  """The metadata tree (leaves with .shape and .dtype) of the Orbax pytree in `directory`,
  or None if the folder holds none."""
  return getattr(ocp.StandardCheckpointer().metadata(directory).item_metadata, 'tree', None)


def load_variables(path: str, like):
  """The model variables saved at `path`, in the structure and dtypes of `like`.

  `path` is an Orbax checkpoint directory of a pytree (`StandardCheckpointer`
  or `PyTreeCheckpointer`) or a file of `flax.serialization.to_bytes` /
  `msgpack_serialize`. `like` is what the model's init returns (e.g.
  `task.init(rng)`); a model whose only collection is 'params' may be saved
  as its params alone. The tree structure and every leaf's shape must match.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    saved = _orbax_shapes(path)
  elif os.path.isfile(path):
    state = _read_msgpack(path)
    saved = tree_shapes(state)
  else:
    raise MuJaxError(f'Model checkpoint {path} does not exist; give an Orbax checkpoint '
                     'directory or a .msgpack file of the model\'s variables.')
  params_only = set(like) == {'params'} and not any(k.startswith("['params']") for k in saved)
  target = like['params'] if params_only else like
  expected = tree_shapes(target)
  if saved != expected:
    key = _first_mismatch(saved, expected)
    raise MuJaxError(f'The variables in {path} do not fit the model: {key or "the root"} is '
                     f'{_shape_text(saved.get(key))} in the checkpoint but '
                     f'{_shape_text(expected.get(key))} in the model; save the variables of '
                     'the same architecture and kwargs.')
  if os.path.isdir(path):
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    loaded = ocp.StandardCheckpointer().restore(path, abstract)
  else:
    loaded = jax.tree.map(lambda leaf, value: jnp.asarray(value, leaf.dtype), target, state)
  return {'params': loaded} if params_only else loaded


def _shape_text(shape: list[int] | None) -> str:
  return 'absent' if shape is None else f'of shape {tuple(shape)}'


def _orbax_shapes(path: str) -> dict[str, list[int]]:
  """`tree_shapes` of the pytree in the Orbax checkpoint at `path`, from its metadata."""
  tree = _saved_tree(path)
  if tree is None:
    raise MuJaxError(f'{path} is not an Orbax checkpoint of a pytree; give the folder that '
                     'holds it (for a CheckpointManager, <directory>/<step>/<item>).')
  return {jax.tree_util.keystr(p): list(leaf.shape)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _read_msgpack(path: str):
  """The state dict in a file of `flax.serialization.to_bytes` / `msgpack_serialize`."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return serialization.msgpack_restore(data)
  except (ValueError, msgpack.UnpackException) as e:
    raise MuJaxError(f'{path} is neither an Orbax checkpoint directory nor a msgpack file '
                     f'of flax.serialization.to_bytes ({e}).') from e


def _first_mismatch(stored: dict, expected: dict) -> str | None:
  """The first key path (in sorted order) whose shape differs or is missing on one side."""
  return next((key for key in sorted(set(stored) | set(expected))
               if stored.get(key) != expected.get(key)), None)


def _first_difference(stored, expected) -> str:
  stored = stored or {}
  key = _first_mismatch(stored, expected)
  if key is None:
    return 'unknown difference'
  return f'{key or "root"}: {stored.get(key)} there, {expected.get(key)} here'
