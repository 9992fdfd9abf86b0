"""Run folders: whole or absent, never overwritten, `latest` atomic, killed runs swept away."""
import hashlib
import os
import signal
import subprocess
import sys
from unittest import mock

import ml_collections
import numpy as np
from absl.testing import absltest

from mu_jax.experiments import runs
from tests import helpers

CONFIG = ml_collections.ConfigDict({'seed': 0, 'forget': 'class:0'})


def finished(request_dir: str) -> list[str]:
  return sorted(e for e in os.listdir(request_dir) if not e.startswith('.') and e != runs.LATEST)


class RunFolderTest(absltest.TestCase):

  def test_a_finished_run_is_renamed_into_place_and_becomes_latest(self):
    request = self.create_tempdir().full_path
    with runs.new_run(request, CONFIG) as run:
      temporary = run.path
      self.assertStartsWith(os.path.basename(temporary), '.')
      with open(os.path.join(run.path, 'results.json'), 'w') as f:
        f.write('{}')
    self.assertFalse(os.path.exists(temporary))
    self.assertEqual(finished(request), [os.path.basename(run.path)])
    self.assertEqual(runs.latest(request), run.path)
    self.assertTrue(os.path.exists(os.path.join(run.path, 'results.json')))

  def test_a_failed_run_leaves_nothing_and_keeps_latest(self):
    request = self.create_tempdir().full_path
    with runs.new_run(request, CONFIG) as first:
      pass
    with self.assertRaises(RuntimeError):
      with runs.new_run(request, CONFIG) as second:
        open(os.path.join(second.path, 'half.json'), 'w').close()
        raise RuntimeError('boom')
    self.assertEqual(os.listdir(request).count(runs.LATEST), 1)
    self.assertEqual(finished(request), [os.path.basename(first.path)])
    self.assertEqual(runs.latest(request), first.path)
    self.assertEqual([e for e in os.listdir(request) if e.endswith('.partial')], [])

  def test_runs_started_in_the_same_second_get_names_of_their_own(self):
    request = self.create_tempdir().full_path
    with mock.patch.object(runs, 'run_id', return_value='20260101-000000-abcdef12'):
      paths = []
      for _ in range(3):
        with runs.new_run(request, CONFIG) as run:
          pass
        paths.append(os.path.basename(run.path))
    self.assertEqual(paths, ['20260101-000000-abcdef12', '20260101-000000-abcdef12-2',
                             '20260101-000000-abcdef12-3'])
    self.assertEqual(runs.latest(request), os.path.join(request, paths[-1]))

  def test_a_killed_run_is_swept_by_the_next_and_a_live_one_is_not(self):
    request = self.create_tempdir().full_path
    code = ('import sys, time, ml_collections\n'
            'from mu_jax.experiments import runs\n'
            f'with runs.new_run({request!r}, ml_collections.ConfigDict({{"seed": 0}})) as run:\n'
            '  open(run.path + "/results.md", "w").close()\n'
            '  print("ready", flush=True)\n'
            '  time.sleep(600)\n')
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True,
                            cwd=helpers.ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(proc.stdout.readline().strip(), 'ready')
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    live = os.path.join(request, f'.20260101-000000-abcdef12.{os.getpid()}.partial')
    os.makedirs(live)
    killed = [e for e in os.listdir(request) if e.endswith(f'.{proc.pid}.partial')]
    self.assertLen(killed, 1)
    self.assertEqual(finished(request), [])   # a killed run is no run
    with runs.new_run(request, CONFIG):
      pass
    self.assertFalse(os.path.exists(os.path.join(request, killed[0])))
    self.assertTrue(os.path.exists(live))

  def test_provenance_names_the_code_the_machine_and_the_rows(self):
    prov = runs.provenance(started=0.0)
    self.assertEqual(set(prov), {'command', 'date', 'seconds', 'mu_jax', 'git_commit', 'python',
                                 'packages', 'machine'})
    self.assertRegex(prov['git_commit'] or '', r'^([0-9a-f]{40}(\+dirty)?)?$')
    self.assertEqual(prov['machine']['cores'], os.cpu_count())
    indices = np.array([3, 1, 4], np.int32)
    self.assertEqual(runs.indices_hash(indices),
                     hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest())


if __name__ == '__main__':
  absltest.main()
