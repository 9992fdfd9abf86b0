"""The README's promises: its Python examples run as written, and every relative link resolves."""
import os
import re

from absl.testing import absltest

from mu_jax.methods import METHODS
from tests import helpers

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
CODE = re.compile(r'```python\n(.*?)```', re.S)


def read(rel: str) -> str:
  with open(os.path.join(helpers.ROOT, rel)) as f:
    return f.read()


def markdown_files() -> list[str]:
  docs = [os.path.join(root, f) for root, _, files in os.walk(os.path.join(helpers.ROOT, 'docs'))
          for f in files if f.endswith('.md')]
  return [os.path.join(helpers.ROOT, 'README.md')] + sorted(docs)


class ReadmeTest(absltest.TestCase):

  def test_short_enough_to_read(self):
    self.assertLessEqual(len(read('README.md').splitlines()), 300)

  def test_relative_links_resolve(self):
    for path in markdown_files():
      with open(path) as f:
        text = f.read()
      for target in LINK.findall(text):
        if re.match(r'[a-z]+://|mailto:|#', target):
          continue
        resolved = os.path.join(os.path.dirname(path), target.split('#')[0])
        self.assertTrue(os.path.exists(resolved),
                        f'{os.path.relpath(path, helpers.ROOT)} links to missing {target}')

  def test_python_examples_run_as_written(self):
    quickstart, method = CODE.findall(read('README.md'))[:2]
    namespace = {}
    cwd = os.getcwd()
    os.chdir(self.create_tempdir().full_path)
    try:
      exec(quickstart, namespace)   # pylint: disable=exec-used
      self.assertLess(namespace['avg_gap'](namespace['metrics'], namespace['oracle']), 100.0)
      self.assertTrue(os.path.isdir(os.path.join('runs', 'quickstart', 'models')))
      exec(method, namespace)   # pylint: disable=exec-used
      self.assertIn('descent_ascent', METHODS.names())
      result = namespace['unlearn'](namespace['setting'], 'descent_ascent')
      self.assertGreater(result.steps, 0)
    finally:
      os.chdir(cwd)
      METHODS._entries.pop('descent_ascent', None)


if __name__ == '__main__':
  absltest.main()
