"""A persistent XLA compilation cache: a process loads what an earlier one compiled.

A forget request served by a new process (the CLI, a notebook restart) would
otherwise spend seconds tracing and compiling the same passes again. `enable`
points JAX's persistent cache at a folder (the CLI's default: `xla_cache` in
the workdir) and caches every executable, however quick its compilation: a
request's passes each compile in well under JAX's default threshold of 1 s,
yet together cost more than the request's own work on a small data set.
The entries are keyed by the computation, the JAX/XLA versions and the
devices, so a stale entry is never used; a cache shared with untrusted users is
unsafe (JAX's warning: an entry is executable code).
"""
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

# JAX's own variable; when set it names the folder instead.
ENV = 'JAX_COMPILATION_CACHE_DIR'


def enable(directory: str) -> str:
  """Caches compiled executables under `directory` (or $JAX_COMPILATION_CACHE_DIR);
  returns the folder used."""
  directory = os.environ.get(ENV) or directory
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  compilation_cache.reset_cache()   # so a process that already compiled starts using it
  return directory
