"""Every config value checked before any work (`mu_jax.experiments.validation`), and
the '(≤ chance)' marker of a results row no better than chance."""
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from absl.testing import absltest, parameterized

from mu_jax.data import Examples, load_dataset
from mu_jax.data.forget import check_spec
from mu_jax.errors import MuJaxError
from mu_jax.experiments import config_lib, results, validation
from mu_jax.tasks import Classification, Regression
from tests import helpers


def _set(config, path: str, value):
  """config.<path> = value on an unlocked copy (as a Python user or config file may)."""
  config = config.copy_and_resolve_references()
  *parents, leaf = path.split('.')
  with config.unlocked():
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


class CheckConfigTest(parameterized.TestCase):

  def test_every_shipped_config_passes(self):
    for path in sorted(glob.glob(os.path.join(helpers.ROOT, 'mu_jax', 'configs', '[a-z]*.py'))):
      for arg in ('', 'smoke=True'):
        validation.check_config(config_lib.load_config_file(path, arg))

  @parameterized.named_parameters(
      ('empty_methods', 'methods', '', "config.methods is '', which names no method"),
      ('all_comma_methods', 'methods', ',,', "config.methods is ',,', which names no method"),
      ('duplicate_method', 'methods', 'ft,ga,ft', "lists 'ft' more than once"),
      ('unknown_method', 'methods', 'ft,fx', "config.methods names 'fx', which is not a method"),
      ('unknown_single_method', 'method', 'fx', "config.method names 'fx'"),
      ('train_epochs', 'train.epochs', 0,
       r'config.train.epochs is 0; it must be a whole number >= 1'),
      ('method_epochs', 'unlearn.ft.epochs', 0, r'config.unlearn.ft.epochs is 0;'),
      ('prefixed_epochs', 'unlearn.blindspot.blindspot_epochs', -1,
       r'config.unlearn.blindspot.blindspot_epochs is -1;'),
      ('ensemble_epochs', 'unlearn.dmm.ensemble_epochs', 0,
       r'config.unlearn.dmm.ensemble_epochs is 0;'),
      ('train_batch', 'train.batch_size', 0, r'config.train.batch_size is 0; it must be a whole'),
      ('eval_batch', 'eval.batch_size', -4, r'config.eval.batch_size is -4;'),
      ('method_batch', 'unlearn.scrub.forget_batch_size', 0,
       r'config.unlearn.scrub.forget_batch_size is 0;'),
      ('wrapped_batch', 'unlearn.smooth.overrides.batch_size', 0,
       r'config.unlearn.smooth.overrides.batch_size is 0;'),
      ('checkpoint_every', 'train.checkpoint_every', 0, r'config.train.checkpoint_every is 0;'),
      ('nan_train_lr', 'train.learning_rate', math.nan,
       r'config.train.learning_rate is nan; it must be a finite number > 0'),
      ('zero_train_lr', 'train.learning_rate', 0.0, r'config.train.learning_rate is 0.0;'),
      ('inf_method_lr', 'unlearn.ga.learning_rate', math.inf,
       r'config.unlearn.ga.learning_rate is inf; it must be a finite number > 0'),
      ('negative_method_lr', 'unlearn.rl.learning_rate', -0.1,
       r'config.unlearn.rl.learning_rate is -0.1;'),
      ('ensemble_lr', 'unlearn.dm_direct.ensemble_learning_rate', 0.0,
       r'config.unlearn.dm_direct.ensemble_learning_rate is 0.0;'),
      ('no_test_split', 'data.test_fraction', 0.0,
       r'config.data.test_fraction is 0.0, but digits has no test split of its own'),
      ('val_fraction_one', 'data.val_fraction', 1.0,
       r'config.data.val_fraction is 1.0; it must be a number in \[0, 1\)'),
      ('fractions_sum', 'data.val_fraction', 0.8,
       r'config.data.val_fraction \(0.8\) and config.data.test_fraction \(0.2\) sum to 1'),
      ('negative_seed', 'seed', -1, r'config.seed is -1; it must be a whole number >= 0'),
      ('unknown_optimizer', 'train.optimizer', 'adagrad',
       r"config.train.optimizer is 'adagrad'; it must be sgd, adam, adamw"),
      ('model_keyword', 'model.kwargs.depth', 3,
       r"Model 'mlp' takes no keyword 'depth' \(config.model.kwargs.depth\); valid: hidden\."),
      ('method_keyword', 'unlearn.ft.lr', 1.0,
       r"Method 'ft' has no hyper-parameter 'lr' \(config.unlearn.ft.lr\); valid: batch_size, "
       r'epochs, learning_rate, lora_alpha, lora_init, lora_rank, lora_targets, momentum, '
       r'weight_decay\.'),
      ('unknown_model', 'model.name', 'mpl', r"Unknown model 'mpl'; valid names are: cnn, mlp"),
      ('forget_fraction', 'forget', 'random:1.5', r"'random:1.5' needs a fraction strictly"),
      ('forget_class', 'forget', 'class:x', r"'class:x' needs a whole-number class"),
  )
  def test_refused_naming_key_value_and_what_is_allowed(self, path, value, message):
    config = _set(helpers.load_config('digits_mlp'), path, value)
    with self.assertRaisesRegex(MuJaxError, message):
      validation.check_config(config)

  @parameterized.named_parameters(
      ('scrub_without_max_steps', 'unlearn.scrub.max_steps', 0),   # SCRUB msteps=0: min steps only
      ('no_warm_up', 'unlearn.npo.warmup_epochs', 0),
      ('huge_but_finite_lr', 'unlearn.ga.learning_rate', 1e6),
      ('no_validation_split', 'data.val_fraction', 0.0),
  )
  def test_values_with_a_meaning_at_their_bound_are_accepted(self, path, value):
    validation.check_config(_set(helpers.load_config('digits_mlp'), path, value))

  def test_rigorous_zero_means_off_or_default(self):
    config = helpers.load_config('digits_rigorous')
    for path in ('rigorous.relearn.max_steps', 'rigorous.relearn.batch_size',
                 'rigorous.train_size', 'rigorous.mia_models'):
      validation.check_config(_set(config, path, 0))
    with self.assertRaisesRegex(MuJaxError, r'config.rigorous.num_models is 3; it must be a '
                                            r'whole number, at least 4 models per side'):
      validation.check_config(_set(config, 'rigorous.num_models', 3))
    with self.assertRaisesRegex(MuJaxError, r'config.rigorous.worst_case.select_epochs is 0;'):
      validation.check_config(_set(config, 'rigorous.worst_case.select_epochs', 0))

  def test_regression_sources_need_a_test_fraction_too(self):
    config = _set(helpers.load_config('diabetes_mlp'), 'data.test_fraction', 0.0)
    with self.assertRaisesRegex(MuJaxError, 'but diabetes has no test split of its own'):
      validation.check_config(config)

  def test_a_test_fraction_that_rounds_to_no_rows_is_refused_at_loading(self):
    with self.assertRaisesRegex(MuJaxError, r'test_fraction=0.0002 of the 1797 rows of digits '
                                            r'holds out no test rows'):
      load_dataset('digits', test_fraction=0.0002)


