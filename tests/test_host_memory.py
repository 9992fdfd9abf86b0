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
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  jax.block_until_ready(f(a, b))
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
'''


def faults_per_call(mode: str) -> tuple[str, float]:
  env = {**os.environ, 'XLA_FLAGS': ''}
  out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True,
                       env=env, check=True).stdout.split()
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

  def test_refused_once_the_backend_has_started(self):
    import jax
    jax.block_until_ready(jax.numpy.ones(2) + 1)
    with self.assertLogs(level='WARNING') as logged:
      self.assertFalse(host_memory.reuse_freed_memory())
    self.assertIn('before the first computation', logged.output[0])


if __name__ == '__main__':
  absltest.main()
