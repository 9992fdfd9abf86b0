"""CIFAR-10 with the CIFAR-stem ResNet-18: the GPU/TPU-scale configuration.

Needs CIFAR-10 prepared as TFDS ArrayRecord under data_dir (no download at run time):
  mu-jax benchmark \
      --config=mu_jax.configs.cifar10_resnet18:data_dir=/path/to/tensorflow_datasets
"""
from mu_jax.experiments import config_lib


def _smoke(c):
  c.model.kwargs.width = 8
  c.train.epochs = 1
  c.train.batch_size = 16
  c.data.val_fraction = 0.0
  c.eval.batch_size = 32
  for name in ('ft', 'ga', 'rl'):
    c.unlearn[name].epochs = 1
    c.unlearn[name].batch_size = 16


def get_config(arg=None):
  c = config_lib.base_config()
  c.data.source = 'tfds:cifar10'
  c.data.val_fraction = 0.0            # the SalUn setting trains on all 50k
  c.model.name = 'resnet18'
  c.model.kwargs.width = 64
  c.train.optimizer = 'sgd'            # SalUn README: main_train.py --lr 0.1 --epochs 182
  c.train.learning_rate = 0.1
  c.train.momentum = 0.9               # Unlearn-Sparse arg_parser defaults
  c.train.weight_decay = 5e-4
  c.train.schedule = 'cosine'
  c.train.batch_size = 256
  c.train.epochs = 182
  c.train.checkpoint_every = 5
  c.eval.mia_max_per_side = 5000       # bounds the SVC's quadratic cost
  c.unlearn.ft = dict()
  c.unlearn.ga = dict()
  c.unlearn.rl = dict()
  return config_lib.finish(c, arg, smoke=_smoke)
