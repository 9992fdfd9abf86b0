"""Result files: Markdown tables, CSV and JSON, written atomically by one process."""
import csv
import io
import json
import math
import os
import tempfile
from typing import Sequence

from mu_jax import sharding
from mu_jax.evaluation.report import GAP_METRICS

TABLE_COLUMNS = ('method', *GAP_METRICS, 'Avg. Gap', 'seconds', 'speed-up')


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


def write_results(rows: list[dict], directory: str, *, extra: dict | None = None,
                  columns: Sequence[str] = TABLE_COLUMNS) -> None:
  """Writes results.md, results.csv and results.json into `directory`."""
  atomic_write(os.path.join(directory, 'results.md'), markdown_table(rows, columns) + '\n')
  others = sorted({k for row in rows for k in row} - set(columns))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns) + others)
  writer.writeheader()
  writer.writerows(rows)
  atomic_write(os.path.join(directory, 'results.csv'), buf.getvalue())
  atomic_write(os.path.join(directory, 'results.json'),
               json.dumps({'rows': rows, **(extra or {})}, indent=2) + '\n')
