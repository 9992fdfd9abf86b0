"""Predictions and per-example statistics of a model on a set of examples.

`predict_outputs` runs the task's eval-mode forward pass in sharded,
fixed-size batches; `split_statistics` turns the outputs into the task's
per-example statistics (`Task.statistics`) on the host, which
`Task.summarize` reduces to the task's metrics.
"""
import jax
import numpy as np

from mu_jax import logs, sharding
from mu_jax.data import Examples
from mu_jax.data.batching import epoch_batches


@jax.jit(static_argnums=0)
def _forward(task, variables, batch):
  return task.apply(variables, batch, False)[0]


def predict_outputs(task, variables, examples: Examples, *, batch_size: int,
                    mesh) -> np.ndarray:
  """Eval-mode outputs for every row of `examples`, in sharded fixed-size batches."""
  variables = sharding.replicate(variables, mesh)
  inputs = {k: examples[k] for k in task.keys if k in examples}
  batches = epoch_batches(inputs, batch_size, shuffle=False)
  outputs = [_forward(task, variables, sharding.shard_batch(batch, mesh))
             for batch in logs.progress(batches, unit='batch', desc='predicting')]
  if not outputs:
    shape = jax.eval_shape(_forward, task, variables, {k: v[:1] for k, v in inputs.items()})
    return np.zeros((0, *shape.shape[1:]), np.float32)
  return np.concatenate(sharding.to_host(outputs))[:len(examples)].astype(np.float32)


def split_statistics(task, outputs: np.ndarray, examples: Examples) -> dict[str, np.ndarray]:
  """The task's per-example statistics of `outputs` on `examples`, as host arrays."""
  return {k: np.asarray(v) for k, v in task.statistics(outputs, examples.arrays()).items()}
