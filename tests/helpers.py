"""Tiny data and configs shared by the tests."""
import os

import jax
import ml_collections
import numpy as np

from mu_jax.experiments import config_lib
from mu_jax.data import Examples
from mu_jax.models import Model
from mu_jax.tasks import Classification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg: str = 'smoke=True'):
  """configs/<name>.py:get_config(arg)."""
  return config_lib.load_config_file(os.path.join(ROOT, 'configs', f'{name}.py'), arg)


def blobs(n: int = 96, num_classes: int = 3, dim: int = 6, seed: int = 0) -> Examples:
  """Well-separated Gaussian blobs as (n, dim, 1, 1) images."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % num_classes
  centers = rng.normal(0, 3, (num_classes, dim))
  x = centers[y] + rng.normal(0, 0.5, (n, dim))
  return Examples(x=x.reshape(n, dim, 1, 1).astype(np.float32), y=y.astype(np.int32))


def classifier(model, data, num_classes: int | None = None, init=None) -> Classification:
  """The classification task of `model` (a Model, or a bare apply function with
  an optional `init(rng, sample_x)`) on `data`'s inputs; `num_classes` defaults
  to the model's head width (else 3)."""
  if not isinstance(model, Model):
    model = Model('apply', init, model, None)
  if num_classes is None:
    num_classes = 3
    if model.init is not None and init is None:
      shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), data['x'][:1])
      num_classes = shapes['params']['head']['bias'].shape[0]
  return Classification(model, tuple(data['x'].shape[1:]), num_classes)


def accuracy(logits, labels) -> float:
  """Top-1 accuracy in percent (NaN for an empty set)."""
  if len(labels) == 0:
    return float('nan')
  return float(100.0 * np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def recipe(**overrides) -> ml_collections.ConfigDict:
  """A training recipe (SGD with momentum, cosine schedule) with `overrides`."""
  cfg = dict(optimizer='sgd', learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
             schedule='cosine', batch_size=32, epochs=3, checkpoint_every=1)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)
