"""The comparison with the official PyTorch SSD code (benchmarks/compare_official.py).

Its torch side carries mu_jax's CNN into torch exactly (layouts inverted, same
logits), imports the official file with placeholders for the modules that
ParameterPerturber never uses, and feeds the official loaders' batches; the
batch estimator of mu_jax equals the official `calc_importance` loop (written
out here from its formula: squared mini-batch gradients of the mean
cross-entropy, summed and divided by the number of batches). The results
page in docs/ is the one its JSON makes.
"""
import json
import os
import sys
import tempfile

import jax
import numpy as np
from absl.testing import absltest

torch = None
try:
  import torch
except ImportError:
  pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

from mu_jax import sharding  # noqa: E402
from mu_jax.data import Examples  # noqa: E402
from mu_jax.influence import fisher  # noqa: E402
from mu_jax.methods.base import Context  # noqa: E402
from mu_jax.models import create_model  # noqa: E402
from mu_jax.tasks import create_task  # noqa: E402

RUN = os.path.join(ROOT, 'docs', 'benchmarks', 'compare_official.json')
PAGE = os.path.join(ROOT, 'docs', 'performance.md')


def _cnn(seed=0):
  task = create_task('classification', create_model('cnn', 10), (28, 28, 1), 10)
  return task, task.init(jax.random.PRNGKey(seed))


@absltest.skipIf(torch is None, 'needs the [compare] extra (torch)')
class TorchSideTest(absltest.TestCase):

  def setUp(self):
    import torch_side
    self.side = torch_side
    self.task, self.variables = _cnn()
    rng = np.random.default_rng(0)
    self.x = rng.normal(size=(70, 28, 28, 1)).astype(np.float32)
    self.y = rng.integers(0, 10, 70).astype(np.int32)

  def _torch_model(self):
    net = self.side.TorchCNN()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in
                         self.side.to_torch(self.variables['params']).items()})
    return net.eval()

  def test_layouts_round_trip_exactly(self):
    back = self.side.to_flax(self.side.to_torch(self.variables['params']))
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(self.variables['params'])):
      np.testing.assert_array_equal(a, np.asarray(b))
    self.assertEqual(jax.tree.structure(back), jax.tree.structure(
        jax.tree.map(np.asarray, self.variables['params'])))

  def test_carried_model_computes_mu_jax_logits(self):
    ours = np.asarray(self.task.apply(self.variables, {'x': self.x}, False)[0])
    with torch.no_grad():
      theirs = self._torch_model()(torch.from_numpy(self.x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)

  def test_batch_importance_equals_the_official_loop(self):
    # calc_importance: for each loader batch, (grad of mean CE)^2 summed, / len(loader);
    # 70 rows at batch 32: two full batches and a partial one of 6.
    net = self._torch_model()
    criterion = torch.nn.CrossEntropyLoss()
    total = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    batches = self.side.loader(self.x, self.y, 32)
    for images, _, labels in batches:
      net.zero_grad()
      criterion(net(images), labels).backward()
      for n, p in net.named_parameters():
        total[n] += p.grad.pow(2)
    official = self.side.to_flax({n: (t / len(batches)).numpy() for n, t in total.items()})
    mesh = sharding.make_mesh('data:1')
    ctx = Context(self.task, Examples(x=self.x, y=self.y), Examples(x=self.x[:0], y=self.y[:0]),
                  mesh)
    ours = fisher.importance('batch', self.task, self.variables, ctx, 'forget', 32, shuffle=False)
    for a, b in zip(jax.tree.leaves(jax.device_get(ours)), jax.tree.leaves(official)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-12)

  def test_official_file_imports_with_placeholders_for_unused_modules(self):
    with tempfile.TemporaryDirectory() as checkout:
      os.makedirs(os.path.join(checkout, 'src'))
      with open(os.path.join(checkout, 'src', 'ssd.py'), 'w', encoding='utf-8') as f:
        f.write('import wandb\nfrom torchvision import datasets, models, transforms\n'
                'import seaborn as sns\n\nclass ParameterPerturber:\n  pass\n')
      before = dict(sys.modules)
      try:
        module, stubbed = self.side.import_official(checkout)
        self.assertTrue(hasattr(module, 'ParameterPerturber'))
        self.assertContainsSubset(set(stubbed), set(self.side.UNUSED_BY_PERTURBER))
      finally:
        for name in set(sys.modules) - set(before):
          del sys.modules[name]

  def test_a_folder_that_is_no_checkout_is_named(self):
    with tempfile.TemporaryDirectory() as elsewhere:
      with self.assertRaisesRegex(SystemExit, 'not a checkout of the official SSD'):
        self.side.import_official(elsewhere)


class PageTest(absltest.TestCase):

  def test_docs_page_is_the_one_its_run_makes(self):
    import compare_official
    with open(RUN, encoding='utf-8') as f:
      run = json.load(f)
    with open(PAGE, encoding='utf-8') as f:
      self.assertEqual(f.read(), compare_official.page(run))


if __name__ == '__main__':
  absltest.main()