class OverrideErrorTest(parameterized.TestCase):
  """The sentence for a --config.<key>=<value> that ml_collections refuses."""

  @parameterized.named_parameters(
      ('method_keyword', 'unlearn.ft.lr', '1',
       "Method 'ft' has no hyper-parameter 'lr' (config.unlearn.ft.lr); valid: batch_size, "
       'epochs, learning_rate, lora_alpha, lora_init, lora_rank, lora_targets, momentum, '
       'weight_decay.'),
      ('model_keyword', 'model.kwargs.depth', '3',
       "Model 'mlp' takes no keyword 'depth' (config.model.kwargs.depth); valid: hidden."),
      ('unknown_method', 'unlearn.fx.epochs', '1',
       "--config.unlearn.fx.epochs: 'fx' is not a method"),
      ('misspelt_key', 'trian.epochs', '3',
       "--config.trian.epochs: config has no key 'trian'; valid: data, eval,"),
      ('int_field', 'train.epochs', '1.5',
       "--config.train.epochs='1.5' must be a whole number (int)."),
      ('float_field', 'train.learning_rate', 'fast',
       "--config.train.learning_rate='fast' must be a number (float)."),
      ('bool_field', 'smoke', 'maybe', "--config.smoke='maybe' must be True or False."),
  )
  def test_names_the_key_and_what_it_allows(self, path, value, message):
    self.assertStartsWith(validation.override_error(helpers.load_config('digits_mlp'), path, value),
                          message)

  def test_a_valid_override_is_not_blamed(self):
    self.assertIsNone(validation.override_error(helpers.load_config('digits_mlp'),
                                                'unlearn.ft.epochs', '3'))


