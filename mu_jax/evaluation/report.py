"""Evaluating one model on an unlearning request's splits, and the gap to the oracle."""
import numpy as np

from mu_jax.data import Examples
from mu_jax.evaluation.metrics import predict_outputs, split_statistics

GAP_METRICS = ('UA', 'RA', 'TA', 'MIA')   # the classification task's Avg. Gap metrics


def table_columns(task) -> tuple[str, ...]:
  """The results table's columns for `task`: method, its metrics, gap, cost."""
  return ('method', *task.table_metrics, 'Avg. Gap', 'seconds', 'speed-up')


def evaluate_model(task, variables, splits: dict[str, Examples], *, mesh,
                   batch_size: int, seed: int, mia_max_per_side: int) -> dict[str, float]:
  """The task's metrics (e.g. FA, UA, RA, TA, MIA for a classifier) on forget/retain/test."""
  stats = {name: split_statistics(task, predict_outputs(task, variables, s,
                                                        batch_size=batch_size, mesh=mesh), s)
           for name, s in splits.items()}
  return task.summarize(stats, seed=seed, mia_max_per_side=mia_max_per_side)


def avg_gap(metrics: dict[str, float], oracle: dict[str, float],
            keys=GAP_METRICS) -> float:
  """Mean absolute difference to the oracle over `keys` (the task's gap metrics)."""
  return float(np.mean([abs(metrics[k] - oracle[k]) for k in keys]))
