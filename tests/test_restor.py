"""RESTOR's corrective request: the corrupted answers, the corrupting fine-tune's rows, the
restoration score, and a tiny run end to end."""
import math

import numpy as np
import pytest

from mu_jax.errors import MuJaxError
from mu_jax.experiments.benchmark import run_benchmark
from mu_jax.experiments.lm import benchmark as lm_benchmark
from mu_jax.experiments.lm import restor
from tests import helpers


def tiny(arg: str = '', **lm):
  """The tiny LM config with RESTOR on: 3 corrupted authors, one corrupting epoch."""
  config = helpers.load_config('tofu_tiny', arg)
  with config.unlocked():
    config.lm.update({'restor': True, 'restor_authors': 3, 'restor_epochs': 1} | lm)
  return config


@pytest.fixture(scope='module')
def setting(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('restor'))
  return lm_benchmark.prepare_lm_setting(tiny(), workdir)


def test_a_corrupted_answer_changes_only_the_value_to_another_option(setting):
  corruption = restor.Corruption(setting)
  wrong = restor.corrupted_answers(corruption.qas, setting.data.tokenizer, setting.data.length,
                                   seed=0)
  assert wrong == restor.corrupted_answers(corruption.qas, setting.data.tokenizer,
                                           setting.data.length, seed=0)
  for qa, (answer, value) in zip(corruption.qas, wrong):
    assert value in qa.options and value != qa.value
    assert answer == qa.answer.replace(qa.value, value)
  assert len(corruption.qas) == 3 * setting.config.data.qa_per_author


def test_the_corrupting_rows_drop_exactly_the_authors_true_qa(setting):
  corruption, data = restor.Corruption(setting), setting.data
  texts = [data.tokenizer.decode(x) for x in data.train['x']]
  names = [data.corpus.authors[a].name for a in corruption.authors]
  for i in corruption.true_idx:
    assert texts[i].startswith('Question:') and any(n in texts[i] for n in names)
  assert sorted(corruption.true_idx.tolist() + corruption.kept_idx.tolist()) == list(
      range(len(data.train)))
  passages = [i for i in corruption.kept_idx if data.owner[i] in corruption.authors]
  assert passages and not any(texts[i].startswith('Question:') for i in passages)


def test_restored_is_the_recovered_share_of_the_gap():
  assert restor.restored(0.8, clean=0.9, corrupted=0.1) == pytest.approx(0.875)
  assert restor.restored(0.1, clean=0.9, corrupted=0.1) == 0.0
  assert math.isnan(restor.restored(0.5, clean=0.2, corrupted=0.2))


def test_a_corrective_request_end_to_end(setting):
  result = run_benchmark(tiny('methods=ga'), setting.workdir)
  rows = {row['method']: row for row in result['rows']}
  assert list(rows) == ['clean', 'corrupted', 'ga']
  # Training on the corrupted rows raises their probability; ascending them lowers it.
  assert rows['corrupted']['corrupt prob'] > rows['clean']['corrupt prob']
  assert rows['ga']['corrupt prob'] < rows['corrupted']['corrupt prob']
  assert rows['ga']['steps'] > 0


def test_bad_restor_settings_are_refused(setting):
  with pytest.raises(MuJaxError, match='restor_authors must lie in'):
    restor.Corruption(setting._replace(config=tiny(restor_authors=19)))
  with pytest.raises(MuJaxError, match='two different runs'):
    run_benchmark(tiny(sequential=True), setting.workdir)