class ConfigFileAndArgumentTest(absltest.TestCase):

  def _file(self, text: str) -> str:
    path = os.path.join(self.create_tempdir().full_path, 'my_config.py')
    with open(path, 'w') as f:
      f.write(text)
    return path

  def test_syntax_error_names_the_file_and_line(self):
    path = self._file('def get_config(arg=None)\n  return None\n')
    with self.assertRaisesRegex(MuJaxError, f'Config file {path} has a syntax error at line 1'):
      config_lib.load_config_file(path)

  def test_missing_get_config_names_the_file(self):
    path = self._file('X = 1\n')
    with self.assertRaisesRegex(MuJaxError, f'Config file {path} defines no get_config'):
      config_lib.load_config_file(path)

  def test_argument_of_the_wrong_type_names_key_and_type(self):
    with self.assertRaisesRegex(MuJaxError, r"Config argument seed='abc' must be a whole number"):
      helpers.load_config('digits_mlp', 'seed=abc')
    with self.assertRaisesRegex(MuJaxError, r"Config argument smoke='maybe' must be True or False"):
      helpers.load_config('digits_mlp', 'smoke=maybe')


class IndexFileTest(absltest.TestCase):

  def test_an_index_beyond_int64_is_refused_in_one_sentence(self):
    directory = self.create_tempdir().full_path
    text = os.path.join(directory, 'forget.txt')
    with open(text, 'w') as f:
      f.write('3\n99999999999999999999\n')
    with self.assertRaisesRegex(MuJaxError, f'{text} holds 99999999999999999999, beyond'):
      check_spec(f'file:{text}')
    npy = os.path.join(directory, 'forget.npy')
    np.save(npy, np.array([1, 2**64 - 1], np.uint64))
    with self.assertRaisesRegex(MuJaxError, f'{npy} holds index 18446744073709551615, beyond'):
      check_spec(f'file:{npy}')

  def test_negative_and_repeated_indices_are_refused_before_loading(self):
    directory = self.create_tempdir().full_path
    for body, message in (('1\n-2\n', 'holds index -2, but indices count from 0'),
                          ('4,4', 'lists index 4 more than once'), ('', 'lists no indices')):
      path = os.path.join(directory, 'forget.txt')
      with open(path, 'w') as f:
        f.write(body)
      with self.assertRaisesRegex(MuJaxError, message):
        check_spec(f'file:{path}')


