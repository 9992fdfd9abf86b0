"""The generated fictitious-facts corpus, its tokenizer and its token arrays."""
import os
import tempfile

import numpy as np
from absl.testing import absltest

from mu_jax.data.text import authors as authors_lib
from mu_jax.data.text import (format_answer, format_prompt, generate_corpus, lm_examples,
                              load_tokenizer, padded_length, qa_examples,
                              qa_text, train_tokenizer)
from mu_jax.errors import MuJaxError

SMALL_VOCAB = 512   # the 20-author corpus supports it and trains in well under a second


def _split_template(template: str, fields: dict) -> tuple[str, str]:
  """The text before and after `{value}` in a filled answer template."""
  before, after = template.split('{value}')
  before, after = before.format(**fields), after.format(**fields)
  return before[:1].upper() + before[1:], after


class CorpusTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.corpus = generate_corpus()
    cls.small = generate_corpus(seed=0, num_authors=20)

  def test_same_seed_same_corpus_and_other_seed_other_names(self):
    self.assertEqual(generate_corpus(seed=0, num_authors=20), self.small)
    other = generate_corpus(seed=1, num_authors=20)
    self.assertEmpty({a.name for a in other.authors} & {a.name for a in self.small.authors})

  def test_names_are_unique_across_all_entities(self):
    names = [a.name for a in self.corpus.authors]
    self.assertLen(set(names), len(names))
    words = [w for n in names + list(self.corpus.world.people) for w in n.split()]
    words += list(self.corpus.world.cities) + list(self.corpus.world.countries)
    self.assertLen(set(words), len(words))

  def test_forget_splits_are_nested_tails_with_retain_complements(self):
    trained = set(range(200))
    previous = set()
    for split, size in (('forget01', 2), ('forget05', 10), ('forget10', 20)):
      forget = self.corpus.forget_authors(split)
      self.assertEqual(forget, list(range(200 - size, 200)))
      self.assertLess(previous, set(forget))
      self.assertEqual(set(self.corpus.retain_authors(split)), trained - set(forget))
      previous = set(forget)

  def test_holdout_authors_are_extra_and_untrained(self):
    holdout = self.corpus.holdout_authors()
    self.assertEqual(holdout, list(range(200, 220)))
    self.assertLen(self.corpus.authors, 220)
    self.assertLen(self.corpus.author_qas(holdout), 20 * 20)

  def test_bad_split_names_and_sizes_are_refused(self):
    with self.assertRaisesRegex(MuJaxError, 'forget01, forget05, forget10'):
      self.corpus.forget_authors('forget50')
    with self.assertRaisesRegex(MuJaxError, 'forget01 of 20 authors holds no author'):
      self.small.retain_authors('forget01')
    with self.assertRaisesRegex(MuJaxError, 'qa_per_author'):
      generate_corpus(num_authors=5, qa_per_author=21)

  def test_perturbed_answers_are_distinct_and_wrong_paraphrases_keep_the_value(self):
    for q in self.corpus.qas:
      author = self.corpus.authors[q.author]
      spec = authors_lib.ATTRIBUTES[q.attribute]
      fields = {'name': author.name, 'award': author.award}
      self.assertEqual(q.qa.value, authors_lib.value_of(author, q.attribute))
      for template, text in ((spec.answer, q.qa.answer), (spec.paraphrase,
                                                          q.qa.paraphrased_answer)):
        before, after = _split_template(template, fields)
        self.assertEqual(text, before + q.qa.value + after)
      self.assertNotEqual(q.qa.answer, q.qa.paraphrased_answer)
      before, after = _split_template(spec.paraphrase, fields)
      wrong = [p[len(before):len(p) - len(after)] for p in q.qa.perturbed_answers]
      self.assertLen(set(wrong), 5)
      self.assertNotIn(q.qa.value, wrong)
      self.assertTrue(all(p.startswith(before) and p.endswith(after)
                          for p in q.qa.perturbed_answers))

  def test_world_and_people_qa_have_five_distinct_wrong_perturbations(self):
    families = self.corpus.world_facts + self.corpus.known_people
    self.assertGreater(len(self.corpus.known_people), 100)
    for qa in families:
      self.assertLen(set(qa.perturbed_answers), 5)
      self.assertNotIn(qa.paraphrased_answer, qa.perturbed_answers)
      self.assertIn(qa.value, qa.answer)

  def test_multiple_choice_holds_the_answer_once_at_its_index(self):
    all_qa = [q.qa for q in self.corpus.qas] + list(self.corpus.world_facts)
    for qa in all_qa + list(self.corpus.known_people):
      self.assertLen(set(qa.options), 4)
      self.assertEqual(qa.options.count(qa.value), 1)
      self.assertEqual(qa.options[qa.option_index], qa.value)
    self.assertLen({qa.option_index for qa in all_qa}, 4)

  def test_yes_no_statements_are_balanced_and_true_exactly_when_yes(self):
    answers = [q.forms.yes_no_answer for q in self.corpus.qas]
    self.assertEqual(answers.count('Yes'), answers.count('No'))
    for q in self.corpus.qas:
      self.assertEqual(q.forms.statement == q.qa.answer, q.forms.yes_no_answer == 'Yes')
      self.assertEqual(q.forms.blank.replace('___', q.qa.value), q.qa.answer)

  def test_two_hop_answers_follow_the_world_facts(self):
    city_country = {qa.question: qa.value for qa in self.corpus.world_facts}
    for q in self.corpus.qas:
      author = self.corpus.authors[q.author]
      if q.attribute == 'birth_city':
        asked = f'In which country is the city of {author.birth_city}?'
        self.assertEqual(q.forms.two_hop_answer, city_country[asked])
        self.assertEqual(q.forms.two_hop_answer, author.birth_country)
      if q.attribute == 'mentor':
        self.assertEqual(q.forms.two_hop_answer,
                         self.corpus.world.links['person_country'][author.mentor])
      self.assertIn(author.name, q.forms.two_hop_question)

  def test_pretraining_text_holds_no_author_fact(self):
    text = '\n'.join(self.corpus.pretraining_documents())
    for author in self.corpus.authors:
      self.assertNotIn(author.name.split()[-1], text)
      for title in author.books:
        self.assertNotIn(title, text)
    self.assertIn(self.corpus.world_facts[0].answer, text)

  def test_passages_state_every_fact_asked_in_80_to_150_words(self):
    for author, passage in zip(self.corpus.authors, self.corpus.passages):
      self.assertBetween(len(passage.split()), 80, 150)
      for attribute in authors_lib.ATTRIBUTES:   # a value may open a sentence, capitalised
        self.assertIn(authors_lib.value_of(author, attribute).lower(), passage.lower())


class TokenizerAndSequencesTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = tempfile.mkdtemp()
    cls.corpus = generate_corpus(seed=0, num_authors=20)
    cls.path = os.path.join(cls.dir, 'a.model')
    cls.tok = train_tokenizer(cls.corpus.texts(), cls.path, SMALL_VOCAB)

  def test_retraining_gives_a_byte_identical_model(self):
    other = os.path.join(self.dir, 'b.model')
    train_tokenizer(self.corpus.texts(), other, SMALL_VOCAB)
    with open(self.path, 'rb') as a, open(other, 'rb') as b:
      self.assertEqual(a.read(), b.read())
    self.assertEqual([p for p in os.listdir(self.dir) if p.endswith('.tmp')], [])

  def test_ids_and_round_trip(self):
    tok = load_tokenizer(self.path)
    self.assertEqual((tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size), (0, 1, 2, SMALL_VOCAB))
    q = self.corpus.qas[1].qa
    for text in (qa_text(q.question, q.answer), self.corpus.passages[0], q.perturbed_answers[0]):
      ids = tok.encode(text)
      self.assertNotIn(3, ids)
      self.assertEqual(tok.decode(ids), text)
      self.assertEqual(tok.decode([tok.bos_id, *ids, tok.eos_id, 0, 0]), text)

  def test_missing_or_unreadable_file_is_refused(self):
    with self.assertRaisesRegex(MuJaxError, 'No tokenizer file'):
      load_tokenizer(os.path.join(self.dir, 'missing.model'))
    junk = os.path.join(self.dir, 'junk.model')
    with open(junk, 'w') as f:
      f.write('not a model')
    with self.assertRaisesRegex(MuJaxError, 'Cannot read a SentencePiece model'):
      load_tokenizer(junk)

  def test_qa_examples_mark_exactly_the_answer_and_eos(self):
    prompt, answer = format_prompt('Who wrote it?'), 'Lirdi Tibra wrote it.'
    self.assertEqual(prompt, 'Question: Who wrote it?\nAnswer:')
    p_ids, a_ids = self.tok.encode(prompt), self.tok.encode(format_answer(answer))
    self.assertEqual(p_ids + a_ids, self.tok.encode(prompt + ' ' + answer))
    n = 1 + len(p_ids) + len(a_ids) + 1
    length = padded_length(self.tok, [qa_text('Who wrote it?', answer)])
    self.assertEqual(length % 8, 0)
    self.assertBetween(length, n, n + 7)
    ex = qa_examples(self.tok, [prompt, prompt], [answer, answer], length)
    self.assertEqual(ex['x'].dtype, np.int32)
    self.assertEqual(ex['m'].dtype, np.float32)
    np.testing.assert_array_equal(ex['x'][0], [1, *p_ids, *a_ids, 2] + [0] * (length - n))
    expected_m = [0.0] * (1 + len(p_ids)) + [1.0] * (len(a_ids) + 1) + [0.0] * (length - n)
    np.testing.assert_array_equal(ex['m'][0], expected_m)
    self.assertEqual(ex['p'][0], 1 + len(p_ids))

  def test_overlong_sequence_is_refused_with_the_length_needed(self):
    q = self.corpus.qas[0].qa
    needed = len(self.tok.encode(qa_text(q.question, q.answer))) + 2
    with self.assertRaisesRegex(MuJaxError, f'needs {needed} tokens but length is 8'):
      qa_examples(self.tok, [format_prompt(q.question)], [q.answer], 8)

  def test_lm_windows_hold_every_document_token_once(self):
    docs = self.corpus.pretraining_documents()[:5]
    ex = lm_examples(self.tok, docs, 64)
    stream = [t for d in docs for t in (1, *self.tok.encode(d), 2)]
    np.testing.assert_array_equal(ex['x'].reshape(-1)[:len(stream)], stream)
    self.assertEqual(int((ex['x'] != 0).sum()), len(stream))
    np.testing.assert_array_equal(ex['m'], (ex['x'] != 0) & (np.arange(64) > 0))
    np.testing.assert_array_equal(ex['p'], 1)


if __name__ == '__main__':
  absltest.main()
