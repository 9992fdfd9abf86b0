"""`mu-jax report`: pages generated from run JSON, byte for byte, and the committed docs held to it."""
import json
import os
import shutil
import subprocess
import sys

from absl.testing import absltest

from mu_jax.errors import MuJaxError
from mu_jax.experiments import report
from tests import helpers

FIXTURE = os.path.join(helpers.ROOT, 'tests', 'fixtures', 'report')
STORE = os.path.join(FIXTURE, 'runs')
DOCS = os.path.join(helpers.ROOT, 'docs')


def expected_pages(folder: str) -> dict[str, str]:
  """{relative path: text} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path) as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


class ReportTest(absltest.TestCase):

  def test_fixture_store_renders_the_expected_pages(self):
    with open(os.path.join(FIXTURE, 'README.md')) as f:
      readme = f.read()
    self.assertEqual(report.render(STORE, readme), expected_pages(os.path.join(FIXTURE, 'expected')))

  def test_committed_docs_are_what_the_report_generates(self):
    with open(os.path.join(helpers.ROOT, 'README.md')) as f:
      readme = f.read()
    generated = report.render(os.path.join(DOCS, 'runs'), readme)
    self.assertEqual(generated.pop('README.md'), readme,
                     'README headline is stale: run `make docs`')
    for rel, text in generated.items():
      with open(os.path.join(DOCS, rel)) as f:
        self.assertEqual(f.read(), text, f'docs/{rel} is stale or hand-edited: run `make docs`')
    pages = {os.path.join('results', f) for f in os.listdir(os.path.join(DOCS, 'results'))
             if f.endswith('.md')}
    self.assertEqual(pages, {rel for rel in generated if rel.startswith('results')},
                     'a docs/results page has no runs behind it')

  def test_leaderboard_cells_are_the_runs_gaps_in_rank_order(self):
    pages = report.load_store(STORE)
    run = pages['digits'][0]
    gaps = {r['method']: r['Avg. Gap'] for r in run['rows']}
    table = report.leaderboard_table([('digits', run)]).splitlines()[2:]
    methods = [line.split(' | ')[0].strip('| ') for line in table]
    self.assertEqual(methods[:2], ['original', 'retrain'])
    self.assertEqual(methods[2:], sorted(set(gaps) - {'original', 'retrain'}, key=gaps.get))
    for line in table:
      method, gap = line.strip('| ').split(' | ')[:2]
      self.assertEqual(gap, f'{gaps[method]:.2f}')

  def test_a_newer_run_of_a_setting_replaces_the_older(self):
    store = self.create_tempdir().full_path
    source = os.path.join(STORE, 'digits', 'benchmark-mlp-digits-class-0.json')
    first = report.add_run(source, store)
    run = json.load(open(source))
    run['rows'][2]['Avg. Gap'] = 1.5
    newer = os.path.join(self.create_tempdir().full_path, 'results.json')
    with open(newer, 'w') as f:
      json.dump(run, f)
    self.assertEqual(report.add_run(os.path.dirname(newer), store), first)
    self.assertEqual(report.load_store(store)['digits'][0]['rows'][2]['Avg. Gap'], 1.5)

  def test_a_part_run_is_kept_beside_the_settings_run(self):
    store = self.create_tempdir().full_path
    source = os.path.join(STORE, 'digits', 'benchmark-mlp-digits-class-0.json')
    whole = report.add_run(source, store)
    part = report.add_run(source, store, part='ft+ga')
    self.assertNotEqual(part, whole)
    self.assertTrue(part.endswith('benchmark-mlp-digits-class-0-ft-ga.json'))
    runs = report.load_store(store)['digits']
    self.assertEqual([run.get('report_part') for run in runs], [None, 'ft+ga'])
    page = report.render_page('digits', runs)
    self.assertIn('forget=class:0 (ft+ga)', page)
    with self.assertRaisesRegex(MuJaxError, 'A run part must be'):
      report.add_run(source, store, part='../x')

  def test_bad_runs_are_refused_in_one_sentence(self):
    folder = self.create_tempdir().full_path
    with open(os.path.join(folder, 'results.json'), 'w') as f:
      f.write('{"rows": [')
    with self.assertRaisesRegex(MuJaxError, 'Cannot read the run JSON'):
      report.add_run(folder, self.create_tempdir().full_path)
    with self.assertRaisesRegex(MuJaxError, 'does not exist'):
      report.load_store(os.path.join(folder, 'nothing'))
    with self.assertRaisesRegex(MuJaxError, 'no run in the store has'):
      report.update_readme('<!-- report: digits class:7 -->\n<!-- end of report -->',
                           report.load_store(STORE))

  def test_command_writes_the_pages(self):
    out = self.create_tempdir().full_path
    store = os.path.join(out, 'runs')
    shutil.copytree(STORE, store)
    result = subprocess.run(
        [sys.executable, '-m', 'mu_jax', 'report', f'--runs={store}', f'--out={out}'],
        capture_output=True, text=True, cwd=out, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    expected = expected_pages(os.path.join(FIXTURE, 'expected'))
    expected.pop('README.md')
    for rel, text in expected.items():
      with open(os.path.join(out, rel)) as f:
        self.assertEqual(f.read(), text)
    missing = subprocess.run(
        [sys.executable, '-m', 'mu_jax', 'report', f'--runs={out}/none', f'--out={out}'],
        capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(missing.returncode, 1)
    self.assertIn('error: The run store', missing.stderr.strip().splitlines()[-1])


if __name__ == '__main__':
  absltest.main()
