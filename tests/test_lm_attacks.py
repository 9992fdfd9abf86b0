"""The relearning attack's split and steps, and the form probes, on tiny cases."""
import jax
import numpy as np

from mu_jax import sharding
from mu_jax.data import Examples
from mu_jax.data.text import generate_corpus
from mu_jax.data.text.tokenizer import train_tokenizer
from mu_jax.experiments.lm import forms, relearn
from mu_jax.experiments.lm.data import QASet
from mu_jax.models import create_model
from mu_jax.tasks import create_task


def qa_set(n: int, k: int) -> QASet:
  ids = lambda rows: Examples(x=np.arange(rows)[:, None].repeat(4, 1).astype(np.int32),
                              m=np.ones((rows, 4), np.float32))
  return QASet(ids(n), ids(n), ids(n * k), tuple(f'answer {i}' for i in range(n)))


def test_relearning_takes_every_fourth_question_and_probes_the_rest_with_their_forms():
  split = relearn.split_forget(qa_set(9, 3))
  assert split.rows['x'][:, 0].tolist() == [0, 4, 8]
  assert split.probe_idx.tolist() == [1, 2, 3, 5, 6, 7]
  assert split.probe.answers == tuple(f'answer {i}' for i in (1, 2, 3, 5, 6, 7))
  # The perturbed answers stay question-major: 3 per probe question.
  assert split.probe.perturbed['x'][:6, 0].tolist() == [3, 4, 5, 6, 7, 8]


def test_relearning_steps_lower_the_loss_of_the_relearned_rows():
  task = create_task('language_model', create_model('transformer', 16, size='tiny', max_len=8),
                     (8,), 16)
  variables = task.init(jax.random.PRNGKey(0))
  rows = Examples(x=np.tile(np.arange(1, 9, dtype=np.int32), (4, 1)),
                  m=np.pad(np.ones((4, 7), np.float32), ((0, 0), (1, 0))))
  mesh = sharding.make_mesh('data:1')
  loss = lambda v: float(task.mean_loss(task.apply(v, rows.arrays(), False)[0],
                                        {**rows.arrays(), 'w': np.ones(4, np.float32)}))
  same = relearn.relearn(task, variables, rows, steps=0, batch_size=2, learning_rate=1e-2,
                         seed=0, mesh=mesh)
  assert loss(same) == loss(variables)
  moved = relearn.relearn(task, variables, rows, steps=5, batch_size=2, learning_rate=1e-2,
                          seed=0, mesh=mesh)
  assert loss(moved) < loss(variables) - 0.5


def test_choice_accuracy_by_hand():
  # Two facts of three candidates: fact 0's true candidate (1) is likeliest; fact 1's is not.
  nll = np.array([2.0, 1.0, 3.0, 0.5, 2.0, 1.0])
  assert forms.choice_accuracy(nll, np.array([1, 2])) == 0.5


def test_form_probes_put_each_fact_in_every_form(tmp_path):
  corpus = generate_corpus(seed=0, num_authors=3, qa_per_author=4, holdout_authors=1)
  tokenizer = train_tokenizer(corpus.texts(), str(tmp_path / 'tok'), vocab_size=400)
  qas = corpus.author_qas([0])
  probes = forms.form_probes(tokenizer, qas)
  decode = lambda e, i: tokenizer.decode(e['x'][i][e['m'][i] > 0])
  for n, q in enumerate(qas):
    truth = probes.correct['qa'][n]
    # The trained form's true candidate is the answer sentence itself.
    assert decode(probes.choices['qa'], 4 * n + truth).strip() == q.qa.answer
    assert decode(probes.choices['blank'], 4 * n + truth).strip() == q.qa.value
    assert decode(probes.choices['yes_no'], 2 * n + probes.correct['yes_no'][n]).strip() == \
        q.forms.yes_no_answer
  assert len(probes.choices['mc']) == 4 * len(qas) and len(probes.two_hop) == len(qas)
