"""Text data: a generated TOFU/MUSE-style corpus, its tokenizer, and token arrays."""
from mu_jax.data.text.authors import Author, AuthorQA, Forms
from mu_jax.data.text.corpus import FORGET_SPLITS, SOURCE, Corpus, forget_size, generate_corpus
from mu_jax.data.text.qa import QA
from mu_jax.data.text.refusals import REFUSALS, refusal_answers
from mu_jax.data.text.sequences import (format_answer, format_prompt, lm_examples, padded_length,
                                        qa_examples, qa_text)
from mu_jax.data.text.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
