"""Evaluating one model on an unlearning setting, Avg. Gap, and result files."""
import csv
import io
import json
import math
import os
import tempfile
from typing import Sequence

import numpy as np

from mu_jax import sharding
from mu_jax.data import Split
from mu_jax.evaluation.metrics import accuracy, predict_logits, true_class_confidence
from mu_jax.evaluation.mia import mia_efficacy

GAP_METRICS = ('UA', 'RA', 'TA', 'MIA')   # DESIGN.md: Avg. Gap over these four
TABLE_COLUMNS = ('method', 'UA', 'RA', 'TA', 'MIA', 'Avg. Gap', 'seconds', 'speed-up')


def evaluate_model(apply_fn, variables, splits: dict[str, Split], *, mesh,
                   batch_size: int, seed: int, mia_max_per_side: int) -> dict[str, float]:
  """FA, UA, RA, TA and MIA-efficacy (all percent) on forget/retain/test splits."""
  logits = {name: predict_logits(apply_fn, variables, s.x, batch_size=batch_size, mesh=mesh)
            for name, s in splits.items()}
  conf = {name: true_class_confidence(logits[name], s.y) for name, s in splits.items()}
  fa = accuracy(logits['forget'], splits['forget'].y)
  return {
      'FA': fa, 'UA': 100.0 - fa,
      'RA': accuracy(logits['retain'], splits['retain'].y),
      'TA': accuracy(logits['test'], splits['test'].y),
      'MIA': mia_efficacy(conf['retain'], conf['test'], conf['forget'], seed=seed,
                          max_per_side=mia_max_per_side),
  }


def avg_gap(metrics: dict[str, float], oracle: dict[str, float]) -> float:
  """Mean absolute difference to the oracle over UA, RA, TA and MIA."""
  return float(np.mean([abs(metrics[k] - oracle[k]) for k in GAP_METRICS]))


def _cell(value) -> str:
  if isinstance(value, float):
    return '—' if math.isnan(value) else f'{value:.2f}'
  return str(value)


def markdown_table(rows: list[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
  """A Markdown table of `rows`; by default the benchmark's, one row per method."""
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  for row in rows:
    cells = [_cell(row.get(c, float('nan'))) for c in columns]
    if row.get('status'):   # e.g. 'diverged': no metrics to show
      cells[1:] = [row['status']] + ['—'] * (len(cells) - 2)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename (process 0 only)."""
  if not sharding.is_primary():   # multi-host: one writer
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_results(rows: list[dict], directory: str, *, extra: dict | None = None) -> None:
  """Writes results.md, results.csv and results.json into `directory`."""
  atomic_write(os.path.join(directory, 'results.md'), markdown_table(rows) + '\n')
  others = sorted({k for row in rows for k in row} - set(TABLE_COLUMNS))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS) + others)
  writer.writeheader()
  writer.writerows(rows)
  atomic_write(os.path.join(directory, 'results.csv'), buf.getvalue())
  atomic_write(os.path.join(directory, 'results.json'),
               json.dumps({'rows': rows, **(extra or {})}, indent=2) + '\n')
