"""Bring your own model: a Flax module and variables trained outside mu_jax, unlearned.

The module below is named by its import path, `tests.test_own_model:TinyNet`;
its variables are trained here with plain optax, saved with Orbax or msgpack,
and must come back as the original model bit for bit.
"""
import os
import subprocess
import sys
import tempfile

import flax.linen as nn
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl.testing import absltest, parameterized
from flax import serialization
from sklearn import datasets

from mu_jax import checkpoint, sharding
from mu_jax.errors import MuJaxError
from mu_jax.experiments.benchmark import run_benchmark, unlearn
from mu_jax.experiments.setting import prepare_setting
from mu_jax.models import create_model
from tests import helpers

TINY = 'tests.test_own_model:TinyNet'


class TinyNet(nn.Module):
  """A classifier written without mu_jax: no `train` argument, no 'head' layer."""
  outputs: int
  width: int = 32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.outputs)(x)


class NoOutputs(nn.Module):
  """A module without the `outputs` argument mu_jax passes."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(x)


def train_outside(width: int = 32, steps: int = 20) -> dict:
  """TinyNet's variables after a few full-batch Adam steps on sklearn's digits, without mu_jax."""
  digits = datasets.load_digits()
  x = ((digits.images - 8.0) / 8.0)[..., None].astype(np.float32)
  y = digits.target
  model = TinyNet(outputs=10, width=width)
  params = model.init(jax.random.PRNGKey(1), x[:1])['params']
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    def loss(p):
      logits = model.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return jax.tree.map(np.asarray, {'params': params})


def save_orbax(path: str, tree, checkpointer=None) -> str:
  """Saves `tree` with `checkpointer` (default: a StandardCheckpointer), synchronously."""
  checkpointer = checkpointer or ocp.StandardCheckpointer()
  checkpointer.save(path, tree)
  if hasattr(checkpointer, 'wait_until_finished'):   # the asynchronous ones
    checkpointer.wait_until_finished()
  return path


def save_msgpack(path: str, tree) -> str:
  with open(path, 'wb') as f:
    f.write(serialization.to_bytes(tree))
  return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
  """`python -m mu_jax unlearn` from the repository root, where `tests` is importable."""
  return subprocess.run(
      [sys.executable, '-m', 'mu_jax', 'unlearn',
       '--config=mu_jax.configs.digits_mlp:smoke=True,method=ft', *args],
      cwd=helpers.ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))


class OwnModelTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = tempfile.mkdtemp(prefix='own-model-')
    cls.workdir = os.path.join(root, 'work')
    cls.variables = train_outside()
    cls.orbax = save_orbax(os.path.join(root, 'orbax'), cls.variables)
    # The usual optax workflow saves the params alone.
    cls.msgpack = save_msgpack(os.path.join(root, 'params.msgpack'), cls.variables['params'])
    cls.narrow = save_msgpack(os.path.join(root, 'narrow.msgpack'), train_outside(16, steps=1))

  def config(self, path: str):
    config = helpers.load_config('digits_mlp', 'smoke=True')
    config.model.name = TINY
    config.model.checkpoint = path
    return config

  def assert_unlearns_the_saved_model(self, path: str):
    setting = prepare_setting(self.config(path), self.workdir)
    original = sharding.to_host(setting.original.variables)
    self.assertEqual(jax.tree.structure(original), jax.tree.structure(self.variables))
    for got, saved in zip(jax.tree.leaves(original), jax.tree.leaves(self.variables)):
      self.assertEqual(got.dtype, saved.dtype)
      np.testing.assert_array_equal(got, saved)
    self.assertTrue(np.isnan(setting.original.train_seconds))
    self.assertGreater(setting.oracle.epochs, 0)   # the oracle is still trained on D_r
    unlearned = sharding.to_host(unlearn(setting, 'ft').variables)
    self.assertFalse(all(np.array_equal(a, b) for a, b in
                         zip(jax.tree.leaves(unlearned), jax.tree.leaves(original))))

  def test_orbax_checkpoint_is_the_original(self):
    self.assert_unlearns_the_saved_model(self.orbax)

  def test_msgpack_params_are_the_original(self):
    self.assert_unlearns_the_saved_model(self.msgpack)

  def test_method_needing_a_head_is_refused_before_any_training(self):
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(MuJaxError, "Method 'acu' needs a final linear layer, which model "
                                f"'{TINY}' does not expose"):
      run_benchmark(self.config(self.msgpack), workdir, methods=['ft', 'acu'])
    self.assertFalse(os.path.exists(os.path.join(workdir, 'models')))

  def test_pytree_checkpointer_save_loads(self):
    path = save_orbax(os.path.join(self.create_tempdir().full_path, 'ckpt'), self.variables,
                      ocp.PyTreeCheckpointer())
    loaded = checkpoint.load_variables(path, self.variables)
    for got, saved in zip(jax.tree.leaves(loaded), jax.tree.leaves(self.variables)):
      np.testing.assert_array_equal(got, saved)

  def test_mismatched_shapes_name_the_first_leaf(self):
    with self.assertRaisesRegex(MuJaxError, r"\['params'\]\['Dense_0'\]\['bias'\] is of shape "
                                r'\(16,\) in the checkpoint but of shape \(32,\) in the model'):
      checkpoint.load_variables(self.narrow, self.variables)

  def test_missing_checkpoint(self):
    with self.assertRaisesRegex(MuJaxError, '/no/such/checkpoint does not exist'):
      checkpoint.load_variables('/no/such/checkpoint', self.variables)

  @parameterized.named_parameters(
      ('unimportable', 'tests.no_such_module:TinyNet', "Cannot import module 'tests.no_such"),
      ('no_attribute', 'tests.test_own_model:Nope', "has no attribute 'Nope'"),
      ('not_a_module', 'tests.test_own_model:train_outside', 'is not a flax.linen.Module'),
      ('no_outputs', 'tests.test_own_model:NoOutputs', 'must accept an `outputs` argument'),
  )
  def test_bad_model_path_is_one_sentence(self, path, message):
    with self.assertRaisesRegex(MuJaxError, message):
      create_model(path, 10)

  def test_cli_unlearns_the_saved_model(self):
    result = run_cli(f'--config.model.name={TINY}', f'--config.model.checkpoint={self.orbax}',
                     f'--workdir={self.workdir}')
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn('| ft |', result.stdout)
    self.assertNotIn('original epoch', result.stderr)

  @parameterized.named_parameters(
      ('missing_checkpoint', TINY, '/no/such/checkpoint', 'does not exist'),
      ('wrong_shapes', TINY, None, 'do not fit the model'),
      ('unimportable_module', 'tests.no_such_module:TinyNet', None, 'Cannot import module'),
  )
  def test_cli_bad_input_is_one_line(self, name, path, message):
    result = run_cli(f'--config.model.name={name}',
                     f'--config.model.checkpoint={path or self.narrow}',
                     f'--workdir={self.create_tempdir().full_path}')
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    self.assertStartsWith(last, 'error: ')
    self.assertIn(message, last)
    self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
  absltest.main()
