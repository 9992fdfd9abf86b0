"""Scale: 1 vs 8 devices, a 'model' mesh axis, no retracing, no implicit transfers.

Complements the per-module 1-vs-8 tests (train step, Fisher on a linear
model, SSD, IAU, TRAK features, ensembles, ACU) with the convolutional model,
whole training runs, TRAK scores, the pmap entry point, and trace counters.
"""
import dataclasses
import functools

import chex
import jax
import numpy as np
from absl.testing import absltest, parameterized
from jax.sharding import PartitionSpec as P

from mu_jax import models, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches
from mu_jax.influence import fisher, trak
from mu_jax.methods import Context, create_method, run_method
from mu_jax.models import create_model, split_variables
from mu_jax.train import train_model
from tests import helpers
from tests.test_methods import context as mlp_context
from tests.test_methods import setting as mlp_setting
from tests.test_train import assert_trees_close, recipe


def no_implicit_transfers():
  """Fails on any implicit host<->device or device<->device copy (explicit puts are fine)."""
  return jax.transfer_guard('disallow')


def images(n=72, size=8, seed=0) -> Examples:
  """Small random 8x8 images in 3 classes (the CNN runs on any even size)."""
  rng = np.random.default_rng(seed)
  return Examples(x=rng.normal(size=(n, size, size, 1)).astype(np.float32), y=(np.arange(n) % 3).astype(np.int32))


CNN = create_model('cnn', 3)


def cnn_context(mesh_spec):
  model = CNN
  data = images()
  variables = model.init(jax.random.key(0), data['x'][:1])
  ctx = Context(helpers.classifier(model, data), Examples(x=data['x'][:20], y=data['y'][:20]),
                Examples(x=data['x'][20:], y=data['y'][20:]), sharding.make_mesh(mesh_spec), 0)
  return sharding.replicate(variables, ctx.mesh), ctx


class TrainingScaleTest(absltest.TestCase):

  def test_cnn_training_on_eight_devices_matches_one_without_retracing(self):
    data = images()   # 72 rows at batch 32: the last batch of each epoch is padded
    out = []
    for spec in ('data:1', 'data:8'):
      model = create_model('cnn', 3)
      chex.clear_trace_counter()
      counter = chex.assert_max_traces(model.apply, n=1)   # one trace for every step
      task = helpers.classifier(model._replace(apply=counter), data)
      with no_implicit_transfers():
        trained = train_model(task, recipe(epochs=2, batch_size=32), data, seed=0,
                              mesh=sharding.make_mesh(spec))
      out.append(sharding.to_host(trained.variables))
    assert_trees_close(out[0], out[1], rtol=1e-4, atol=1e-6)

  def test_model_axis_splits_large_leaves_and_matches_one_device(self):
    model = create_model('mlp', 3, hidden=(1024,))
    data = helpers.blobs(64, dim=1024)   # a 1024x1024 kernel: 2^20 elements, split
    out = []
    for spec in ('data:1', 'data:2,model:4'):
      trained = train_model(helpers.classifier(model, data), recipe(epochs=2), data, seed=0, mesh=sharding.make_mesh(spec))
      out.append(trained.variables)
    kernel = out[1]['params']['backbone']['Dense_0']['kernel']
    self.assertEqual(kernel.sharding.spec, P(sharding.MODEL_AXIS))
    self.assertEqual(kernel.addressable_shards[0].data.shape, (256, 1024))
    self.assertTrue(out[1]['params']['head']['kernel'].sharding.is_fully_replicated)
    assert_trees_close(sharding.to_host(out[0]), sharding.to_host(out[1]), rtol=1e-4, atol=1e-6)


