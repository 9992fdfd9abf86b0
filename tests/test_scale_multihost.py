"""Multi-host start: two CPU processes under jax.distributed run one experiment.

Each process sees one CPU device; together they form a 2-device 'data' mesh
(CPU collectives over Gloo). Only process 0 prints and writes results; both
save the Orbax checkpoints together and exit 0.
"""
import os
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tests import helpers


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class MultiHostTest(absltest.TestCase):

  def test_two_processes_train_and_only_process_zero_writes(self):
    workdir = tempfile.mkdtemp()
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS='cpu', TQDM_DISABLE='1')
    procs = [subprocess.Popen(
        [sys.executable, 'experiments/train.py',
         '--config=configs/digits_mlp.py:smoke=True', f'--workdir={workdir}', '--multihost',
         f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
        cwd=helpers.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
      self.assertEqual(p.returncode, 0, err[-2000:])
    self.assertIn('| retrain |', outs[0][0])
    self.assertNotIn('| retrain |', outs[1][0])
    self.assertIn('process 0 of 2: 1 local of 2 devices', outs[0][1])
    self.assertNotIn('epoch 1/', outs[1][1])   # process 1 logs warnings only
    self.assertFalse(os.path.exists(os.path.join(workdir, 'results')))   # train writes no run
    self.assertLen(os.listdir(os.path.join(workdir, 'models')), 2)   # original, oracle


if __name__ == '__main__':
  absltest.main()
