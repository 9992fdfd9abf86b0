"""The quickstart notebook runs end to end on the CPU (smoke settings)."""
import os

import nbformat
from absl.testing import absltest
from nbclient import NotebookClient

from tests import helpers


def tagged(nb, tag: str):
  """The notebook's cell tagged `tag` (cells may move; their tags stay)."""
  return next(cell for cell in nb.cells if tag in cell.metadata.get('tags', []))


class QuickstartTest(absltest.TestCase):

  def test_notebook_runs_and_prints_the_table(self):
    nb = nbformat.read(os.path.join(helpers.ROOT, 'colab', 'quickstart.ipynb'), as_version=4)
    workdir = self.create_tempdir().full_path
    tagged(nb, 'parameters').source = (f"ARG = 'smoke=True'\nREPO = {helpers.ROOT!r}\n"
                                       f"WORKDIR = {workdir!r}")
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': workdir}}).execute()
    self.assertIn("backend 'cpu'", tagged(nb, 'devices').outputs[0]['text'])
    table = tagged(nb, 'results').outputs[0]['data']['text/markdown']
    for row in ('original', 'retrain', 'ft', 'ga', 'rl'):
      self.assertIn(f'| {row} |', table)
    self.assertTrue(os.path.exists(
        os.path.join(workdir, 'results', 'class-0', 'latest', 'results.json')))


if __name__ == '__main__':
  absltest.main()
