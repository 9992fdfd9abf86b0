"""The evaluation notebook runs end to end on the CPU (smoke settings) and shows its outputs."""
import os

import nbformat
from absl.testing import absltest
from nbclient import NotebookClient

from tests import helpers


def tagged(nb, tag: str):
  """The notebook's cell tagged `tag` (cells may move; their tags stay)."""
  return next(cell for cell in nb.cells if tag in cell.metadata.get('tags', []))


class EvaluationNotebookTest(absltest.TestCase):

  def test_notebook_runs_and_shows_the_table_and_plots(self):
    nb = nbformat.read(os.path.join(helpers.ROOT, 'colab', 'evaluation.ipynb'), as_version=4)
    workdir = self.create_tempdir().full_path
    tagged(nb, 'parameters').source = (
        "ARG = 'smoke=True,mesh=data:1,epochs=1,forget=random:0.05'\n"
        f"REPO = {helpers.ROOT!r}\nWORKDIR = {workdir!r}")
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': workdir}}).execute()
    table = tagged(nb, 'results').outputs[0]['data']['text/markdown']
    for row in ('original', 'retrain', 'ft', 'ssd'):
      self.assertIn(f'| {row} |', table)
    images = [o for o in tagged(nb, 'plots').outputs if 'image/png' in o.get('data', {})]
    self.assertLen(images, 4)
    directory = os.path.join(workdir, 'results', 'random-0.05', 'rigorous', 'latest')
    for name in ('results.md', 'results.json', 'details.npz', 'forget_indices.npy'):
      self.assertTrue(os.path.exists(os.path.join(directory, name)), name)


if __name__ == '__main__':
  absltest.main()
