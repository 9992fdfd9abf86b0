"""Atomic file writes, and one sentence for every way a write can fail.

Every result, index file, plot and report goes through `atomic_write`: a
temporary file beside the target (`.<name>.<pid>.<random>.tmp`), then a
rename, so a reader never sees a half-written file and a killed run leaves
either the old file or the new one; the next write of that name removes the
temporaries of dead processes. On a multi-host run only process 0 writes.
`write_error` turns an OSError (a full disk, a read-only file system, a
directory in the way) into a `MuJaxError` that names the path and the fix.
"""
import contextlib
import errno
import os
import re
import tempfile
from typing import BinaryIO, Callable

from mu_jax import sharding
from mu_jax.errors import MuJaxError

KEPT = '(completed checkpoints are kept)'
# The errors of a write that the user, not the code, must fix.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EISDIR, errno.ENOTDIR, errno.EEXIST})


def atomic_write(path: str, content: str | bytes | Callable[[BinaryIO], None]) -> None:
  """Writes `content` (text, bytes, or a function that writes a binary file) to `path`."""
  if not sharding.is_primary():
    return
  directory, name = os.path.split(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    remove_dead_temporaries(directory, f'.{name}.')
    if os.path.isdir(path):
      raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{name}.{os.getpid()}.', suffix='.tmp')
  except OSError as e:
    raise write_error(e, path, name) from e
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
  except OSError as e:
    raise write_error(e, path, name) from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def remove_dead_temporaries(directory: str, prefix: str) -> list[str]:
  """Removes `<prefix><pid>.*.tmp` files in `directory` whose process is gone; returns them."""
  pattern = re.compile(re.escape(prefix) + r'(\d+)\..*\.tmp$')
  removed = []
  for entry in os.listdir(directory):
    match = pattern.match(entry)
    if match and not pid_alive(int(match.group(1))):
      with contextlib.suppress(FileNotFoundError):   # another process removed it first
        os.remove(os.path.join(directory, entry))
      removed.append(entry)
  return removed


def pid_alive(pid: int) -> bool:
  """Whether process `pid` runs on this host (a temporary or partial folder of it is live)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # another user's live process
    pass
  return True


def write_error(error: OSError, path: str, what: str) -> MuJaxError:
  """One sentence for `error`, met while writing `what` at (or under) `path`."""
  code = error.errno
  where = error.filename or path
  if code in (errno.ENOSPC, errno.EDQUOT):
    return MuJaxError(f'No space left on {path} while writing {what}; free space and rerun {KEPT}.')
  if code == errno.EROFS:
    return MuJaxError(f'Cannot write {what}: {where} is on a read-only file system; '
                      'pass a writable --workdir.')
  if code in (errno.EACCES, errno.EPERM):
    return MuJaxError(f'Cannot write {what}: permission denied on {where}; pass a writable '
                      '--workdir or fix its permissions.')
  if code == errno.EISDIR:
    return MuJaxError(f'Cannot write {what}: {where} is a directory; move it away and rerun.')
  if code in (errno.ENOTDIR, errno.EEXIST):
    return MuJaxError(f'Cannot write {what}: a file is in the way of the folder {where}; '
                      'move it away or pass another --workdir.')
  return MuJaxError(f'Cannot write {what} at {where} ({error.strerror or error}); '
                    'check the file system and rerun.')


def check_space(directory: str, nbytes: int, what: str) -> None:
  """Raises the disk-full error before writing `nbytes` under `directory` if they cannot fit."""
  existing = _existing_ancestor(directory)
  stats = os.statvfs(existing)
  if stats.f_bavail * stats.f_frsize < nbytes:
    raise write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), directory, what)


def check_workdir(path: str) -> None:
  """Fails early, before any work, if `path` cannot hold a workdir: it is a file, or it (or
  the folder it would be created in) cannot be written."""
  path = os.path.abspath(path)
  existing = _existing_ancestor(path)
  if not os.path.isdir(existing):
    raise MuJaxError(f'The workdir {path} is a file, not a folder; pass a folder to --workdir.'
                     if existing == path else f'The workdir {path} cannot be created: {existing} '
                     'is a file; pass a folder to --workdir.')
  try:
    fd, probe = tempfile.mkstemp(dir=existing, prefix=f'.mu_jax.{os.getpid()}.', suffix='.tmp')
    os.close(fd)
    os.remove(probe)
  except OSError as e:   # name the folder, not the probe file
    raise write_error(OSError(e.errno, e.strerror), existing, 'the workdir') from e


def _existing_ancestor(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
