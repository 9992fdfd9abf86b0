"""The language-model benchmark at test size: 20 authors, a 2-layer transformer (seconds).

  mu-jax benchmark --config=mu_jax.configs.tofu_tiny
"""
from mu_jax.experiments import config_lib
from mu_jax.experiments.lm.config import lm_config, set_lm_unlearning


def get_config(arg=None):
  c = lm_config()
  c.forget = 'forget10'            # 2 of 20 authors (forget01 would round to none)
  c.data.num_authors = 20
  c.data.qa_per_author = 4
  c.data.holdout_authors = 10
  c.data.vocab_size = 512
  c.model.kwargs.size = 'tiny'
  c.model.kwargs.max_len = 96
  c.pretrain.epochs = 1
  c.train.epochs = 2
  c.train.batch_size = 16
  c.train.group_by_length = True   # as tofu_lm
  c.pretrain.batch_size = 16
  c.lm.retain_eval_size = 16
  c.lm.utility_eval_size = 8
  c.eval.batch_size = 32
  set_lm_unlearning(c)
  c.unlearn.dp2unlearning.epochs = 1
  return config_lib.finish(c, arg)
