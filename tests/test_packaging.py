"""A plain `pip install` of the checkout works outside it: console script, -m, shipped configs."""
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests import helpers


class InstalledPackageTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.home = tempfile.mkdtemp(prefix='installed-')
    cls.site = os.path.join(cls.home, 'site')
    # The dependencies are this environment's; the package itself is a fresh, non-editable copy.
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
                    '--no-build-isolation', '--target', cls.site, helpers.ROOT],
                   check=True, capture_output=True, cwd=cls.home)
    cls.env = dict(os.environ, PYTHONPATH=cls.site, JAX_PLATFORMS='cpu')

  def run_in_home(self, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=self.home, env=self.env, capture_output=True, text=True,
                          timeout=600)

  def test_imports_come_from_the_installed_copy(self):
    out = self.run_in_home(sys.executable, '-c', 'import mu_jax.configs.digits_mlp as c; '
                           'print(c.__file__)')
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    self.assertStartsWith(out.stdout.strip(), self.site)

  def test_console_script_runs_the_benchmark_with_a_shipped_config(self):
    workdir = os.path.join('runs', 'x')
    out = self.run_in_home(os.path.join(self.site, 'bin', 'mu-jax'), 'benchmark',
                           '--config=mu_jax.configs.digits_mlp:smoke=True', f'--workdir={workdir}')
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    for row in ('original', 'retrain', 'ft', 'ga', 'rl'):
      self.assertIn(f'| {row} |', out.stdout)
    latest = os.path.join(self.home, workdir, 'results', 'class-0', 'latest')
    with open(os.path.join(latest, 'results.json')) as f:
      provenance = json.load(f)['provenance']
    self.assertIsNone(provenance['git_commit'])   # an installed copy is no checkout

  def test_module_entry_point_takes_a_config_file_path(self):
    config = os.path.join(self.site, 'mu_jax', 'configs', 'digits_mlp.py')
    out = self.run_in_home(sys.executable, '-m', 'mu_jax', 'train',
                           f'--config={config}:smoke=True', '--workdir=runs/y')
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    self.assertIn('| retrain |', out.stdout)


if __name__ == '__main__':
  absltest.main()
