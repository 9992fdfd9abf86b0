"""The default language-model benchmark: TOFU-style fictitious authors generated offline,
a small decoder-only transformer pre-trained and fine-tuned here (2 CPU cores: minutes).

  mu-jax benchmark --config=mu_jax.configs.tofu_lm                    # forget05
  mu-jax benchmark --config=mu_jax.configs.tofu_lm:forget=forget10

Pre-training, the target and the retain model are cached under the workdir, so
every forget split after the first trains only its retain model.
"""
from mu_jax.experiments import config_lib
from mu_jax.experiments.lm.config import lm_config, set_lm_unlearning


def _smoke(c):
  c.data.num_authors = 20
  c.data.holdout_authors = 10
  c.model.kwargs.size = 'tiny'
  c.pretrain.epochs = 1
  c.train.epochs = 2
  c.lm.retain_eval_size = 40
  c.lm.utility_eval_size = 20
  c.unlearn.dp2unlearning.epochs = 1


def get_config(arg=None):
  c = lm_config()
  c.model.kwargs.size = 'small'
  c.pretrain.epochs = 4
  c.pretrain.learning_rate = 1e-3
  c.train.epochs = 10
  c.train.learning_rate = 1e-3
  # The HF Trainer's group_by_length (TOFU leaves it off): QA rows of 30-56 tokens in
  # batches of similar lengths, each cut to its longest, train on a quarter fewer padded
  # positions with the same per-example losses; only the batches' make-up differs.
  c.train.group_by_length = True
  set_lm_unlearning(c)
  return config_lib.finish(c, arg, smoke=_smoke)