class ImportanceScaleTest(parameterized.TestCase):

  @parameterized.parameters(*fisher.ESTIMATORS)
  def test_cnn_importance_on_eight_devices_matches_one_without_retracing(self, kind):
    out = []
    for spec in ('data:1', 'data:8'):
      variables, ctx = cnn_context(spec)
      chex.clear_trace_counter()
      counter = chex.assert_max_traces(ctx.task.model.apply, n=1)   # one trace for every step
      spec_ = dataclasses.replace(ctx.task, model=ctx.task.model._replace(apply=counter))
      with no_implicit_transfers():
        out.append(fisher.importance(kind, spec_, variables, ctx, 'union', 16))
    assert_trees_close(out[0], out[1], rtol=1e-4, atol=1e-9)

  def test_per_example_chunks_do_not_change_the_result(self):
    variables, ctx = cnn_context('data:2')
    params = variables['params']
    per_row = sum(p.size * 4 for p in jax.tree.leaves(params))
    self.assertEqual(fisher.chunk_rows(params, 8, 3 * per_row), 2)   # largest divisor <= 3
    self.assertEqual(fisher.chunk_rows(params, 8, 1), 1)
    run = functools.partial(fisher.importance, 'per_example', ctx.task, variables, ctx,
                            'union', 16)
    whole = run(rowwise=False)
    assert_trees_close(whole, run(memory_budget=3 * per_row, rowwise=False),
                       rtol=1e-5, atol=1e-9)
    assert_trees_close(whole, run(rowwise=True), rtol=1e-5, atol=1e-9)
    # A CNN on CPU takes its rows one at a time by default; an MLP vmaps them.
    self.assertEqual(models.vmap_is_slow(params), jax.default_backend() == 'cpu')
    self.assertFalse(models.vmap_is_slow(mlp_setting()['variables']))

  def test_cnn_trak_features_agree_rowwise_vmapped_and_sharded(self):
    out = []
    for spec in ('data:1', 'data:2'):
      variables, ctx = cnn_context(spec)
      stacked = jax.tree.map(lambda leaf: leaf[None], variables)
      run = functools.partial(trak.features, ctx.task, stacked, ctx.forget.take(slice(0, 12)),
                              proj=trak.Projection(dim=16), chunk_size=8, mesh=ctx.mesh)
      out += [run(rowwise=True), run(rowwise=False)]
    # Regression: XLA's automatic partitioning of the vmapped rows once returned
    # wrong features for the second device's rows.
    # Tolerance: float32 summation order, relative to the features' scale (~10).
    scale = float(np.abs(out[0][0]).max())
    for other in out[1:]:
      assert_trees_close(out[0], other, rtol=1e-4, atol=1e-6 * scale)

  @parameterized.parameters('batch', 'per_example')   # label_free shares batch's path
  def test_pmap_entry_point_equals_shard_map(self, kind):
    variables, ctx = cnn_context('data:8')
    params, model_state = split_variables(variables)
    batch = next(epoch_batches(ctx.arrays('union'), 16, seed=0))
    zeros = sharding.replicate(jax.tree.map(np.zeros_like, params), ctx.mesh)
    mapped = fisher._accumulate(zeros, sharding.replicate(np.zeros((), np.float32), ctx.mesh),
                                params, model_state, sharding.shard_batch(batch, ctx.mesh),
                                kind=kind, task=ctx.task, mesh=ctx.mesh, chunk=1)
    per_device = jax.tree.map(lambda a: a.reshape(8, 2, *a.shape[1:]), batch)
    term, weight = fisher.pmap_term(kind, ctx.task)(params, model_state, per_device)
    assert_trees_close(jax.tree.map(lambda a: a[0], (term, weight)), mapped,
                       rtol=1e-5, atol=1e-9)


class AttributionScaleTest(absltest.TestCase):

  def test_trak_scores_on_eight_devices_match_one(self):
    s = mlp_setting()
    stacked = jax.tree.map(lambda leaf: np.stack([leaf, leaf * 0.9]), s['variables'])
    train, target = s['retain'], s['forget']
    out = []
    for spec in ('data:1', 'data:8'):
      mesh = sharding.make_mesh(spec)
      state = trak.fit(helpers.classifier(s['model'], {'x': train['x'][:48]}), stacked, Examples(x=train['x'][:48], y=train['y'][:48]), proj=trak.Projection(dim=16), chunk_size=16, mesh=mesh)
      phi, _ = trak.features(helpers.classifier(s['model'], {'x': target['x'][:16]}), stacked, Examples(x=target['x'][:16], y=target['y'][:16]), proj=trak.Projection(dim=16), chunk_size=16, mesh=mesh)
      out.append(np.asarray(trak.scores(state, phi)))
    self.assertEqual(out[0].shape, (16, 1, 48))
    # Scores pass float32 features through (ΦᵀΦ)⁺ of a 16 x 48 kernel, which
    # amplifies summation-order noise: tolerance relative to the scores' scale.
    np.testing.assert_allclose(out[0], out[1], rtol=1e-3, atol=1e-3 * np.abs(out[0]).max())


class MethodScaleTest(absltest.TestCase):

  def test_gradient_method_update_traces_once(self):
    ctx = mlp_context('data:8')
    chex.clear_trace_counter()
    counter = chex.assert_max_traces(ctx.task.model.apply, n=1)   # one trace for every step
    ctx = ctx._replace(task=dataclasses.replace(
        ctx.task, model=ctx.task.model._replace(apply=counter)))
    out = run_method(create_method('ft', epochs=2, batch_size=32), mlp_setting()['variables'], ctx)
    self.assertGreater(out.steps, 4)


if __name__ == '__main__':
  absltest.main()
