"""Progress bars and metric curves: TensorBoard events == JSON lines, one per step."""
import json
import os
from unittest import mock

import jax
import numpy as np
from absl.testing import absltest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mu_jax import ensembles, logs, sharding
from mu_jax.methods import create_method, run_method
from mu_jax.models import create_model
from mu_jax.train import train_model
from tests import helpers
from tests.test_methods import context, setting
from tests.test_train import recipe


def jsonl_curves(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{name: [(step, value), ...]} of the run's metrics.jsonl."""
  curves = {}
  with open(os.path.join(logdir, logs.JSONL)) as f:
    for line in f:
      row = json.loads(line)
      curves.setdefault(row['name'], []).append((row['step'], row['value']))
  return curves


def event_curves(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{name: [(step, value), ...]} of the run's TensorBoard event files."""
  events = EventAccumulator(logdir)
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in events.Tags()['scalars']}


class MetricWriterTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.model = create_model('mlp', 3, hidden=(16,))
    self.data = helpers.blobs(96)
    self.mesh = sharding.make_mesh('data:2')

  def train(self, **overrides):
    return train_model(helpers.classifier(self.model, self.data), recipe(**overrides),
                       self.data, seed=0, mesh=self.mesh)

  def test_training_writes_each_step_loss_to_events_and_jsonl(self):
    logdir = self.create_tempdir().full_path
    with logs.writing_to(logdir):
      self.train()
    steps = 3 * 3   # 3 epochs of 96 rows / 32 per batch
    jsonl, events = jsonl_curves(logdir), event_curves(logdir)
    self.assertEqual([step for step, _ in jsonl['train/loss']], list(range(1, steps + 1)))
    self.assertEqual([step for step, _ in events['train/loss']], list(range(1, steps + 1)))
    np.testing.assert_array_equal(np.float32([v for _, v in events['train/loss']]),
                                  np.float32([v for _, v in jsonl['train/loss']]))
    epoch_means = np.reshape([v for _, v in jsonl['train/loss']], (3, 3)).mean(1)
    self.assertEqual([step for step, _ in jsonl['train/epoch_loss']], [3, 6, 9])
    np.testing.assert_allclose([v for _, v in jsonl['train/epoch_loss']], epoch_means, rtol=1e-5)

  def test_training_fetches_the_step_losses_once_per_epoch(self):
    task = helpers.classifier(self.model, self.data)
    with (mock.patch.object(sharding, 'to_host', wraps=sharding.to_host) as fetch,
          jax.transfer_guard('disallow'), logs.writing_to(self.create_tempdir().full_path)):
      train_model(task, recipe(), self.data, seed=0, mesh=self.mesh)
    self.assertEqual(fetch.call_count, 3)

  def test_unlearning_records_its_loss_curve(self):
    logdir = self.create_tempdir().full_path
    with logs.writing_to(logdir):
      out = run_method(create_method('ga', learning_rate=0.05, epochs=2, batch_size=32),
                       setting()['variables'], context())
    curve = event_curves(logdir)['unlearn/loss']
    self.assertEqual([step for step, _ in curve], list(range(1, out.steps + 1)))
    self.assertTrue(np.all(np.isfinite([v for _, v in curve])))

  def test_one_member_ensemble_records_the_curve_of_training_alone(self):
    logdir, alone = self.create_tempdir().full_path, self.create_tempdir().full_path
    with logs.writing_to(logdir):
      ensembles.train_ensemble(helpers.classifier(self.model, self.data), recipe(), self.data,
                               seeds=[0], mesh=self.mesh)
    with logs.writing_to(alone):
      self.train()
    np.testing.assert_allclose(jsonl_curves(logdir)['ensemble/loss'],
                               jsonl_curves(alone)['train/loss'], rtol=1e-5)

  def test_ensemble_curve_is_the_same_member_after_member(self):
    masks = ensembles.subset_masks(96, 2, 0.5, seed=0)
    curves = []
    for vectorize in (True, False):
      logdir = self.create_tempdir().full_path
      with logs.writing_to(logdir):
        ensembles.train_ensemble(helpers.classifier(self.model, self.data), recipe(epochs=2),
                                 self.data, seeds=[0, 1], masks=masks, mesh=self.mesh,
                                 vectorize=vectorize)
      curves.append(jsonl_curves(logdir)['ensemble/loss'])
    # 2 epochs of each member's 48 rows in batches of 32.
    self.assertEqual([step for step, _ in curves[0]], list(range(1, 2 * 2 + 1)))
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5)

  def test_nothing_is_written_without_a_current_writer(self):
    with mock.patch.object(logs.MetricWriter, 'write_scalars') as write:
      self.train(epochs=1)
      logs.record(1, {'loss': 0.5})
    write.assert_not_called()

  def test_a_run_that_records_nothing_leaves_no_files(self):
    logdir = os.path.join(self.create_tempdir().full_path, 'logs')
    with logs.writing_to(logdir) as writer:
      self.assertIsNotNone(writer)
    self.assertFalse(os.path.exists(logdir))

  def test_only_process_zero_writes(self):
    logdir = os.path.join(self.create_tempdir().full_path, 'logs')
    with mock.patch.object(sharding, 'is_primary', return_value=False):
      with logs.writing_to(logdir) as writer:
        logs.record(1, {'loss': 0.5})
    self.assertIsNone(writer)
    self.assertFalse(os.path.exists(logdir))

  def test_writers_nest_and_restore(self):
    outer, inner = self.create_tempdir().full_path, self.create_tempdir().full_path
    with logs.writing_to(outer):
      with logs.writing_to(inner):
        logs.record(1, {'a': 1.0}, prefix='p')
      logs.record(2, {'b': 2.0})
    self.assertEqual(jsonl_curves(inner), {'p/a': [(1, 1.0)]})
    self.assertEqual(jsonl_curves(outer), {'b': [(2, 2.0)]})

  def test_hparams_reach_the_hparams_plugin(self):
    logdir = self.create_tempdir().full_path
    with logs.writing_to(logdir) as writer:
      writer.write_hparams({'learning_rate': 0.1, 'optimizer': 'sgd', 'sharded': False})
    events = EventAccumulator(logdir)
    events.Reload()
    self.assertIn('_hparams_/session_start_info', events.PluginTagToContent('hparams'))


class ProgressTest(absltest.TestCase):

  def drawn(self, *, tty: bool, ci: str | None = None) -> bool:
    """Whether `progress` draws a bar with stderr (not) a terminal and CI=`ci` (None: unset)."""
    with mock.patch.dict(os.environ), mock.patch('sys.stderr.isatty', return_value=tty):
      os.environ.pop('CI', None)
      if ci is not None:
        os.environ['CI'] = ci
      bar = logs.progress(range(3), desc='test')
      drawn = not bar.disable
      bar.close()
    return drawn

  def test_drawn_on_a_terminal(self):
    self.assertTrue(self.drawn(tty=True))

  def test_quiet_off_a_terminal_or_in_ci(self):
    self.assertFalse(self.drawn(tty=False))
    self.assertFalse(self.drawn(tty=True, ci='true'))

  def test_quiet_on_other_processes(self):
    with mock.patch.object(sharding, 'is_primary', return_value=False):
      self.assertFalse(self.drawn(tty=True))

  def test_yields_every_item(self):
    self.assertEqual(list(logs.progress(range(3), desc='test')), [0, 1, 2])


if __name__ == '__main__':
  absltest.main()
