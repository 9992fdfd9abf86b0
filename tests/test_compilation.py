"""The persistent compilation cache: a second process loads what the first compiled."""
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

# Run in a fresh interpreter: counts the backend compilations that missed the
# cache and the cache hits of one jitted function.
_PROGRAM = '''
import json, sys
import jax, jax.numpy as jnp
from jax._src import dispatch
from mu_jax import compilation
used = compilation.enable(sys.argv[1])
events = {'hits': 0}
jax.monitoring.register_event_listener(
    lambda event, **kw: events.__setitem__('hits', events['hits'] + 1)
    if event == '/jax/compilation_cache/cache_hits' else None)
value = jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())(jnp.arange(7.0))
print(json.dumps({'hits': events['hits'], 'used': used, 'value': float(value[3])}))
'''


def _run(directory: str, env: dict | None = None) -> dict:
  out = subprocess.run([sys.executable, '-c', _PROGRAM, directory], check=True,
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
  return json.loads(out.stdout.strip().splitlines()[-1])


class CompilationCacheTest(absltest.TestCase):

  def test_second_process_loads_the_first_ones_executable(self):
    with tempfile.TemporaryDirectory() as tmp:
      directory = os.path.join(tmp, 'xla_cache')
      env = {'JAX_COMPILATION_CACHE_DIR': ''}
      first, second = _run(directory, env), _run(directory, env)
      self.assertEqual(first['hits'], 0)
      self.assertGreaterEqual(second['hits'], 1)
      self.assertEqual(first['value'], second['value'])
      self.assertNotEmpty(os.listdir(directory))

  def test_jax_environment_variable_names_the_folder(self):
    with tempfile.TemporaryDirectory() as tmp:
      chosen = os.path.join(tmp, 'chosen')
      out = _run(os.path.join(tmp, 'ignored'), {'JAX_COMPILATION_CACHE_DIR': chosen})
      self.assertEqual(out['used'], chosen)
      self.assertFalse(os.path.exists(os.path.join(tmp, 'ignored')))
      self.assertNotEmpty(os.listdir(chosen))


if __name__ == '__main__':
  absltest.main()
