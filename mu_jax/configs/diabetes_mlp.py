"""Regression unlearning: an MLP regressor on scikit-learn's bundled diabetes data.

  mu-jax benchmark --config=mu_jax.configs.diabetes_mlp
  mu-jax benchmark --config=mu_jax.configs.diabetes_mlp:source=friedman

Targets are standardised on the training split, so MSE and MAE are in units
of the training targets' standard deviation. Forget sets are random
(`random:<fraction>`) or explicit (`file:<path>`): there are no classes.
"""
from mu_jax.experiments import config_lib


def _smoke(c):
  c.train.epochs = 5
  c.methods = 'ft,ga,acu'
  c.unlearn.ft.epochs = 1
  c.unlearn.ga.epochs = 1


def get_config(arg=None):
  c = config_lib.base_config()
  c.task = 'regression'
  c.forget = 'random:0.1'
  c.data.source = 'diabetes'
  c.data.val_fraction = 0.1
  c.data.test_fraction = 0.2
  c.model.name = 'mlp'
  c.model.kwargs.hidden = (64, 64)
  c.train.optimizer = 'adam'       # Kingma & Ba defaults, lr 1e-3
  c.train.learning_rate = 1e-3
  c.train.batch_size = 32          # ~300 training rows: ~10 steps per epoch
  c.train.epochs = 100
  c.train.checkpoint_every = 50
  c.methods = 'ft,ga,ssd,iau,acu,l1_sparse,blindspot,smooth'
  # The reference recipes' batch of 256 exceeds this training set; 32 gives
  # several steps per epoch, as the digits config shrinks it to 64.
  c.unlearn.ft = dict(batch_size=32)
  c.unlearn.ga = dict(batch_size=32)
  c.unlearn.l1_sparse = dict(batch_size=32)
  c.unlearn.ssd = dict(batch_size=32)
  c.unlearn.npo = dict(batch_size=32)
  c.unlearn.blindspot = dict(batch_size=32)
  c.unlearn.smooth = dict(overrides=dict(batch_size=32))
  return config_lib.finish(c, arg, smoke=_smoke)
