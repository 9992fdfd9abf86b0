"""Results pages and the leaderboard, generated from runs' results.json, never edited by hand.

A store is a folder of run JSON files, one sub-folder per page
(`<store>/<page>/<run>.json`); `add_run` copies a finished run into it.
`write_report` then renders

  <out>/results/<page>.md   every run of the page: its table and its provenance
  <out>/leaderboard.md      one row per method, its Avg. Gap to the oracle per setting

and, given a README, the table between its headline markers. The same store
always renders to the same bytes, so a test can hold the committed pages to it.
"""
import json
import math
import os
import re
import shutil

from mu_jax.errors import MuJaxError
from mu_jax.evaluation import mia_note
from mu_jax.experiments.results import TABLE_COLUMNS, markdown_table
from mu_jax.files import atomic_write

PAGE_TITLES = {
    'digits': "scikit-learn's 8x8 digits",
    'fashion-mnist': 'Fashion-MNIST',
    'regression': 'regression (diabetes, Friedman #1)',
    'tofu': 'language model on TOFU-style fictitious authors (generated)',
}
PAGE_NOTES = {
    'regression': 'Targets are standardised on the training split, so MSE and MAE are in '
                  "units of the training targets' standard deviation; F/R/T = forget / retain "
                  '/ test, MIA is the loss-based SVC attack, and Avg. Gap averages the six '
                  'errors.',
    'fashion-mnist': "Read from Debian's `dataset-fashion-mnist` IDX files.",
    'tofu': 'The corpus, the transformer and every column are described in '
            '[language_models.md](../language_models.md). `target` is fine-tuned on every '
            'author, `retain` (the oracle) on the retain authors only, both from one base '
            'model pre-trained here; seconds are fine-tuning (or unlearning) wall time, '
            'compilation included. Method rows unlearn the target with the rates of '
            '[Unlearning methods on the benchmark]'
            '(../language_models.md#unlearning-methods-on-the-benchmark); `dp-sgd` is '
            "DP2Unlearning's private model (DP-SGD at ε ≤ 1, δ = 10⁻¹², its exact ε in the "
            "run's JSON), which the `dp2unlearning` row fine-tunes on the retain rows.",
}
REFERENCES = ('original', 'retrain')   # rows that frame the methods, not entries
HEADLINE = re.compile(r'(<!-- report: (\S+) (\S+)(?: (\S+))? -->\n).*?(<!-- end of report -->)',
                      re.S)


def dataset_name(run: dict) -> str:
  """'digits', 'fashion-mnist' (from 'idx:/usr/share/datasets/fashion-mnist'), 'cifar10', ..."""
  source = run['config']['data']['source']
  name = os.path.basename(os.path.normpath(source.split(':', 1)[-1]))
  return re.sub(r'[^a-z0-9.]+', '-', name.lower()).strip('-')


def task_of(run: dict) -> str:
  return run['config'].get('task', 'classification')


def page_of(run: dict) -> str:
  """The page a run belongs to: its task for regression, else its data set."""
  return 'regression' if task_of(run) == 'regression' else dataset_name(run)


def run_slug(run: dict) -> str:
  """The run's file name in a store: one file per kind, model, data set and request, and
  per part (`add_run`'s `part`) where a setting's methods ran in more than one run."""
  config = run['config']
  parts = [run.get('kind', 'benchmark'), config['model']['name'], config['data']['source'],
           config['forget']]
  if run.get('kind') == 'rigorous':
    parts.append(config['rigorous']['scenario'])
  if run.get('report_part'):
    parts.append(run['report_part'])
  return re.sub(r'[^A-Za-z0-9.]+', '-', '-'.join(parts)).strip('-')


def _number(value):
  """A JSON cell back as results.json meant it: null is NaN (not measured), 'inf' infinity."""
  if value is None:
    return math.nan
  if value in ('inf', '-inf'):
    return float(value)
  return value


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      run = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise MuJaxError(f'Cannot read the run JSON {path} ({e}); pass a run folder or its '
                     'results.json.') from e
  if not isinstance(run, dict) or 'rows' not in run or 'config' not in run:
    raise MuJaxError(f'{path} is not a run\'s results.json (it has no rows or no config).')
  run['rows'] = [{k: _number(v) for k, v in row.items()} for row in run['rows']]
  return run


