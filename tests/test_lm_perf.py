"""The LM speed comparison with Hugging Face transformers (benchmarks/lm_perf.py).

Its torch side carries mu_jax's transformer into a `LlamaForCausalLM` exactly
(same logits: the RoPE layouts agree), and both sides' steps compute the same
losses, NPO's included; the results page is the one its JSON makes.
"""
import json
import os
import sys
import tempfile
import types

import jax
import numpy as np
from absl.testing import absltest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import lm_perf  # noqa: E402

RUN = os.path.join(ROOT, 'docs', 'benchmarks', 'lm_perf.json')
PAGE = os.path.join(ROOT, 'docs', 'lm_performance.md')
TINY = dict(d_model=32, num_layers=2, num_heads=2, d_ff=64, vocab=64, context=16, batch=4,
            seed=0, learning_rate=1e-3, weight_decay=0.01, rounds=2, pause=0.0, steps=3,
            threads=1, matmul=64, devices=8, sharded_mesh='data:4,model:2')


def _has(module: str) -> bool:
  try:
    __import__(module)
  except ImportError:
    return False
  return True


@absltest.skipUnless(_has('torch') and _has('transformers'), 'needs torch and transformers')
class HfSideTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    import hf_side
    import torch
    cls.side, cls.torch = hf_side, torch
    with tempfile.TemporaryDirectory() as directory:
      data_path = lm_perf.prepare(lm_perf.setting_of(types.SimpleNamespace(**TINY)), directory)
      cls.ours = lm_perf.JaxWorker(data_path, 'data:1')
      cls.theirs = hf_side.Worker(data_path, threads=1)

  def _model(self, params):
    from mu_jax.models import transformer
    cfg = transformer.make_config(TINY['vocab'], 'tiny', max_len=TINY['context'])
    return self.side.to_hf({'params': params},
                           self.side.LlamaForCausalLM(self.side.llama_config(cfg))).eval()

  def test_carried_model_computes_mu_jax_logits(self):
    # weights far from their init scale, so attention (and so RoPE) matters
    params = jax.tree.map(lambda a: a * 5, self.ours.params)
    x = self.ours.batch['x']
    ours = np.asarray(self.ours.task.apply({'params': params}, {'x': x}, False)[0])
    with self.torch.no_grad():
      theirs = self._model(params)(input_ids=self.torch.from_numpy(x.astype(np.int64))).logits
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-4, atol=1e-4)

  def test_npo_losses_agree(self):
    ref = self.ours.params
    params = jax.tree.map(lambda a: a * 1.5, ref)
    batch = {k: jax.numpy.asarray(v) for k, v in self.ours.batch.items()}
    ours = float(lm_perf.npo_objective(self.ours.task)(params, batch, ref))
    inputs = self.side.inputs_of(self.ours.batch['x'], self.ours.batch['m'])
    theirs = self.side.npo_loss(self._model(params), self._model(ref), inputs).item()
    self.assertNotAlmostEqual(ours, 2 / lm_perf.NPO_BETA * np.log(2), places=2)
    self.assertAlmostEqual(ours, theirs, places=4)

  def test_steps_agree(self):
    for kind in ('train', 'npo', 'evaluate'):   # ascent is train's loss negated
      with self.subTest(kind):
        np.testing.assert_allclose(self.theirs.losses(kind, 2), self.ours.losses(kind, 2),
                                   rtol=1e-5, atol=1e-5)


class StandInsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.directory = tempfile.TemporaryDirectory()
    cls.data_path = lm_perf.prepare(lm_perf.setting_of(types.SimpleNamespace(**TINY)),
                                    cls.directory.name)

  @classmethod
  def tearDownClass(cls):
    cls.directory.cleanup()
    super().tearDownClass()

  def test_without_attention_each_position_sees_only_its_token(self):
    worker = lm_perf.JaxWorker(self.data_path, 'data:1')
    x = worker.batch['x'][:2].copy()
    changed = x.copy()
    changed[:, 0] = (changed[:, 0] + 1) % TINY['vocab']
    logits = lambda rows: np.asarray(worker.task.apply({'params': worker.params},
                                                       {'x': rows}, False)[0])
    self.assertGreater(np.abs(logits(changed)[:, 1:] - logits(x)[:, 1:]).max(), 1e-6)
    with lm_perf.stand_ins():
      np.testing.assert_array_equal(logits(changed)[:, 1:], logits(x)[:, 1:])

  def test_loss_under_stand_ins_is_the_mean_logit_and_leaves_the_step_intact(self):
    before = lm_perf.JaxWorker(self.data_path, 'data:1').losses('train', 1)[0]
    with lm_perf.stand_ins():
      worker = lm_perf.JaxWorker(self.data_path, 'data:1')
      logits = np.asarray(worker.task.apply({'params': worker.params}, worker.batch, False)[0])
      got = worker.losses('train', 1)[0]
    m = worker.batch['m']
    terms = logits.mean(-1)   # the stand-in's term at each position: its mean logit
    self.assertAlmostEqual(got, np.mean(np.sum(terms * m, 1) / np.sum(m, 1)), places=5)
    self.assertAlmostEqual(lm_perf.JaxWorker(self.data_path, 'data:1').losses('train', 1)[0],
                           before, places=6)


