"""The core never imports the experiment layer, and `mu_jax.methods` loads no heavy extras."""
import subprocess
import sys

from absl.testing import absltest, parameterized

CORE = ('mu_jax.tasks', 'mu_jax.data', 'mu_jax.models', 'mu_jax.methods', 'mu_jax.influence',
        'mu_jax.analytic', 'mu_jax.ensembles', 'mu_jax.evaluation', 'mu_jax.sharding',
        'mu_jax.checkpoint', 'mu_jax.train', 'mu_jax.evaluation.margins',
        'mu_jax.evaluation.relearn', 'mu_jax.evaluation.worst_case')


def loaded_after(module: str) -> set[str]:
  """Modules present in a fresh interpreter after `import module`."""
  code = f'import sys, {module}; print("\\n".join(sys.modules))'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  return set(out.stdout.split())


class LayeringTest(parameterized.TestCase):

  @parameterized.parameters(*CORE)
  def test_core_module_imports_no_experiment_module(self, module):
    experiment = sorted(m for m in loaded_after(module) if m.startswith('mu_jax.experiments'))
    self.assertEqual(experiment, [])

  def test_methods_load_no_tfds_sklearn_or_matplotlib(self):
    loaded = loaded_after('mu_jax.methods')
    for heavy in ('tensorflow_datasets', 'sklearn', 'matplotlib'):
      self.assertNotIn(heavy, loaded)


if __name__ == '__main__':
  absltest.main()
