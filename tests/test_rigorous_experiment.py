"""The rigorous experiment end to end: settings, result files, and CLI errors."""
import json
import os
import subprocess
import sys

import numpy as np
from absl.testing import absltest

from mu_jax.experiments import config_lib
from mu_jax.errors import MuJaxError
from mu_jax.experiments import rigorous
from mu_jax.evaluation import ulira
from tests import helpers

CONFIG = os.path.join(helpers.ROOT, 'configs', 'digits_rigorous.py')


def _config(arg: str, **rigorous_overrides):
  config = config_lib.load_config_file(CONFIG, 'smoke=True,mesh=data:1,epochs=1,' + arg)
  with config.unlocked():
    config.rigorous.update(rigorous_overrides)
  return config


class RigorousExperimentTest(absltest.TestCase):

  def test_sequential_requests_are_scored_on_everything_forgotten_so_far(self):
    workdir = self.create_tempdir().full_path
    config = _config('scenario=sequential,methods=ft,forget=random:0.05',
                     sequential={'requests': 2}, relearn={'max_steps': 0})
    out = rigorous.run_rigorous(config, workdir)
    self.assertEqual([(r['request'], r['method']) for r in out['rows']],
                     [(1, 'original'), (1, 'ft'), (2, 'original'), (2, 'ft')])
    forget = np.load(os.path.join(out['directory'], 'forget_indices.npy'))
    first = len(forget) - len(forget) // 2
    self.assertEqual(out['details']['ft@1']['margins'].shape, (4, first))
    self.assertEqual(out['details']['ft@2']['margins'].shape, (4, len(forget)))
    self.assertEqual(out['rows'][1]['models'], 4)
    self.assertTrue(np.isnan(out['rows'][3]['relearn']))   # relearning disabled
    for name in ('results.md', 'results.json', 'results.csv', 'details.npz', 'tradeoff.png',
                 'roc.png', 'cost.png'):
      self.assertTrue(os.path.exists(os.path.join(out['directory'], name)), name)
    with open(os.path.join(out['directory'], 'results.json')) as f:
      self.assertLen(json.load(f)['rows'], 4)

  def test_corrective_setting_reports_attack_success(self):
    workdir = self.create_tempdir().full_path
    config = _config('scenario=corrective,methods=ft', reference_oracles=False, plots=False,
                     relearn={'max_steps': 0})
    out = rigorous.run_rigorous(config, workdir)
    rows = {r['method']: r for r in out['rows']}
    self.assertEqual(set(rows), {'original', 'retrain (clean)', 'ft'})
    # Every poisoned row removed: the patch no longer flips predictions to the target.
    self.assertGreater(rows['original']['ASR'], 50.0)
    self.assertLess(rows['retrain (clean)']['ASR'], rows['original']['ASR'])
    self.assertIn('| ASR |', rigorous.markdown_table(out['rows']))

  def test_hayes_ulira_gives_each_model_its_own_half_of_the_forget_set(self):
    workdir = self.create_tempdir().full_path
    config = _config('methods=ft,forget=random:0.05', ulira_protocol='hayes',
                     relearn={'max_steps': 0})
    out = rigorous.run_rigorous(config, workdir)
    rows = {r['method']: r for r in out['rows']}
    self.assertEqual(set(rows), {'original', 'retrain', 'ft'})
    for row in rows.values():
      for column in ('U-LiRA', 'U-LiRA TPR@0.1%', 'U-LiRA TPR@1%'):
        self.assertTrue(np.isfinite(row[column]), (row['method'], column, row[column]))
    forget = np.load(os.path.join(out['directory'], 'forget_indices.npy'))
    forgotten = out['details']['oracle']['ulira_forgotten']
    self.assertEqual(forgotten.shape, (4, len(forget)))
    np.testing.assert_array_equal(forgotten.sum(1), round(len(forget) / 2))
    self.assertLen({f.tobytes() for f in forgotten}, 4)   # F_k differs across k
    self.assertTrue(os.path.exists(os.path.join(out['directory'], 'roc.png')))
    # Only pairs (model k, x in F_k) are attacked, each side the same pairs.
    counted = ulira.counted_pairs(forgotten, folds=2, seed=config.seed)
    for name in rows:
      self.assertEqual(out['details'][name]['ulira_u'].shape, (counted.sum(),))
      self.assertEqual(out['details'][name]['ulira_o'].shape, (counted.sum(),))
    models = os.listdir(os.path.join(workdir, 'models'))
    for role in ('hayes-oracle', 'hayes-reference-oracle'):
      self.assertLen([m for m in models if m.startswith(f'ensemble-{role}-')], 1)
    with self.assertRaisesRegex(MuJaxError, "ulira_protocol='hayes' is not offered"):
      rigorous.run_rigorous(_config('scenario=sequential', ulira_protocol='hayes'), workdir)

  def test_bad_settings_fail_in_one_line(self):
    with self.assertRaisesRegex(MuJaxError, 'Unknown rigorous scenario'):
      rigorous.run_rigorous(_config('scenario=bogus'), self.create_tempdir().full_path)
    with self.assertRaisesRegex(MuJaxError, 'at least 4 models'):
      rigorous.run_rigorous(_config('num_models=2'), self.create_tempdir().full_path)
    with self.assertRaisesRegex(MuJaxError, 'whole number'):
      _config('num_models=many')
    own = _config('num_models=4')
    own.model.checkpoint = '/some/variables.msgpack'
    with self.assertRaisesRegex(MuJaxError, 'cannot use the model at model.checkpoint'):
      rigorous.run_rigorous(own, self.create_tempdir().full_path)
    proc = subprocess.run(
        [sys.executable, os.path.join(helpers.ROOT, 'experiments', 'rigorous.py'),
         f'--config={CONFIG}:smoke=True,scenario=bogus',
         f'--workdir={self.create_tempdir().full_path}'],
        capture_output=True, text=True, cwd=helpers.ROOT, timeout=300)
    self.assertEqual(proc.returncode, 1)
    self.assertEqual(proc.stderr.strip().splitlines()[-1],
                     "error: Unknown rigorous scenario 'bogus'; valid: standard, worst_case, "
                     'sequential, corrective.')


if __name__ == '__main__':
  absltest.main()
