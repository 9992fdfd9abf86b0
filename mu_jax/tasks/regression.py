"""Regression: real-valued predictions [N, T] against targets 'y' [N, T].

The second task, and the worked example of how a task plugs in: it reads
'x' and 'y', its loss is the squared error (mean over the T targets), its
statistics are the squared and absolute errors and the residual, and its
metrics are the forget / retain / test MSE and MAE (Deep Regression
Unlearning, Tarun et al., ICML 2023, reports MSE or MAE per split), the
Avg. Gap over those six, and a loss-based MIA: the SVC protocol of the
classification task on the per-example loss. Its model is any `Model` with a
final Dense head of T outputs, so analytic (ridge) heads apply; it has no
class labels and no input range, so methods needing those refuse it.
"""
import dataclasses

import chex
import jax.numpy as jnp

from mu_jax.tasks.base import LINEAR_HEAD, OUTPUT_VECTOR, Task, mean_of


@dataclasses.dataclass(frozen=True)
class Regression(Task):
  """Inputs 'x' and float targets 'y' [N, num_targets]."""
  num_targets: int = 1

  name = 'regression'
  capabilities = frozenset({LINEAR_HEAD, OUTPUT_VECTOR})
  keys = ('x', 'y')
  metric_columns = {
      'F-MSE': ('forget', 'mse'), 'R-MSE': ('retain', 'mse'), 'T-MSE': ('test', 'mse'),
      'F-MAE': ('forget', 'mae'), 'R-MAE': ('retain', 'mae'), 'T-MAE': ('test', 'mae')}
  table_metrics = ('F-MSE', 'R-MSE', 'T-MSE', 'F-MAE', 'R-MAE', 'T-MAE', 'MIA')
  gap_metrics = ('F-MSE', 'R-MSE', 'T-MSE', 'F-MAE', 'R-MAE', 'T-MAE')
  mia_statistic = 'loss'
  evaluators = {'mse': mean_of('squared_error'), 'mae': mean_of('abs_error')}

  @classmethod
  def create(cls, model, input_shape, outputs):
    return cls(model, input_shape, num_targets=outputs)

  def losses(self, outputs, batch):
    chex.assert_equal_shape((outputs, batch['y']))   # predictions and targets [N, T]
    return jnp.mean(jnp.square(outputs.astype(jnp.float32) - batch['y']), -1)

  def statistics(self, outputs, batch):
    residual = batch['y'] - outputs.astype(jnp.float32)
    squared = jnp.mean(jnp.square(residual), -1)
    return {'loss': squared, 'squared_error': squared,
            'abs_error': jnp.mean(jnp.abs(residual), -1), 'residual': jnp.mean(residual, -1)}

  def head_targets(self, batch):
    return batch['y'].astype(jnp.float32)
