"""Atomic file writes: a temporary file beside the target, then a rename, by one process.

Every result, index file, plot and report goes through `atomic_write`, so a
reader never sees a half-written file and a killed run leaves either the old
file or the new one. On a multi-host run only process 0 writes.
"""
import os
import tempfile
from typing import BinaryIO, Callable

from mu_jax import sharding


def atomic_write(path: str, content: str | bytes | Callable[[BinaryIO], None]) -> None:
  """Writes `content` (text, bytes, or a function that writes a binary file) to `path`."""
  if not sharding.is_primary():
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      if callable(content):
        content(f)
      else:
        f.write(content.encode() if isinstance(content, str) else content)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 would hide results from other users
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
