"""Evaluating one model on an unlearning request's splits, and the gap to the oracle."""
import numpy as np

from mu_jax.data import Examples
from mu_jax.evaluation.metrics import predict_outputs, split_statistics

GAP_METRICS = ('UA', 'RA', 'TA', 'MIA')   # the classification task's Avg. Gap metrics


def table_columns(task) -> tuple[str, ...]:
  """The results table's columns for `task`: method, its metrics, gap, cost."""
  return ('method', *task.table_metrics, 'Avg. Gap', 'seconds', 'speed-up')


def evaluate_model(task, variables, splits: dict[str, Examples], *, mesh,
                   batch_size: int, seed: int, mia_max_per_side: int,
                   mia_members: str = 'sample') -> dict[str, float]:
  """The task's metrics (e.g. FA, UA, RA, TA, MIA for a classifier) on forget/retain/test."""
  stats = {name: split_statistics(task, predict_outputs(task, variables, s,
                                                        batch_size=batch_size, mesh=mesh), s)
           for name, s in splits.items()}
  return task.summarize(stats, seed=seed, mia_max_per_side=mia_max_per_side,
                        mia_members=mia_members)


def mia_note(eval_config) -> str:
  """One line under a results table: which rows trained the SVC MIA (`eval` block).

  A run recorded before `eval.mia_members` existed used a seeded sample.
  """
  members = eval_config.get('mia_members', 'sample')
  cap = int(eval_config.get('mia_max_per_side', 0))
  rows = 'a seeded sample' if members == 'sample' else 'the first rows'
  side = f'at most {cap:,} rows per side' if cap > 0 else 'no cap on rows per side'
  return (f'MIA: the SVC trained on {rows} of D_r and of the test split '
          f'(`eval.mia_members={members}`), {side} (`eval.mia_max_per_side={cap}`).')


def avg_gap(metrics: dict[str, float], oracle: dict[str, float],
            keys=GAP_METRICS) -> float:
  """Mean absolute difference to the oracle over `keys` (the task's gap metrics)."""
  return float(np.mean([abs(metrics[k] - oracle[k]) for k in keys]))