def add_run(run_path: str, store: str, part: str | None = None) -> str:
  """Copies a run (its folder, a `latest` link, or its results.json) into the store.

  It replaces the store's run of its setting, or, with `part` (a label such as the
  methods it ran), only that setting's run of the same part: a page then shows each
  part's run as its own table, with its own reference rows and provenance.
  """
  path = os.path.realpath(run_path)
  if os.path.isdir(path):
    path = os.path.join(path, 'results.json')
  run = _read(path)
  if part is not None and not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.+-]*', part):
    raise MuJaxError(f'A run part must be letters, digits and _ . + -, got {part!r}.')
  if part:
    run['report_part'] = part
  target = os.path.join(store, page_of(run), run_slug(run) + '.json')
  os.makedirs(os.path.dirname(target), exist_ok=True)
  if part:
    with open(path) as f:
      raw = json.load(f)
    atomic_write(target, json.dumps(raw | {'report_part': part}, indent=2) + '\n')
  else:
    shutil.copyfile(path, target)
  return target


def load_store(store: str) -> dict[str, list[dict]]:
  """{page: its runs, in file-name order} of a store."""
  if not os.path.isdir(store):
    raise MuJaxError(f'The run store {store} does not exist; add runs with --add first.')
  pages = {}
  for page in sorted(os.listdir(store)):
    folder = os.path.join(store, page)
    if os.path.isdir(folder):
      files = sorted((f for f in os.listdir(folder) if f.endswith('.json')),
                     key=lambda f: f[:-len('.json')])   # a setting's run before its parts
      pages[page] = [_read(os.path.join(folder, f)) for f in files]
  return {page: found for page, found in pages.items() if found}


def heading(run: dict) -> str:
  """'mlp, forget=class:0' for a benchmark; the scenario and ensemble size for a rigorous run."""
  config = run['config']
  text = f"`{config['model']['name']}` on `{config['data']['source']}`, forget={config['forget']}"
  if run.get('kind') == 'rigorous':
    rc = config['rigorous']
    text = f"Rigorous ({rc['scenario']}, {rc['num_models']} models per side): {text}"
  if run.get('report_part'):
    text += f" ({run['report_part']})"
  return text


def recipe_line(run: dict) -> str:
  """The model, its training recipe and the split sizes, from the run's config."""
  config, train = run['config'], run['config']['train']
  kwargs = ', '.join(f'{k}={v}' for k, v in sorted(config['model']['kwargs'].items()))
  sizes = [f"{run[key]:,} {name}" for key, name in
           (('forget_size', 'forget'), ('retain_size', 'retain'), ('train_size', 'training'),
            ('test_size', 'test')) if key in run]
  base = config.get('pretrain')
  pretrained = (f"; pre-trained {base['epochs']} epochs at learning rate "
                f"{base['learning_rate']:g}" if base else '')
  return (f"Model `{config['model']['name']}`" + (f' ({kwargs})' if kwargs else '') +
          pretrained + f"; {'fine-tuned' if base else 'trained'} with {train['optimizer']}, "
          f"learning rate {train['learning_rate']:g}, batch {train['batch_size']}"
          f"{' grouped by length' if train.get('group_by_length') else ''}, "
          f"{train['epochs']} epochs" + (f"; rows: {', '.join(sizes)}." if sizes else '.'))


def provenance_line(run: dict) -> str:
  """Command, date, commit, machine and versions of a run, in one line."""
  prov = run.get('provenance')
  if not prov:
    return '_Provenance not recorded._'
  m = prov['machine']
  commit = (prov.get('git_commit') or 'no checkout')[:10] + (
      '+dirty' if (prov.get('git_commit') or '').endswith('+dirty') else '')
  return (f"`{prov['command']}` · {prov['date'][:10]} · commit {commit} · "
          f"{m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), {m['backend']} × "
          f"{m['devices']}, load {'/'.join(map(str, m['load_average']))} (1/5/15 min) · JAX {prov['packages']['jax']}, "
          f"Flax {prov['packages']['flax']} · {prov['seconds']:.0f} s in all")


def render_page(page: str, runs: list[dict]) -> str:
  """One results page: a section per run, its table and its provenance."""
  lines = [f'# Results: {PAGE_TITLES.get(page, page)}', '',
           '_Generated by `mu-jax report` from the runs\' JSON in '
           f'`docs/runs/{page}/`; do not edit._ Metrics are defined in '
           '[metrics.md](../metrics.md), methods in [methods.md](../methods.md).', '']
  if page in PAGE_NOTES:
    lines += [PAGE_NOTES[page], '']
  for run in runs:
    columns = run.get('columns', TABLE_COLUMNS)
    lines += [f'## {heading(run)}', '', recipe_line(run), '',
              markdown_table(run['rows'], columns), '']
    if 'MIA' in columns:
      lines += [mia_note(run['config']['eval']), '']
    lines += [provenance_line(run), '']
  return '\n'.join(lines)


