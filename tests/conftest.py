"""Test-process setup: 8 fake CPU devices, so sharded and single-device runs
compare; absl flags marked parsed so absltest helpers work under pytest; and one
persistent XLA compilation cache for the session's test processes, so a
computation that several tests build anew (the same model, step and shapes)
compiles once (`mu_jax.compilation`). The CLI runs that tests start share it
through $JAX_COMPILATION_CACHE_DIR, except where a test checks the CLI's own
cache in the workdir."""
import os
import shutil
import tempfile

import jax
import pytest
from absl import flags

jax.config.update('jax_num_cpu_devices', 8)
os.environ.setdefault('TQDM_DISABLE', '1')
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

# One folder per pytest session: made by the controller, inherited by its xdist workers.
_ENV = 'MU_JAX_TEST_XLA_CACHE'


def pytest_configure(config):
  if _ENV not in os.environ:
    os.environ[_ENV] = tempfile.mkdtemp(prefix='mu-jax-tests-xla-')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ[_ENV]   # for the CLI subprocesses
    config.stash[_OWNER] = True
  jax.config.update('jax_compilation_cache_dir', os.environ[_ENV])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def pytest_unconfigure(config):
  if config.stash.get(_OWNER, False):
    os.environ.pop('JAX_COMPILATION_CACHE_DIR', None)
    shutil.rmtree(os.environ.pop(_ENV), ignore_errors=True)


_OWNER = pytest.StashKey[bool]()