class ChanceMarkerTest(absltest.TestCase):
  """Chance: the test score of a model that ignores its input."""

  def test_classification_rows_at_or_below_the_majority_class_accuracy_are_marked(self):
    test = Examples(x=np.zeros((5, 1)), y=np.array([0, 0, 0, 1, 2], np.int32))   # majority: 60%
    rows = [{'method': 'ga', 'TA': 60.0}, {'method': 'ft', 'TA': 60.01},
            {'method': 'rl', 'TA': 10.0}, {'method': 'npo', 'status': 'diverged'}]
    results.mark_chance(rows, Classification(None, (1,), num_classes=10), test)
    self.assertEqual([r.get('at_chance') for r in rows], [True, False, True, None])
    table = results.markdown_table(rows, ('method', 'TA')).splitlines()
    self.assertEqual(table[2:4], ['| ga (≤ chance) | 60.00 |', '| ft | 60.01 |'])

  def test_regression_rows_no_better_than_the_training_mean_are_marked(self):
    test = Examples(x=np.zeros((2, 1)), y=np.array([[1.0], [-3.0]], np.float32))   # mean y² = 5
    rows = [{'method': 'ga', 'T-MSE': 5.0}, {'method': 'ft', 'T-MSE': 4.99}]
    results.mark_chance(rows, Regression(None, (1,), num_targets=1), test)
    self.assertEqual([r['at_chance'] for r in rows], [True, False])

  def test_the_marker_is_kept_in_results_json(self):
    rows = [{'method': 'ga', 'TA': 5.0}]
    test = Examples(x=np.zeros((10, 1)), y=np.arange(10, dtype=np.int32))   # chance: 10%
    results.mark_chance(rows, Classification(None, (1,), num_classes=10), test)
    directory = self.create_tempdir().full_path
    results.write_results(rows, directory, columns=('method', 'TA'))
    with open(os.path.join(directory, 'results.json')) as f:
      self.assertIs(json.load(f)['rows'][0]['at_chance'], True)
    with open(os.path.join(directory, 'results.md')) as f:
      self.assertIn('| ga (≤ chance) | 5.00 |', f.read())


def _snapshot(directory: str) -> dict[str, bytes]:
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = (open(path, 'rb').read() if name in files
                                               else b'<dir>')
  return out


class CommandLineTest(parameterized.TestCase):
  """What the user meets: one `error:` line, exit 1, and the workdir untouched."""

  @parameterized.named_parameters(
      ('duplicate_methods', 'benchmark', '', ['--config.methods=ft,ft'],
       "error: config.methods is 'ft,ft', which lists 'ft' more than once"),
      ('method_keyword', 'unlearn', '', ['--config.unlearn.ft.lr=1'],
       "error: Method 'ft' has no hyper-parameter 'lr' (config.unlearn.ft.lr); valid: "),
      ('empty_test_split', 'train', '', ['--config.data.test_fraction=0'],
       'error: config.data.test_fraction is 0.0, but digits has no test split of its own'),
      ('argument_type', 'train', ',seed=abc', [],
       "error: Config argument seed='abc' must be a whole"),
  )
  def test_refused_before_any_work(self, command, argument, overrides, message):
    with tempfile.TemporaryDirectory() as workdir:
      previous = os.path.join(workdir, 'results', 'class-0', '20240101-000000')
      os.makedirs(previous)
      with open(os.path.join(previous, 'results.json'), 'w') as f:
        f.write('{"rows": []}\n')
      before = _snapshot(workdir)
      proc = subprocess.run(
          [sys.executable, '-m', 'mu_jax', command,
           f'--config=mu_jax.configs.digits_mlp:smoke=True{argument}', f'--workdir={workdir}',
           *overrides],
          cwd=helpers.ROOT, capture_output=True, text=True, timeout=300)
      self.assertEqual(proc.returncode, 1, proc.stderr)
      self.assertEqual(proc.stderr.count('\n'), 1, proc.stderr)
      self.assertStartsWith(proc.stderr, message)
      self.assertNotIn('Traceback', proc.stderr)
      self.assertEqual(proc.stdout, '')
      self.assertEqual(_snapshot(workdir), before)


if __name__ == '__main__':
  absltest.main()
