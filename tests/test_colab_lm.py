"""The language-model notebook runs end to end on the CPU (the tofu_tiny config)."""
import os

import nbformat
from absl.testing import absltest
from nbclient import NotebookClient

from mu_jax.configs import tofu_tiny
from mu_jax.experiments.lm.benchmark import COLUMNS
from mu_jax.experiments.lm.data import build_corpus
from tests import helpers


def tagged(nb, tag: str):
  """The notebook's cell tagged `tag` (cells may move; their tags stay)."""
  return next(cell for cell in nb.cells if tag in cell.metadata.get('tags', []))


def text_of(cell) -> str:
  return ''.join(o.get('text', '') for o in cell.outputs if o.get('output_type') == 'stream')


class LMNotebookTest(absltest.TestCase):

  def test_notebook_runs_and_prints_the_table(self):
    nb = nbformat.read(os.path.join(helpers.ROOT, 'colab', 'lm_unlearning.ipynb'), as_version=4)
    workdir = self.create_tempdir().full_path
    tagged(nb, 'parameters').source = (
        f"CONFIG = 'tofu_tiny'\nARG = ''\nREPO = {helpers.ROOT!r}\nWORKDIR = {workdir!r}\n"
        "GEMMA_CHECKPOINT = ''\nGEMMA_TOKENIZER = ''\nGEMMA_MODEL = 'Gemma3_270M'\n"
        'GEMMA_VERSION = 3')
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': workdir}}).execute()
    self.assertIn("backend 'cpu'", text_of(tagged(nb, 'devices')))
    table = next(o['data']['text/markdown'] for o in tagged(nb, 'results').outputs
                 if 'text/markdown' in o.get('data', {}))
    header = table.splitlines()[0]
    methods = [line.split('|')[1].strip() for line in table.splitlines()[2:]]
    for row in ('target', 'retain', 'ga'):   # a name may carry a mark, e.g. '(≤ chance)'
      self.assertTrue(any(m == row or m.startswith(row + ' ') for m in methods), methods)
    for column in COLUMNS:
      self.assertIn(column, header)
    config = tofu_tiny.get_config()
    corpus = build_corpus(config.data)
    questions = [q.qa.question for q in corpus.author_qas(corpus.forget_authors(config.forget))]
    answers = text_of(tagged(nb, 'answers'))
    for question in questions[:2]:
      self.assertIn(question, answers)
    self.assertIn('skipped', text_of(tagged(nb, 'gemma')))
    self.assertTrue(os.path.exists(
        os.path.join(workdir, 'results', 'forget10', 'latest', 'results.json')))


if __name__ == '__main__':
  absltest.main()
