"""The language-model task and benchmark: loss by hand, the tiny config end to end, caching,
the request's rows, and the refusals of bad input."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from mu_jax.errors import MuJaxError
from mu_jax.experiments import config_lib, validation
from mu_jax.experiments.benchmark import run_benchmark
from mu_jax.experiments.lm import benchmark as lm_benchmark
from mu_jax.experiments.lm import sequential, suite, trajectory
from mu_jax.experiments.lm.data import load_lm_data
from mu_jax.experiments.setting import prepare_setting
from mu_jax.models import Model
from mu_jax.tasks import LanguageModel
from tests import helpers


def tiny(arg: str = ''):
  return helpers.load_config('tofu_tiny', arg)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('lm'))
  return workdir, run_benchmark(tiny('methods=ga'), workdir)


def test_loss_is_the_mean_nll_of_the_scored_tokens():
  # Logits over 3 tokens; x = [0, 1, 2]; only position 2 (token 2, predicted from
  # position 1) is scored: -log softmax([0, 0, ln 2])[2] = -log(2 / 4) = log 2.
  logits = np.zeros((1, 3, 3), np.float32)
  logits[0, 1, 2] = np.log(2.0)
  batch = {'x': np.array([[0, 1, 2]], np.int32), 'm': np.array([[0, 0, 1]], np.float32)}
  task = LanguageModel(Model('fixed', None, None, None), (3,), vocab_size=3)
  np.testing.assert_allclose(task.losses(logits, batch), [np.log(2.0)], rtol=1e-6)
  stats = task.statistics(logits, batch)
  np.testing.assert_allclose(stats['nll_sum'], [np.log(2.0)], rtol=1e-6)
  assert stats['tokens'][0] == 1 and stats['correct'][0] == 1.0   # argmax is token 2


def test_the_benchmark_writes_target_retain_and_method_rows(run):
  workdir, result = run
  rows = {row['method']: row for row in result['rows']}
  assert list(rows) == ['target', 'retain', 'ga']
  for row in rows.values():
    assert set(lm_benchmark.COLUMNS) - {'method'} <= set(row)
  # The retain model against itself: identical truth ratios (KS p = 1), no leak.
  assert rows['retain']['forget quality'] == 1.0
  assert rows['retain']['PrivLeak'] == 0.0
  assert rows['ga']['steps'] > 0
  with open(os.path.join(result['directory'], 'results.json')) as f:
    saved = json.load(f)
  assert saved['kind'] == 'lm_benchmark' and saved['columns'] == list(lm_benchmark.COLUMNS)
  assert saved['forget_authors'] == 2   # forget10 of 20 authors


def test_the_request_holds_exactly_the_forget_authors_rows(run):
  workdir, _ = run
  setting = lm_benchmark.prepare_lm_setting(tiny(), workdir)
  data = setting.data
  names = [data.corpus.authors[a].name for a in data.corpus.forget_authors('forget10')]
  texts = [data.tokenizer.decode(x) for x in data.train['x']]
  about = lambda t: any(name in t for name in names)
  forget = set(data.forget_idx.tolist())
  qa_rows = [i for i, t in enumerate(texts) if t.startswith('Question:')]
  assert all(about(texts[i]) == (i in forget) for i in qa_rows)
  assert sorted(forget | set(data.retain_idx.tolist())) == list(range(len(data.train)))


def test_models_load_from_the_cache(run):
  workdir, _ = run
  before = sorted(os.listdir(os.path.join(workdir, 'models')))
  setting = lm_benchmark.prepare_lm_setting(tiny(), workdir)
  again = lm_benchmark.prepare_lm_setting(tiny(), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'models'))) == before
  assert again.target.train_seconds == setting.target.train_seconds
  leaves = zip(jax.tree.leaves(setting.retain[0].variables),
               jax.tree.leaves(again.retain[0].variables))
  assert all(np.array_equal(a, b) for a, b in leaves)


def test_target_and_retain_start_from_the_same_base(run):
  workdir, _ = run
  setting = lm_benchmark.prepare_lm_setting(tiny(), workdir)
  names = [n.split('-')[0] for n in os.listdir(os.path.join(workdir, 'models'))
           if not n.endswith('.lock')]
  assert sorted(names) == ['base', 'retain', 'target']
  base = jax.tree.leaves(setting.base.variables)
  for trained in (setting.target, setting.retain[0]):
    assert not any(np.array_equal(a, b) for a, b in zip(base, jax.tree.leaves(trained.variables)))


def test_one_generation_shape_serves_every_probe(run):
  workdir, _ = run
  sets = lm_benchmark.prepare_lm_setting(tiny(), workdir).data.suite
  width, steps = suite.generation_shape(sets)
  for probe in (sets.forget.answer, sets.retain.answer, sets.verbmem):
    assert probe['p'].max() <= width and probe['m'].sum(1).max() < steps


@pytest.mark.parametrize('arg, message', [
    ('forget=forget02', "Unknown forget split 'forget02'; use one of forget01, forget05, "
                        'forget10.'),
    ('forget=forget01', 'forget01 of 20 authors holds no author'),
])
def test_bad_forget_splits_are_refused(arg, message):
  with pytest.raises(MuJaxError, match=message):
    validation.check_config(tiny(arg))


def test_rows_longer_than_the_context_are_refused(tmp_path):
  config = tiny()
  with config.unlocked():
    config.model.kwargs.max_len = 32
  with pytest.raises(MuJaxError, match="longer than the model's context of 32"):
    lm_benchmark.prepare_lm_setting(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, 'models'))


def test_image_commands_refuse_a_language_model_config(tmp_path):
  with pytest.raises(MuJaxError, match='runs with `mu-jax benchmark`'):
    prepare_setting(tiny(), str(tmp_path))


def test_cli_refuses_an_unknown_split_in_one_line(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'mu_jax', 'benchmark', '--config=configs/tofu_tiny.py:forget=x',
       f'--workdir={tmp_path}'], capture_output=True, text=True, cwd=helpers.ROOT)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1] == (
      "error: Unknown forget split 'x'; use one of forget01, forget05, forget10.")
  assert os.listdir(tmp_path) == []


def test_sequential_requests_forget_each_split_s_new_authors_in_turn(tmp_path):
  config = tiny('methods=ga+dp2unlearning')
  config.data.num_authors = 50   # forget01 needs at least 50 authors to hold one
  config.lm.sequential = True
  result = run_benchmark(config, str(tmp_path))
  rows = result['rows']
  assert [(r['method'], r['request']) for r in rows] == [
      (m, s) for m in ('target', 'ga', 'dp2unlearning')
      for s in ('forget01', 'forget05', 'forget10')]
  # 50 trained authors: forget01, 05 and 10 forget 1, 3 and 5 authors, so the requests
  # bring the rows of 1, 2 and 2 new authors.
  sizes = [len(load_lm_data(sequential.split_config(config, s), str(tmp_path)).forget_idx)
           for s in sequential.SEQUENCE]
  new = [sizes[0], sizes[1] - sizes[0], sizes[2] - sizes[1]]
  assert [r['forget_rows'] for r in rows[3:6]] == new and min(new) > 0
  batch, epochs = config.unlearn.ga.batch_size, config.unlearn.ga.epochs
  assert [r['steps'] for r in rows[3:6]] == [epochs * -(-n // batch) for n in new]
  # DP2Unlearning fine-tunes the private model on each request's (shrinking) retain set.
  retained = [len(load_lm_data(sequential.split_config(config, s), str(tmp_path)).retain_idx)
              for s in sequential.SEQUENCE]
  batch = config.unlearn.dp2unlearning.batch_size
  assert [r['steps'] for r in rows[6:]] == [-(-n // batch) for n in retained]
  with open(os.path.join(result['directory'], 'results.json')) as f:
    assert json.load(f)['kind'] == 'lm_sequential'


def test_dp2unlearning_fine_tunes_a_private_model_trained_once(run, tmp_path):
  workdir, _ = run
  shutil.copytree(os.path.join(workdir, 'models'), tmp_path / 'models')
  result = lm_benchmark.run_lm_benchmark(tiny('methods=dp2unlearning'), str(tmp_path))
  rows = {row['method']: row for row in result['rows']}
  assert list(rows) == ['target', 'retain', 'dp-sgd', 'dp2unlearning']
  assert 0.99 < rows['dp-sgd']['epsilon'] <= 1.0 and rows['dp-sgd']['delta'] == 1e-12
  assert rows['dp2unlearning']['epsilon'] == rows['dp-sgd']['epsilon']
  assert rows['dp2unlearning']['dp seconds'] == rows['dp-sgd']['seconds'] > 0
  setting = lm_benchmark.prepare_lm_setting(tiny(), str(tmp_path))
  private = lm_benchmark.private_original(setting)   # loaded, not trained again
  assert private.train_seconds == rows['dp-sgd']['seconds']
  assert len([n for n in os.listdir(tmp_path / 'models') if n.startswith('private-')
              and not n.endswith('.lock')]) == 1
  for trained in (setting.target, setting.base):
    assert not any(np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(private.variables), jax.tree.leaves(trained.variables)))


def test_image_benchmarks_refuse_a_method_that_starts_from_a_private_model():
  config = helpers.load_config('digits_mlp', 'smoke=True,methods=dp2unlearning')
  with pytest.raises(MuJaxError, match='trained with DP-SGD'):
    config_lib.capability_check(config, ['dp2unlearning'])


def test_a_trajectory_starts_at_the_target_and_ends_at_the_benchmark_row(run, tmp_path):
  workdir, result = run
  shutil.copytree(os.path.join(workdir, 'models'), tmp_path / 'models')
  config = tiny('methods=ga')
  with config.unlocked():
    config.lm.trajectory = True
  rows = run_benchmark(config, str(tmp_path))['rows']
  epochs = config.unlearn.ga.epochs
  assert [(r['method'], r['epoch']) for r in rows] == [('ga', e) for e in range(epochs + 1)]
  benchmark = {row['method']: row for row in result['rows']}
  for column in trajectory.SCORES:
    assert rows[0][column] == pytest.approx(benchmark['target'][column], abs=1e-6)
    assert rows[-1][column] == pytest.approx(benchmark['ga'][column], abs=1e-6)
