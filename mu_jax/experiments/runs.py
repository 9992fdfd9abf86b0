"""Run folders: every run writes into a folder of its own, whole or absent, with its provenance.

A run of a request goes to `<request dir>/<run id>/`, the id being the start
time and a hash of the config. The folder is built under a hidden temporary
name and renamed into place only when the run has finished, so a folder
either holds a whole, consistent run or does not exist, and a rerun never
touches an earlier one; `latest` beside the runs then points at the newest.
Publishing (choosing a free name, renaming, repointing `latest`) happens under
the request folder's lock (`mu_jax.locks`), so a process killed at any point
leaves a whole run or none, and concurrent runs never take one name.
On a multi-host run only process 0 writes.
"""
import contextlib
import datetime
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Iterator

import jax
import numpy as np

import mu_jax
from mu_jax import checkpoint, files, locks, sharding

LATEST = 'latest'
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy',
            'scikit-learn', 'tensorflow-datasets')


def run_id(config) -> str:
  """'<UTC start time>-<config hash>': runs sort by time, and a config reads off its name."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')
  return f'{stamp}-{checkpoint.config_key(config.to_dict())[:8]}'


class RunFolder:
  """Where a run writes: `path` is the temporary folder during the run, the final one after."""

  def __init__(self, path: str):
    self.path = path


@contextlib.contextmanager
def new_run(request_dir: str, config) -> Iterator[RunFolder]:
  """A folder for one run, renamed to its run id when the block ends without an error.

  A block that raises leaves nothing behind; a killed process leaves only a
  hidden `.<id>.<pid>.partial` folder, which no reader takes for a run and
  the next run removes.
  """
  name = run_id(config)
  folder = RunFolder(os.path.join(request_dir, f'.{name}.{os.getpid()}.partial'))
  primary = sharding.is_primary()
  if primary:
    remove_abandoned(request_dir)
    os.makedirs(folder.path)
  try:
    yield folder
  except BaseException:
    if primary:
      shutil.rmtree(folder.path, ignore_errors=True)
    raise
  if primary:
    folder.path = _publish(request_dir, folder.path, name)


def remove_abandoned(request_dir: str) -> list[str]:
  """Removes what killed runs left (their partial folders and half-made `latest` links);
  returns the names removed."""
  removed = []
  for entry in os.listdir(request_dir) if os.path.isdir(request_dir) else []:
    parts = entry.split('.')
    partial = entry.endswith('.partial') and len(parts) > 2 and parts[-2].isdigit()
    link = entry.startswith(f'.{LATEST}.') and parts[-1].isdigit()
    if entry.startswith('.') and (partial or link):
      if not files.pid_alive(int(parts[-2] if partial else parts[-1])):
        path = os.path.join(request_dir, entry)
        if partial:
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
        removed.append(entry)
  return removed


def _publish(request_dir: str, temporary: str, name: str) -> str:
  """Renames the finished run into place under a free name, then points `latest` at it."""
  with locks.exclusive(os.path.join(request_dir, ''), 'the run folders', collective=False):
    final = next(path for attempt in range(1, 1001)
                 if not os.path.lexists(path := os.path.join(
                     request_dir, name if attempt == 1 else f'{name}-{attempt}')))
    os.rename(temporary, final)   # the lock makes the name free; the rename makes it whole
    link = os.path.join(request_dir, f'.{LATEST}.{os.getpid()}')
    if os.path.lexists(link):
      os.remove(link)
    os.symlink(os.path.basename(final), link)
    os.replace(link, os.path.join(request_dir, LATEST))
  return final


def latest(request_dir: str) -> str:
  """The folder of the newest finished run of a request."""
  return os.path.realpath(os.path.join(request_dir, LATEST))


def provenance(started: float) -> dict:
  """What produced a run: command, date, versions, commit and machine."""
  return {
      'command': ' '.join(sys.argv),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'seconds': time.time() - started,
      'mu_jax': mu_jax.__version__,
      'git_commit': git_commit(),
      'python': platform.python_version(),
      'packages': {name: _version(name) for name in PACKAGES},
      'machine': machine(),
  }


def machine() -> dict:
  """The host and accelerators a run used, and the load it ran under."""
  return {
      'platform': platform.platform(),
      'cpu': _cpu_model(),
      'cores': os.cpu_count(),
      'memory_gib': round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
      'backend': jax.default_backend(),
      'devices': jax.device_count(),
      'device_kind': jax.devices()[0].device_kind,
      'processes': jax.process_count(),
      'load_average': [round(x, 2) for x in os.getloadavg()],
  }


def indices_hash(indices: np.ndarray) -> str:
  """SHA-256 of the forget indices as int64: two runs forgot the same rows iff it matches."""
  return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def git_commit() -> str | None:
  """The commit of the checkout mu_jax runs from, '+dirty' if it has uncommitted changes."""
  head = _git('rev-parse', 'HEAD')
  if head is None or _git('ls-files', '--error-unmatch', '__init__.py') is None:
    return None   # not a checkout, or an installed copy inside some other repository
  return head + ('+dirty' if _git('status', '--porcelain', '--untracked-files=no') else '')


def _git(*args: str) -> str | None:
  try:
    out = subprocess.run(['git', *args], capture_output=True, text=True, timeout=10,
                         cwd=os.path.dirname(os.path.abspath(mu_jax.__file__)))
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None
