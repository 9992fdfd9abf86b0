"""The commands end to end: the smoke benchmark, run folders, caching, and bad input."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import jax
import numpy as np
from absl.testing import absltest, parameterized

from mu_jax.methods import METHODS
from tests import helpers


def run(command: str, *args: str, own_cache: bool = False) -> subprocess.CompletedProcess:
  """`python -m mu_jax <command> <args>` from the checkout; `own_cache`: with the CLI's own
  compilation cache in the workdir, not the test session's (tests/conftest.py)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  if own_cache:
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
  return subprocess.run([sys.executable, '-m', 'mu_jax', command, *args], cwd=helpers.ROOT,
                        capture_output=True, text=True, timeout=600, env=env)


def run_folders(request_dir: str) -> list[str]:
  """The finished runs of a request, oldest first."""
  return sorted(f for f in os.listdir(request_dir)
                if not f.startswith('.') and f != 'latest')


class BenchmarkTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp(prefix='bench-')
    cls.first = run('benchmark', '--config=mu_jax.configs.digits_mlp:smoke=True',
                    f'--workdir={cls.workdir}', own_cache=True)
    cls.request = os.path.join(cls.workdir, 'results', 'class-0')
    cls.results = os.path.realpath(os.path.join(cls.request, 'latest'))
    cls.first_json = open(os.path.join(cls.results, 'results.json')).read()
    cls.first_rows = json.loads(cls.first_json)['rows']

  def test_prints_the_table_and_writes_results(self):
    self.assertEqual(self.first.returncode, 0, self.first.stderr[-2000:])
    for row in ('original', 'retrain', 'ft', 'ga', 'rl'):
      self.assertIn(f'| {row} |', self.first.stdout)
    rows = self.first_rows
    self.assertEqual([r['method'] for r in rows], ['original', 'retrain', 'ft', 'ga', 'rl'])
    retrain = rows[1]
    self.assertEqual(retrain['Avg. Gap'], 0.0)
    self.assertEqual(retrain['FA'], 0.0)   # the oracle never saw class 0
    forget = np.load(os.path.join(self.results, 'forget_indices.npy'))
    self.assertNotEmpty(forget)
    for name in ('ft', 'ga', 'rl'):
      self.assertTrue(os.path.exists(os.path.join(self.results, 'runs', f'{name}.json')))
    self.assertIn(f'results in {self.results}/', self.first.stdout)
    saved = json.loads(self.first_json)
    self.assertEqual(saved['forget_indices_sha256'],
                     hashlib.sha256(forget.astype(np.int64).tobytes()).hexdigest())
    # Loss curves: the cached models' training and each iterative method's updates.
    for folder in [os.path.join(self.workdir, 'models', m, 'logs')
                   for m in os.listdir(os.path.join(self.workdir, 'models'))] + [
                       os.path.join(self.results, 'logs', name) for name in ('ft', 'ga', 'rl')]:
      files = os.listdir(folder)
      self.assertTrue(any(f.startswith('events.out.tfevents.') for f in files), folder)
      with open(os.path.join(folder, 'metrics.jsonl')) as f:
        names = {json.loads(line)['name'] for line in f}
      self.assertTrue({'train/loss', 'unlearn/loss'} & names, folder)
    prov = saved['provenance']
    self.assertStartsWith(prov['command'], 'mu-jax benchmark --config=mu_jax.configs.digits_mlp')
    self.assertEqual(prov['packages']['jax'], jax.__version__)
    self.assertEqual(prov['machine']['cores'], os.cpu_count())

  def test_second_run_reuses_cached_models_and_executables(self):
    self.assertEqual(self.first.returncode, 0)
    self.assertIn('original epoch', self.first.stderr)
    compiled = set(os.listdir(os.path.join(self.workdir, 'xla_cache')))
    self.assertNotEmpty(compiled)
    second = run('benchmark', '--config=configs/digits_mlp.py:smoke=True',
                  f'--workdir={self.workdir}', '--config.methods=ft', own_cache=True)
    self.assertEqual(second.returncode, 0, second.stderr[-2000:])
    self.assertNotIn('original epoch', second.stderr)
    self.assertNotIn('oracle epoch', second.stderr)
    # Everything the second run (ft only) runs, the first compiled: nothing new.
    self.assertEqual(set(os.listdir(os.path.join(self.workdir, 'xla_cache'))), compiled)
    # A rerun gets a folder of its own; the first run's files are untouched.
    newest = os.path.realpath(os.path.join(self.request, 'latest'))
    self.assertNotEqual(newest, self.results)
    self.assertIn(os.path.basename(newest), run_folders(self.request))
    self.assertEqual(open(os.path.join(self.results, 'results.json')).read(), self.first_json)

  def test_a_diverging_method_is_reported_and_the_table_completes(self):
    result = run('benchmark', '--config=configs/digits_mlp.py:smoke=True',
                 f'--workdir={self.workdir}', '--config.methods=ga,ft',
                 '--config.unlearn.ga.learning_rate=1e30')
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn('| ga | diverged |', result.stdout)
    self.assertRegex(result.stdout, r'\| ft \| \d')

  @parameterized.named_parameters(
      ('unknown_method', ['--config=configs/digits_mlp.py:smoke=True,methods=ft+foo'],
       f"config.methods names 'foo', which is not a method; valid: {', '.join(METHODS.names())}."),
      ('unknown_dataset', ['--config=configs/digits_mlp.py:source=mnist'],
       "Unknown dataset source 'mnist'; valid names are: diabetes, digits, friedman, idx, tfds."),
      ('unknown_model', ['--config=configs/digits_mlp.py', '--config.model.name=vgg'],
       "Unknown model 'vgg'; valid names are: cnn, mlp, resnet18, transformer."),
      ('misspelled_key', ['--config=configs/digits_mlp.py', '--config.trian.epochs=1'],
       "--config.trian.epochs: config has no key 'trian'; valid: data, eval, forget"),
      ('misspelled_hparam', ['--config=configs/digits_mlp.py', '--config.unlearn.ga.lr=1'],
       "Method 'ga' has no hyper-parameter 'lr' (config.unlearn.ga.lr); valid: batch_size"),
      ('fraction_zero', ['--config=configs/digits_mlp.py:forget=random:0'], 'random:0'),
      ('fraction_one', ['--config=configs/digits_mlp.py:forget=random:1.0'], 'random:1.0'),
      ('class_out_of_range', ['--config=configs/digits_mlp.py:forget=class:10'], '[0, 9]'),
      ('missing_data_dir', ['--config=configs/digits_mlp.py:source=idx:/no/such/dir'],
       '/no/such/dir does not exist'),
      ('missing_config', ['--config=configs/nope.py'], 'configs/nope.py does not exist'),
      ('missing_config_module', ['--config=mu_jax.configs.nope'],
       'Config module mu_jax.configs.nope cannot be imported'),
  )
  def test_bad_input_is_one_line_and_writes_nothing(self, args, message):
    before = (run_folders(self.request), os.readlink(os.path.join(self.request, 'latest')))
    result = run('benchmark', *args, f'--workdir={self.workdir}')
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    self.assertStartsWith(last, 'error: ')
    self.assertIn(message, last)
    self.assertNotIn('Traceback', result.stderr)
    self.assertEqual((run_folders(self.request), os.readlink(os.path.join(self.request, 'latest'))),
                     before)
    self.assertEqual(open(os.path.join(self.results, 'results.json')).read(), self.first_json)

  def test_unknown_command_is_refused(self):
    result = run('benchmrk', '--config=configs/digits_mlp.py')
    self.assertEqual(result.returncode, 2)
    self.assertIn("unknown command 'benchmrk'; valid commands are: train, unlearn, benchmark",
                  result.stderr)

  def test_index_file_with_duplicates_is_refused(self):
    path = os.path.join(self.create_tempdir().full_path, 'forget.txt')
    with open(path, 'w') as f:
      f.write('3\n5\n3\n')
    result = run('unlearn', f'--config=configs/digits_mlp.py:forget=file:{path}',
                 f'--workdir={self.workdir}')
    self.assertEqual(result.returncode, 1)
    self.assertIn('duplicate', result.stderr.strip().splitlines()[-1])
    self.assertFalse(os.path.exists(os.path.join(self.workdir, 'results', 'file-forget.txt')))


class UnlearnAndTrainMainsTest(absltest.TestCase):

  def test_unlearn_main_runs_one_method(self):
    workdir = self.create_tempdir().full_path
    result = run('unlearn', '--config=configs/digits_mlp.py:smoke=True,method=rl,'
                 'forget=random:0.1', f'--workdir={workdir}')
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn('| rl |', result.stdout)
    latest = os.path.join(workdir, 'results', 'random-0.1', 'latest')
    rows = json.load(open(os.path.join(latest, 'results.json')))['rows']
    self.assertEqual([r['method'] for r in rows], ['original', 'retrain', 'rl'])
    result = run('train', '--config=configs/digits_mlp.py:smoke=True,forget=random:0.1',
                 f'--workdir={workdir}')
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn('| retrain |', result.stdout)
    self.assertNotIn('original epoch', result.stderr)   # cached by unlearn.py


if __name__ == '__main__':
  absltest.main()
