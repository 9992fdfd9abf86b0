"""Predictions and accuracy-style metrics: FA/UA, RA, TA."""
from typing import Callable

import jax
import numpy as np

from mu_jax import sharding
from mu_jax.data.batching import epoch_batches


def predict_logits(apply_fn: Callable, variables, x: np.ndarray, *,
                   batch_size: int, mesh) -> np.ndarray:
  """Eval-mode logits for every row of `x`, computed in sharded fixed-size batches."""
  if len(x) == 0:
    return np.zeros((0, 0), np.float32)
  forward = jax.jit(apply_fn, static_argnums=2)
  variables = sharding.replicate(variables, mesh)
  outputs = []
  for batch in epoch_batches({'x': x}, batch_size, shuffle=False):
    logits, _ = forward(variables, sharding.shard_batch(batch['x'], mesh), False)
    outputs.append(logits)
  return np.concatenate(sharding.to_host(outputs))[:len(x)].astype(np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy in percent (NaN for an empty set)."""
  if len(labels) == 0:
    return float('nan')
  return float(100.0 * np.mean(np.argmax(logits, -1) == labels))


def true_class_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Softmax probability of the true class, the MIA's feature."""
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float64), axis=-1))
  return probs[np.arange(len(labels)), labels]
