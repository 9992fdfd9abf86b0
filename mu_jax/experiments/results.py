"""Result files: Markdown tables, CSV and JSON, written atomically by one process."""
import csv
import io
import json
import math
import os
from typing import Sequence

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


def markdown_table(rows: list[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
  """A Markdown table of `rows`; by default the benchmark's, one row per method.

  A row with a 'status' (e.g. 'diverged') shows it after the method's name.
  """
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  start = list(columns).index('method') + 1 if 'method' in columns else 1
  for row in rows:
    cells = [cell(row.get(c, float('nan'))) for c in columns]
    if row.get('status'):
      cells[start:] = [row['status']] + ['—'] * (len(cells) - start - 1)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _jsonable(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None if math.isnan(value) else ('inf' if value > 0 else '-inf')
  return value


def write_results(rows: list[dict], directory: str, *, extra: dict | None = None,
                  columns: Sequence[str] = TABLE_COLUMNS) -> None:
  """Writes results.md, results.csv and results.json into `directory`."""
  atomic_write(os.path.join(directory, 'results.md'), markdown_table(rows, columns) + '\n')
  others = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in columns]
  clean = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns) + others)
  writer.writeheader()
  writer.writerows(clean)
  atomic_write(os.path.join(directory, 'results.csv'), buf.getvalue())
  atomic_write(os.path.join(directory, 'results.json'),
               json.dumps({'rows': clean, **(extra or {})}, indent=2, default=str) + '\n')
