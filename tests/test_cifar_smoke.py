"""The GPU/TPU-scale config (ResNet-18, CIFAR-10 through TFDS) end to end on mock data."""
import json
import os

import tensorflow_datasets as tfds
from absl.testing import absltest

from mu_jax.experiments.benchmark import run_benchmark
from mu_jax.experiments.results import markdown_table
from tests import helpers


class Cifar10Resnet18SmokeTest(absltest.TestCase):

  def test_benchmark_runs_on_mock_cifar10(self):
    data_dir = self.create_tempdir().full_path
    workdir = self.create_tempdir().full_path
    config = helpers.load_config('cifar10_resnet18',
                                 f'smoke=True,forget=random:0.25,data_dir={data_dir},'
                                 'methods=ft')   # one method: each compiles a ResNet step
    self.assertEqual(config.model.name, 'resnet18')
    with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
      result = run_benchmark(config, workdir)
    rows = result['rows']
    self.assertEqual([r['method'] for r in rows], ['original', 'retrain', 'ft'])
    self.assertNotIn('diverged', markdown_table(rows))
    self.assertEqual(result['directory'],
                     os.path.realpath(os.path.join(workdir, 'results', 'random-0.25', 'latest')))
    saved = json.load(open(os.path.join(result['directory'], 'results.json')))
    self.assertEqual(saved['forget_size'], 12)
    self.assertEqual(saved['config']['model']['kwargs']['width'], 8)


if __name__ == '__main__':
  absltest.main()
