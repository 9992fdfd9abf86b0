"""Length-grouped batches (train.group_by_length): HF's order, cut widths, unchanged losses."""
import jax
import numpy as np
import optax
from absl.testing import absltest

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.batching import length_grouped_batches, length_grouped_order
from mu_jax.errors import MuJaxError
from mu_jax.models import create_model
from mu_jax.tasks import create_task
from mu_jax.train import make_train_step, state_from, train_model
from tests import helpers

VOCAB, WIDTH = 64, 40


def token_rows(lengths, seed=0) -> dict[str, np.ndarray]:
  """Rows of random tokens, right-padded after `lengths`, scored on all but the first."""
  rng = np.random.default_rng(seed)
  x = rng.integers(4, VOCAB, (len(lengths), WIDTH)).astype(np.int32)
  m = np.zeros((len(lengths), WIDTH), np.float32)
  for i, n in enumerate(lengths):
    x[i, n:] = 0
    m[i, 1:n] = 1
  return {'x': x, 'm': m}


LM = create_task('language_model', create_model('transformer', VOCAB, size='tiny',
                                                 max_len=WIDTH), (WIDTH,), VOCAB)


class OrderTest(absltest.TestCase):

  def test_a_seeded_permutation_sorted_longest_first_within_mega_batches(self):
    lengths = np.random.default_rng(1).integers(2, WIDTH, 4832)
    order = length_grouped_order(lengths, 32, seed=3, epoch=2)
    np.testing.assert_array_equal(np.sort(order), np.arange(4832))
    np.testing.assert_array_equal(order, length_grouped_order(lengths, 32, seed=3, epoch=2))
    self.assertFalse(np.array_equal(order, length_grouped_order(lengths, 32, seed=3, epoch=3)))
    mega = min(4832 // (32 * 4), 50) * 32   # HF's mega-batch: 37 batches here
    self.assertEqual(mega, 1184)
    for start in range(0, 4832, mega):
      chunk = lengths[order[start:start + mega]]
      self.assertTrue(np.all(np.diff(chunk) <= 0))
    # the mega-batches hold the seeded permutation's consecutive slices
    shuffled = np.random.default_rng([3, 2]).permutation(4832)
    self.assertEqual(set(order[:mega]), set(shuffled[:mega]))

  def test_batches_cut_to_their_longest_row_in_multiples_of_eight(self):
    lengths = np.random.default_rng(2).integers(2, WIDTH + 1, 70)
    arrays = {**token_rows(lengths), 'p': np.arange(70)}
    batches = list(length_grouped_batches(arrays, 16, lengths, ('x', 'm'), seed=0, epoch=0))
    self.assertLen(batches, 5)
    seen = []
    for batch in batches:
      real = batch['w'] > 0
      longest = lengths[batch['p'][real]].max()
      self.assertEqual(batch['x'].shape[1], min(-(-longest // 8) * 8, WIDTH))
      self.assertEqual(batch['m'].shape, batch['x'].shape)
      seen.extend(batch['p'][real])
      np.testing.assert_array_equal(batch['x'], arrays['x'][batch['p'], :batch['x'].shape[1]])
    self.assertCountEqual(seen, range(70))
    self.assertEqual(batches[-1]['w'].sum(), 70 - 4 * 16)

  def test_lengths_end_at_the_last_scored_position(self):
    rows = token_rows([5, 40, 2])
    rows['m'][0, 1:3] = 0          # an unscored prompt does not shorten a row
    np.testing.assert_array_equal(LM.lengths(rows), [5, 40, 2])
    rows['m'][2] = 0
    self.assertEqual(LM.lengths(rows)[2], 1)


class CutBatchTest(absltest.TestCase):

  def test_cut_batch_has_the_same_losses_and_training_step(self):
    rows = {**token_rows([9, 14, 6, 16]), 'w': np.ones(4, np.float32)}
    cut = {k: v[:, :16] if k in LM.sequence_keys else v for k, v in rows.items()}
    variables = LM.init(jax.random.PRNGKey(0))
    full_out, _ = LM.apply(variables, rows, False)
    cut_out, _ = LM.apply(variables, cut, False)
    np.testing.assert_allclose(LM.losses(cut_out, cut), LM.losses(full_out, rows), rtol=1e-5)
    tx = optax.sgd(0.1)   # updates proportional to the gradients (Adam's first step is not)
    step = jax.jit(make_train_step(LM, tx))
    full_state, full_stats = step(state_from(variables, tx), rows)
    cut_state, cut_stats = step(state_from(variables, tx), cut)
    np.testing.assert_allclose(cut_stats['loss_sum'], full_stats['loss_sum'], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(cut_state.params), jax.tree.leaves(full_state.params)):
      np.testing.assert_allclose(a, b, atol=1e-6)


def recipe(**overrides):
  return helpers.recipe(**{**dict(optimizer='adamw', learning_rate=1e-2, momentum=0.0,
                                  weight_decay=0.0, schedule='constant', batch_size=8,
                                  epochs=2, group_by_length=True), **overrides})


class TrainModelTest(absltest.TestCase):

  def test_grouped_training_learns(self):
    lengths = np.random.default_rng(4).integers(8, WIDTH + 1, 48)
    rows = token_rows(lengths)
    rows['x'][:, 1::2] = 7          # every other token is predictable
    data = Examples(**rows)
    mesh = sharding.make_mesh('')
    first = train_model(LM, recipe(epochs=1), data, seed=0, mesh=mesh)
    longer = train_model(LM, recipe(epochs=6), data, seed=0, mesh=mesh)
    losses = [float(LM.mean_loss(LM.apply(t.variables, {**rows, 'w': np.ones(48)}, False)[0],
                                 {**rows, 'w': np.ones(48)})) for t in (first, longer)]
    self.assertLess(losses[1], losses[0])

  def test_refused_for_a_task_of_fixed_shape(self):
    task = create_task('classification', create_model('mlp', 3, hidden=(4,)), (2,), 3)
    data = Examples(x=np.zeros((8, 2), np.float32), y=np.zeros(8, np.int32))
    with self.assertRaisesRegex(MuJaxError, 'group_by_length needs examples of varying '
                                'length; the classification task has one fixed shape'):
      train_model(task, recipe(), data, seed=0, mesh=sharding.make_mesh(''))


if __name__ == '__main__':
  absltest.main()
