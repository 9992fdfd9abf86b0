"""Tasks by name: the problem a model solves, as methods and metrics see it."""
from mu_jax.models import Model
from mu_jax.registry import Registry
from mu_jax.tasks.base import (
    ACCURACY, CLASS_LABELS, INPUT_RANGE, LINEAR_HEAD, OUTPUT_VECTOR, TOKENS, Task, mean_of,
    requires)
from mu_jax.tasks.classification import Classification, margin
from mu_jax.tasks.language_model import LanguageModel
from mu_jax.tasks.regression import Regression

TASKS: Registry[type[Task]] = Registry('task')
TASKS.register('classification')(Classification)
TASKS.register('regression')(Regression)
TASKS.register('language_model')(LanguageModel)


def create_task(name: str, model: Model, input_shape, outputs: int) -> Task:
  """The task `name` around `model` for inputs of `input_shape` and `outputs` outputs
  (classes of a classifier, targets of a regression)."""
  return TASKS.get(name).create(model, tuple(int(d) for d in input_shape), int(outputs))
