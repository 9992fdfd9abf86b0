"""Exclusive file locks, so two processes sharing a workdir never write one cache at once.

`exclusive(target)` holds an `fcntl.flock` on `<target>.lock` beside a cached
model or statistics folder, and removes that file when done. A second
process asking for it logs one line and waits; when it gets the lock, it
re-reads the folder and finds the first one's finished checkpoint. The
kernel drops a lock when its process dies, so a killed run never holds one
(its file may stay, empty, until the next holder removes it).

Multi-host: only process 0 takes the lock (flock across hosts is not
reliable on network file systems); every process then meets at a barrier,
so none looks at the folder before process 0 holds it. Two multi-host jobs
thus exclude each other through their process 0.
"""
import contextlib
import errno
import fcntl
import os
from typing import Iterator

import jax
from absl import logging
from jax.experimental import multihost_utils

from mu_jax import sharding

SUFFIX = '.lock'


@contextlib.contextmanager
def exclusive(target: str, what: str, *, collective: bool = True) -> Iterator[None]:
  """Holds the lock of `target` (a path) for the block; `what` names it in the waiting line.

  `collective`: every process of a multi-host run enters the block (process 0
  locks, all meet at a barrier); False: only the calling process does (it locks).
  """
  fd = _acquire(target + SUFFIX, what) if sharding.is_primary() or not collective else None
  try:
    if collective:
      barrier(f'mu_jax lock {target}')
    yield
  finally:
    if fd is not None:
      _release(target + SUFFIX, fd)


def _acquire(path: str, what: str) -> int | None:
  """A descriptor holding the flock of `path`, or None where nobody can write (see `_open`).

  The holder removes the file before releasing it (no lock files pile up), so a
  waiter that wakes on a removed file starts again on the new one.
  """
  waiting = False
  while (fd := _open(path)) is not None:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not waiting:
        logging.info('%s: another process is writing %s; waiting for it to finish', what,
                     path[:-len(SUFFIX)])
        waiting = True
      fcntl.flock(fd, fcntl.LOCK_EX)
    try:
      if os.path.samestat(os.fstat(fd), os.stat(path)):
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)
  return None


def _release(path: str, fd: int) -> None:
  try:
    os.remove(path)
  except OSError:   # a read-only file system: the file stays, harmlessly
    pass
  os.close(fd)   # releases the lock


def _open(path: str) -> int | None:
  """A descriptor of the lock file, created if need be; None on a file system nobody can
  write (then nobody else writes the folder either, and reading it needs no lock)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  try:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
      raise
  try:
    return os.open(path, os.O_RDONLY)
  except FileNotFoundError:
    return None


def barrier(name: str) -> None:
  """Waits until every process of a multi-host run reaches the barrier `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
