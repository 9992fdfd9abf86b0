"""The only module that talks to Orbax: atomic, resumable, config-keyed, locked checkpoints.

A training run owns one directory, named after a hash of the configuration
that produced it, holding its latest epoch checkpoint (state pytree plus JSON
metadata). Orbax writes each step to a temporary directory and renames it when
complete, so a run killed at any moment leaves either the previous checkpoint
or the new one, never a half-written one. `save_tree` / `load_tree` keep a
single pytree of host arrays (cached statistics) the same way.
`load_variables` reads a model's variables saved outside mu_jax (an Orbax
pytree or a Flax msgpack file) into the structure of freshly initialised ones.

Faults: every store and tree is written under an exclusive lock
(`mu_jax.locks`), so processes sharing a workdir take turns and the later
one loads what the first wrote; Orbax's temporary folders left by a killed
run are removed under that lock. A full disk or a read-only file system ends
in one sentence (`files.write_error`). A checkpoint that cannot be read
(garbled metadata, truncated arrays) is never loaded: it is refused with its
path, or, inside `discarding_damaged()` (`--discard_damaged`), deleted and
made again.
"""
import contextlib
import contextvars
import errno
import glob
import hashlib
import json
import os
import re
import shutil
from typing import Iterator

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from mu_jax import files, locks, sharding
from mu_jax.errors import MuJaxError

ORBAX_TMP = '.orbax-checkpoint-tmp'
_DISCARD = contextvars.ContextVar('discard_damaged', default=False)


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


@contextlib.contextmanager
def discarding_damaged(discard: bool = True) -> Iterator[None]:
  """Within the block, a damaged checkpoint is deleted (and made again) instead of refused."""
  token = _DISCARD.set(discard)
  try:
    yield
  finally:
    _DISCARD.reset(token)


class CheckpointStore:
  """Epoch checkpoints of one run: the latest is kept, older ones deleted.

  The store holds the lock of its directory from creation to `close`, so one
  process at a time trains (and checkpoints) a given model.
  """

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    self._lock = contextlib.ExitStack()
    self._lock.enter_context(locks.exclusive(self.directory, os.path.basename(self.directory)))
    try:
      _remove_orbax_temporaries(os.path.join(glob.escape(self.directory), '*'))   # steps' leftovers
      with _writing(self.directory, 'a checkpoint'):
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, cleanup_tmp_directories=True,
                enable_async_checkpointing=False),
            item_names=('state', 'meta'))
    except BaseException:
      self._lock.close()
      raise

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    meta = dict(meta, shapes=tree_shapes(state))
    files.check_space(self.directory, _nbytes(state), f'the checkpoint of step {step}')
    with _writing(self.directory, f'the checkpoint of step {step}'):
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
      self._manager.wait_until_finished()

  def read_meta(self, step: int) -> dict:
    with self._reading(step):
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
    with self._reading(step):
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
    return restored['state'], meta

  def restore_latest(self, like) -> tuple[object, dict] | None:
    """`restore` of the latest step, or None if there is none (or, inside
    `discarding_damaged`, if the damaged ones were deleted)."""
    while (step := self.latest_step()) is not None:
      try:
        return self.restore(step, like)
      except DamagedCheckpointError:
        if not _DISCARD.get():
          raise
        logging.warning('discarding the damaged checkpoint %s', self._step_dir(step))
        if sharding.is_primary():
          shutil.rmtree(self._step_dir(step))
        locks.barrier(f'mu_jax discarded {self._step_dir(step)}')
        self._manager.reload()
    return None

  def close(self) -> None:
    try:
      self._manager.close()
    finally:
      self._lock.close()

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _reading(self, step: int):
    return _reading(self._step_dir(step))


class DamagedCheckpointError(MuJaxError):
  """A checkpoint exists but cannot be read: it is never loaded."""


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
  """Turns a failure to read the checkpoint at `path` into DamagedCheckpointError."""
  try:
    yield
  except MuJaxError:
    raise
  except (ValueError, KeyError, TypeError, OSError) as e:
    reason = _one_line(e)
    raise DamagedCheckpointError(
        f'The checkpoint {path} is damaged ({reason}); rerun with --discard_damaged to '
        'delete it and make it again, or restore that folder from a backup.') from e


@contextlib.contextmanager
def _writing(path: str, what: str) -> Iterator[None]:
  """Turns a full disk, a read-only file system or another OSError met by Orbax while
  writing under `path` into one sentence; other errors pass."""
  try:
    yield
  except MuJaxError:
    raise
  except Exception as e:
    error = _os_error(e)
    if error is None:
      raise
    raise files.write_error(error, path, what) from e


def _os_error(error: Exception) -> OSError | None:
  """The OSError behind an Orbax/TensorStore failure: the error itself, or the os_error_code
  (or the 'RESOURCE_EXHAUSTED' status of a full disk) in a TensorStore message."""
  if isinstance(error, OSError):
    return error
  text = str(error)
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:
    number = int(code.group(1))
    return OSError(number, os.strerror(number))
  if 'RESOURCE_EXHAUSTED' in text or 'No space left' in text:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  return None


def _one_line(error: Exception, limit: int = 200) -> str:
  text = ' '.join(f'{type(error).__name__}: {error}'.split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def _nbytes(tree) -> int:
  return sum(int(np.prod(np.shape(leaf))) * np.dtype(leaf.dtype).itemsize
             for leaf in jax.tree.leaves(tree))


def save_tree(directory: str, tree) -> None:
  """Writes a pytree of arrays to `directory`, atomically, replacing a stale one."""
  directory = os.path.abspath(directory)
  tree = jax.tree.map(np.asarray, tree)
  what = f'cached statistics {os.path.basename(directory)}'
  with locks.exclusive(directory, what):
    _remove_orbax_temporaries(glob.escape(directory))
    files.check_space(os.path.dirname(directory), _nbytes(tree), what)
    with _writing(directory, what):
      checkpointer = ocp.StandardCheckpointer()
      checkpointer.save(directory, tree, force=True)
      checkpointer.wait_until_finished()


def load_tree(directory: str):
  """The pytree saved by `save_tree` as host NumPy arrays (dtypes kept), or None.

  A damaged one is refused (`DamagedCheckpointError`), or, inside
  `discarding_damaged`, deleted and reported as None so the caller makes it again.
  """
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    return None
  with locks.exclusive(directory, f'cached statistics {os.path.basename(directory)}'):
    _remove_orbax_temporaries(glob.escape(directory))
    try:
      with _reading(directory):
        like = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype),
                            _saved_tree(directory))
        return ocp.StandardCheckpointer().restore(directory, like)
    except DamagedCheckpointError:
      if not _DISCARD.get():
        raise
      logging.warning('discarding the damaged cached statistics %s', directory)
      if sharding.is_primary():
        shutil.rmtree(directory)
      locks.barrier(f'mu_jax discarded {directory}')
      return None


def _remove_orbax_temporaries(pattern: str) -> None:
  """Removes the temporary folders that killed saves to paths matching `pattern` left;
  the caller holds their lock, so no live process is writing them."""
  if sharding.is_primary():
    for path in glob.glob(pattern + ORBAX_TMP + '*'):
      shutil.rmtree(path, ignore_errors=True)


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
