"""mu_jax.host_memory: XLA:CPU's per-call temporaries stop being faulted in anew each call."""
import os
import subprocess
import sys

from absl.testing import absltest

from mu_jax import host_memory

# Prints the minor page faults per call of a jitted function whose temporaries
# (a 4096 x 2048 float32 product, 32 MB, and the fusion's scratch) glibc would map afresh.
PROBE = r'''
import resource, sys
from mu_jax import host_memory
applied = host_memory.reuse_freed_memory() if sys.argv[1] == 'reuse' else False
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: jnp.sum(jnp.tanh(a @ b) * jnp.exp(a @ b) + jnp.sin(a @ b)))
a, b = jnp.ones((4096, 64)), jnp.ones((64, 2048))
for _ in range(20):   # the heap grows to hold the calls' blocks side by side, then settles
  jax.block_until_ready(f(a, b))
windows = []   # on a busy machine it may settle later: the quietest of a few windows
for _ in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(10):
    jax.block_until_ready(f(a, b))
  windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(applied, min(windows))
'''

# Prints the process's data segment (MiB) while a 3 GiB block is held and after it
# is freed: malloc reserves it without touching its pages, so this costs no memory.
TRIM_PROBE = r'''
import ctypes, ctypes.util, re, sys
from mu_jax import host_memory
applied = host_memory.reuse_freed_memory() if sys.argv[1] == 'reuse' else False
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def data_mib():
  return int(re.search(r'VmData:\s+(\d+)', open('/proc/self/status').read()).group(1)) // 1024
block = libc.malloc(3 << 30)
held = data_mib()
libc.free(block)
print(applied, held, data_mib())
'''


def probe(script: str, mode: str) -> list[str]:
  env = {**os.environ, 'XLA_FLAGS': ''}
  return subprocess.run([sys.executable, '-c', script, mode], capture_output=True, text=True,
                        env=env, check=True).stdout.split()


def faults_per_call(mode: str) -> tuple[str, float]:
  out = probe(PROBE, mode)
  return out[0], float(out[1])


class HostMemoryTest(absltest.TestCase):

  @absltest.skipUnless(sys.platform.startswith('linux'), 'glibc malloc settings')
  def test_temporaries_are_reused_instead_of_faulted_in_each_call(self):
    applied, reused = faults_per_call('reuse')
    _, fresh = faults_per_call('default')
    self.assertEqual(applied, 'True')
    # By default every call faults in its temporaries anew (about 16,000 pages here).
    self.assertGreater(fresh, 8_000)
    self.assertLess(reused, fresh / 5)

  @absltest.skipUnless(sys.platform.startswith('linux'), 'glibc malloc settings')
  def test_the_heap_is_never_trimmed_even_past_2_gib_free_at_its_top(self):
    # mallopt's largest positive trim threshold (2 GiB) would give these 3 GiB back.
    applied, held, after_free = probe(TRIM_PROBE, 'reuse')
    self.assertEqual(applied, 'True')
    self.assertGreaterEqual(int(held), 3 * 1024)
    self.assertEqual(int(after_free), int(held))
    _, held, after_free = probe(TRIM_PROBE, 'default')
    self.assertLess(int(after_free), int(held) - 3 * 1024 + 64)

  def test_refused_once_the_backend_has_started(self):
    import jax
    jax.block_until_ready(jax.numpy.ones(2) + 1)
    with self.assertLogs(level='WARNING') as logged:
      self.assertFalse(host_memory.reuse_freed_memory())
    self.assertIn('before the first computation', logged.output[0])


if __name__ == '__main__':
  absltest.main()
