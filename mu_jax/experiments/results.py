"""Result files: Markdown tables, CSV and JSON, written atomically by one process."""
import csv
import io
import json
import math
import numbers
import operator
import os
from typing import Sequence

import numpy as np

from mu_jax.evaluation.report import GAP_METRICS
from mu_jax.files import atomic_write

TABLE_COLUMNS = ('method', *GAP_METRICS, 'Avg. Gap', 'seconds', 'speed-up')


def cell(value) -> str:
  """The one number format: two decimals, three significant digits below 0.1,
  '—' for NaN (not measured) and '> budget' for infinity (an attack's budget ran out)."""
  if isinstance(value, float):
    if math.isnan(value):
      return '—'
    if math.isinf(value):
      return '> budget' if value > 0 else '-inf'
    return f'{value:.2f}' if value == 0 or abs(value) >= 0.1 else f'{value:.3g}'
  return str(value)


def _majority_accuracy(task, test) -> float:
  """TA (%) of always answering the test split's most frequent class (>= 100 / classes)."""
  counts = np.bincount(np.asarray(test['y']).ravel(), minlength=task.num_classes)
  return 100.0 * float(counts.max()) / max(len(test), 1)


def _mean_predictor_mse(task, test) -> float:
  """T-MSE of predicting the training targets' mean, 0 once standardised on the
  training split (`mu_jax.data.splits`): the test targets' mean square (test R² = 0)."""
  del task
  return float(np.mean(np.square(np.asarray(test['y'], np.float64))))


# The test score a row must beat to be better than chance, by task: (column, its
# value for a model that ignores its input on `test`, whether a score is no better).
CHANCE = {'classification': ('TA', _majority_accuracy, operator.le),
          'regression': ('T-MSE', _mean_predictor_mse, operator.ge)}
CHANCE_MARK = ' (≤ chance)'   # after the method's name in a table


def mark_chance(rows: list[dict], task, test) -> None:
  """Sets each row's 'at_chance': True when its test score is no better than a model
  that ignores its input (`CHANCE`, on the test split `test`), so a table shows it
  beside the method's name; rows without a score (diverged) and tasks without a
  chance level are left as they are."""
  if task.name not in CHANCE:
    return
  column, chance, no_better = CHANCE[task.name]
  level = chance(task, test)
  for row in rows:
    score = row.get(column)
    if isinstance(score, numbers.Real) and not math.isnan(score):
      row['at_chance'] = bool(no_better(score, level) or
                              math.isclose(score, level, rel_tol=1e-6))


def markdown_table(rows: list[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
  """A Markdown table of `rows`; by default the benchmark's, one row per method.

  A row with a 'status' (e.g. 'diverged') shows it after the method's name, and a
  row no better than chance (`mark_chance`) '(≤ chance)' after the name.
  """
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  start = list(columns).index('method') + 1 if 'method' in columns else 1
  for row in rows:
    cells = [cell(row.get(c, float('nan'))) for c in columns]
    if row.get('at_chance') and 'method' in columns:
      cells[start - 1] += CHANCE_MARK
    if row.get('status'):
      cells[start:] = [row['status']] + ['—'] * (len(cells) - start - 1)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _jsonable(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None if math.isnan(value) else ('inf' if value > 0 else '-inf')
  return value


def write_results(rows: list[dict], directory: str, *, extra: dict | None = None,
                  columns: Sequence[str] = TABLE_COLUMNS, note: str = '') -> None:
  """Writes results.md (the table, then `note`), results.csv and results.json into `directory`."""
  atomic_write(os.path.join(directory, 'results.md'),
               markdown_table(rows, columns) + (f'\n\n{note}' if note else '') + '\n')
  others = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in columns]
  clean = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns) + others)
  writer.writeheader()
  writer.writerows(clean)
  atomic_write(os.path.join(directory, 'results.csv'), buf.getvalue())
  atomic_write(os.path.join(directory, 'results.json'),
               json.dumps({'rows': clean, **(extra or {})}, indent=2, default=str) + '\n')
