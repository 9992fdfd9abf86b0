"""Config files and config_lib: argument parsing, method defaults, locking."""
import os

from absl.testing import absltest

from mu_jax.experiments import config_lib
from mu_jax.errors import MuJaxError
from mu_jax.methods import METHODS, create_method, method_defaults
from tests import helpers


class ConfigTest(absltest.TestCase):

  def test_default_workdir_ignores_config_arguments(self):
    from mu_jax.commands import cli
    for arg in ('configs/fashion_mnist_cnn.py', 'configs/fashion_mnist_cnn.py:forget=random:0.1',
                'fashion_mnist_cnn.py:method=rl,seed=3'):
      self.assertEqual(cli.default_workdir(arg), os.path.join('runs', 'fashion_mnist_cnn'))

  def test_ssd_alpha_follows_the_request(self):
    self.assertEqual(helpers.load_config('digits_mlp', 'forget=class:3').unlearn.ssd
                     .selection_weighting, 3.0)
    self.assertEqual(helpers.load_config('digits_mlp', 'forget=random:0.1').unlearn.ssd
                     .selection_weighting, 10.0)

  def test_arguments_set_their_fields(self):
    c = helpers.load_config('digits_mlp', 'method=rl,forget=random:0.1,seed=3,methods=ft+ga,'
                            'gradient_restriction=0.005')
    self.assertEqual((c.method, c.forget, c.seed, c.methods), ('rl', 'random:0.1', 3, 'ft,ga'))
    self.assertEqual(c.train.gradient_restriction, 0.005)

  def test_smoke_shrinks_and_arguments_still_win(self):
    c = helpers.load_config('digits_mlp', 'smoke=True,epochs=5')
    self.assertEqual(c.train.epochs, 5)
    self.assertEqual(c.unlearn.ft.epochs, 1)
    self.assertEqual(c.methods, 'ft,ga,rl')

  def test_bad_arguments_are_refused(self):
    with self.assertRaisesRegex(MuJaxError, "Unknown config argument 'epoch'"):
      helpers.load_config('digits_mlp', 'epoch=3')
    with self.assertRaisesRegex(MuJaxError, 'is not key=value'):
      helpers.load_config('digits_mlp', 'smoke')
    with self.assertRaisesRegex(MuJaxError, "Config argument seed='zero' must be a whole number"):
      helpers.load_config('digits_mlp', 'seed=zero')

  def test_every_method_is_filled_with_its_defaults_and_overrides(self):
    c = helpers.load_config('fashion_mnist_cnn', '')
    for name in METHODS.names():
      filled = config_lib.method_hparams(c, name)
      self.assertEqual(set(filled), set(method_defaults(name)), name)
    self.assertEqual(c.unlearn.ft.epochs, 1)                 # the config's override
    self.assertEqual(c.unlearn.ga.learning_rate, 1e-4)        # the method's default

  def test_locked_config_refuses_new_keys_and_typed_none_defaults_accept_values(self):
    c = helpers.load_config('digits_mlp', '')
    with self.assertRaises(AttributeError):
      c.trian = 1
    c.unlearn.dmm.num_models = 64            # a None default is an int placeholder
    self.assertEqual(config_lib.method_hparams(c, 'dmm')['num_models'], 64)
    with self.assertRaises(TypeError):
      c.unlearn.dmm.num_models = 'many'

  def test_smooth_overrides_are_a_typed_nested_config_passed_only_when_set(self):
    c = helpers.load_config('digits_mlp', '')
    self.assertEqual(config_lib.method_hparams(c, 'smooth')['overrides'], {})
    c.unlearn.smooth.overrides.learning_rate = 1e-3
    c.unlearn.smooth.overrides.epochs = 2
    self.assertEqual(config_lib.method_hparams(c, 'smooth')['overrides'],
                     {'learning_rate': 1e-3, 'epochs': 2})
    with self.assertRaises(TypeError):
      c.unlearn.smooth.overrides.epochs = 'many'
    c.unlearn.smooth.method = 'ga'   # the same overrides serve any wrapped method
    method = create_method('smooth', **config_lib.method_hparams(c, 'smooth'))
    self.assertEqual(method.stream.epochs, 2)


if __name__ == '__main__':
  absltest.main()