def _gap(row: dict) -> float | str:
  return row['status'] if row.get('status') else float(row.get('Avg. Gap', math.nan))


def _mean(values) -> float:
  numbers = [v for v in values if isinstance(v, float) and not math.isnan(v)]
  return sum(numbers) / len(numbers) if numbers else math.inf


def leaderboard_table(settings: list[tuple[str, dict]]) -> str:
  """Methods (after the reference rows) by their mean Avg. Gap over `settings` [(label, run)]."""
  gaps: dict[str, dict[str, float | str]] = {}
  for label, run in settings:
    for row in run['rows']:
      gaps.setdefault(row['method'], {})[label] = _gap(row)
  methods = [m for m in REFERENCES if m in gaps]
  methods += sorted((m for m in gaps if m not in REFERENCES),
                    key=lambda m: (_mean(gaps[m].values()), m))
  rows = [{'method': m, **gaps[m], 'mean': _mean(gaps[m].values())} for m in methods]
  return markdown_table(rows, ('method', *(label for label, _ in settings), 'mean'))


def render_leaderboard(pages: dict[str, list[dict]]) -> str:
  """Per task, methods by their mean Avg. Gap to the oracle over the benchmark settings."""
  settings = [(page, run) for page, found in pages.items() for run in found
              if run.get('kind', 'benchmark') == 'benchmark']
  lines = ['# Leaderboard', '',
           "_Generated by `mu-jax report` from the runs' JSON in `docs/runs/`; do not edit._",
           '', 'Avg. Gap to the retrained oracle (lower is better; see '
           '[metrics.md](metrics.md)) of each method per setting, and its mean over the '
           'settings it ran; one table per task, as the gap\'s units differ between tasks. '
           '`original` (no unlearning) and `retrain` (the oracle) frame the methods.', '']
  for task in sorted({task_of(run) for _, run in settings}):
    chosen = [(f"{dataset_name(run)} {run['config']['model']['name']} {run['config']['forget']}",
               run) for _, run in settings if task_of(run) == task]
    lines += [f'## {task.capitalize()}', '', leaderboard_table(chosen), '']
  lines += ['## Settings', '', '| setting | page | date | commit | command |',
            '|---|---|---|---|---|']
  for page, run in settings:
    prov = run.get('provenance') or {}
    label = f"{dataset_name(run)} {run['config']['model']['name']} {run['config']['forget']}"
    lines.append(f"| {label} | [{page}](results/{page}.md) | {prov.get('date', '—')[:10]} | "
                 f"{(prov.get('git_commit') or '—')[:10]} | `{prov.get('command', '—')}` |")
  return '\n'.join(lines) + '\n'


def render_headline(pages: dict[str, list[dict]], page: str, forget: str,
                    methods: str | None = None) -> str:
  """The README's small table: the first benchmark run of `page` with request `forget`,
  its reference rows and the comma-separated `methods` (default: all), in that order."""
  for run in pages.get(page, []):
    if run.get('kind', 'benchmark') == 'benchmark' and run['config']['forget'] == forget:
      columns = [c for c in run.get('columns', TABLE_COLUMNS) if c not in ('speed-up',)]
      rows = run['rows']
      if methods:
        by_name = {row['method']: row for row in rows}
        rows = [by_name[m] for m in (*REFERENCES, *methods.split(',')) if m in by_name]
      return markdown_table(rows, columns) + '\n'
  raise MuJaxError(f'The README asks for a headline from {page} forget={forget}, which no run '
                   'in the store has; add such a run or change the marker.')


def update_readme(text: str, pages: dict[str, list[dict]]) -> str:
  """The README with every '<!-- report: PAGE FORGET [METHODS] -->' block regenerated."""
  return HEADLINE.sub(lambda m: m.group(1) + render_headline(pages, *m.group(2, 3, 4))
                      + m.group(5), text)


def render(store: str, readme_text: str | None = None) -> dict[str, str]:
  """{relative path: content} of every generated page (and README.md if given)."""
  pages = load_store(store)
  out = {os.path.join('results', f'{page}.md'): render_page(page, found)
         for page, found in pages.items()}
  out['leaderboard.md'] = render_leaderboard(pages)
  if readme_text is not None:
    out['README.md'] = update_readme(readme_text, pages)
  return out


def write_report(store: str, out_dir: str, readme: str | None = None) -> list[str]:
  """Writes the pages under `out_dir` (and the README's headline); returns the paths."""
  text = None
  if readme:
    with open(readme) as f:
      text = f.read()
  written = []
  for rel, content in render(store, text).items():
    path = readme if rel == 'README.md' else os.path.join(out_dir, rel)
    atomic_write(path, content)
    written.append(path)
  return written