class PageTest(absltest.TestCase):

  def _run(self) -> dict:
    from mu_jax.experiments import runs
    setting = lm_perf.setting_of(types.SimpleNamespace(**TINY))
    call = lambda seconds: {'seconds': seconds, 'load': 1.0}
    calls = {'torch_matmul': [{'gflops': 10.0, 'load': 1.0}] * 2,
             'jax_matmul': [{'gflops': 8.0, 'load': 1.0}] * 2,
             'sharded_train': [call(0.5)] * 2}
    for kind in lm_perf.KINDS:
      calls[f'torch_{kind}'] = [call(2.0), call(3.0)]
      calls[f'mu_jax_{kind}'] = [call(1e-5), call(1e-5)] if kind == 'train' else [
          call(2.0), call(2.0)]
    for kind in lm_perf.BOUND_KINDS:
      calls[f'bound_{kind}'] = [call(1.0), call(3.0)]
    agreed = {'logits_max_abs_diff': 1e-7,
              **{kind: {'mu_jax': [1.0, 2.0], 'torch': [1.0, 2.0], 'max_abs_diff': 0.0}
                 for kind in lm_perf.KINDS[:3]},
              'evaluate': {'mu_jax': [[3.0, 4.0]], 'torch': [[3.0, 4.0]], 'max_abs_diff': 0.0}}
    return {'provenance': runs.provenance(0.0),
            'torch': {'torch': '0', 'transformers': '0', 'threads': 1}, 'setting': setting,
            'agreement': agreed, 'calls': calls, 'summary': lm_perf.summary(setting, calls),
            'json_name': 'lm_perf.json'}

  def test_page_states_each_goal_and_whether_it_is_met(self):
    run = self._run()
    rows = {r['kind']: r for r in run['summary']['rows']}
    self.assertAlmostEqual(rows['npo']['ratio_median'], 1.25)
    self.assertEqual([lm_perf.goal_met(rows[k]) for k in lm_perf.KINDS],
                     [True, False, False, False])
    text = lm_perf.page(run)
    for kind in lm_perf.KINDS:
      self.assertIn(lm_perf.goal_text(kind), text)
    self.assertIn('| training step |', text)
    self.assertIn('each call after 0 s of idle machine', text)

  def test_bound_mfu_counts_the_whole_models_flops_at_the_median_call(self):
    run = self._run()
    setting = run['setting']
    flops = lm_perf.step_flops('ascent', setting) * setting['steps']
    bounds = {b['kind']: b for b in run['summary']['bounds']}
    self.assertEqual(sorted(bounds), sorted(lm_perf.BOUND_KINDS))
    self.assertAlmostEqual(bounds['ascent']['mfu'], flops / 2.0 / 8e9)   # median 2 s, peak 8
    self.assertAlmostEqual(bounds['ascent']['tokens_per_s'],
                           setting['batch'] * setting['context'] * setting['steps'] / 2.0)
    self.assertIn(f'{bounds["ascent"]["mfu"]:.1%} |', lm_perf.page(run))

  def test_from_json_writes_the_page_of_the_run(self):
    run = self._run()
    with tempfile.TemporaryDirectory() as directory:
      json_path, page_path = (os.path.join(directory, n) for n in ('run.json', 'page.md'))
      with open(json_path, 'w', encoding='utf-8') as f:
        json.dump(run, f)
      lm_perf.remake(json_path, page_path)
      with open(page_path, encoding='utf-8') as f:
        self.assertEqual(f.read(), lm_perf.page(run))

  @absltest.skipUnless(os.path.exists(RUN), 'no committed run yet')
  def test_docs_page_is_the_one_its_run_makes(self):
    with open(RUN, encoding='utf-8') as f:
      run = json.load(f)
    with open(PAGE, encoding='utf-8') as f:
      self.assertEqual(f.read(), lm_perf.page(run))


if __name__ == '__main__':
  absltest.main()
