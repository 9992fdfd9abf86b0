"""The Task: all that methods, attribution, ensembles and evaluators see of a problem.

A task is a frozen, hashable dataclass (a static argument of jitted steps)
that owns the model and says what a batch means:

  init(rng) -> variables                     fresh weights, no guessing from leaf names
  apply(variables, batch, train) -> (outputs, new_model_state)
  losses(outputs, batch) -> [N]              the per-example loss every gradient
                                              method, Fisher and HVP is written on
  sequence_nll(outputs, batch) -> [N]        −log p(target | input), unnormalised
  statistics(outputs, batch) -> {name: [N]}  per-example prediction statistics
  evaluators {name: stats -> float}          e.g. accuracy, mse, mae
  summarize(stats per split) -> metrics      the task's table row (and its MIA)
  capabilities                               what some methods need (see below)

A batch is a dict of arrays with a leading example axis (`Examples` on the
host, sharded and padded by `Context.batches`, with the weight 'w', 0 on
padding rows). A method that needs more than the loss declares it with
`requires(task, method, *capabilities)`, which refuses a task that lacks one
with one sentence naming the method, the task and the missing capability.

Adding a task (the regression task, `mu_jax.tasks.regression`, is the worked
example): subclass `Task`, set `name`, `capabilities`, `keys` (the batch
arrays it reads), `metric_columns` (table column -> split and evaluator),
`gap_metrics` and `mia_statistic`; write `losses`, `statistics` and, for
LINEAR_HEAD, `head_targets`; register a constructor in `mu_jax.tasks.TASKS`.
Every method whose requirements it meets, the driver, ensembles, the
benchmark and the metrics then work on it unchanged.
"""
import abc
import dataclasses
from typing import Any, Callable, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mu_jax.data.examples import Examples
from mu_jax.errors import MuJaxError
from mu_jax.evaluation.mia import mia_efficacy
from mu_jax.models import Model

# Capabilities a method may require.
CLASS_LABELS = 'class labels'     # integer labels in [0, num_classes), softmax outputs
LINEAR_HEAD = 'a final linear layer'   # features(variables, batch) and head_targets(batch)
INPUT_RANGE = 'an input range'    # bounded continuous inputs (images), for adversarial steps
TOKENS = 'next-token logits'      # outputs [N, L, V] over token rows 'x', scored where 'm' says
OUTPUT_VECTOR = 'one output vector per example'   # outputs [N, C]: a linear datamodel per output
ACCURACY = 'an accuracy'          # statistics 'correct' in [0, 1]: the share of right predictions

Apply = Callable[[Any, dict, bool], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
  """A kind of problem: its model, batch format, loss, statistics and metrics."""
  model: Model
  input_shape: tuple[int, ...]   # one example's 'x' shape
  # A replacement forward pass (methods that change the architecture, e.g. an
  # analytic head): forward(variables, batch, train) -> (outputs, new_model_state).
  forward: Apply | None = dataclasses.field(default=None, kw_only=True)

  name: ClassVar[str] = 'task'
  capabilities: ClassVar[frozenset[str]] = frozenset()
  keys: ClassVar[tuple[str, ...]] = ('x',)          # batch arrays the task reads
  sequence_keys: ClassVar[tuple[str, ...]] = ()     # arrays a batch may cut along axis 1
  metric_columns: ClassVar[dict[str, tuple[str, str]]] = {}   # column -> (split, evaluator)
  table_metrics: ClassVar[tuple[str, ...]] = ()     # columns of the results table
  gap_metrics: ClassVar[tuple[str, ...]] = ()       # Avg. Gap: mean |metric − oracle| over these
  mia_statistic: ClassVar[str] = 'loss'             # the MIA's per-example feature
  evaluators: ClassVar[dict[str, Callable[[dict], float]]] = {}

  # --- the model ---------------------------------------------------------
  def init(self, rng: jax.Array) -> dict:
    """Fresh variables of the task's model."""
    return self.model.init(rng, jnp.zeros((1, *self.input_shape), jnp.float32))

  def apply(self, variables, batch: dict, train: bool) -> tuple[jax.Array, dict]:
    """(outputs [N, ...], new_model_state) of the model on a batch."""
    if self.forward is not None:
      return self.forward(variables, batch, train)
    chex.assert_rank(batch['x'], 1 + len(self.input_shape))
    return self.model.apply(variables, batch['x'], train)

  def features(self, variables, batch: dict) -> jax.Array:
    """Eval-mode penultimate features [N, D], the input of the final linear layer."""
    return self.model.penultimate(variables, batch['x'])

  def activations(self, variables, batch: dict, train: bool):
    """(outputs, new_model_state, [per-layer activations]) of the model on a batch."""
    if self.model.activations is None:
      raise MuJaxError(f'The {self.name} task\'s model {self.model.name!r} exposes no layer '
                       'activations; build it with mu_jax.models.as_model.')
    return self.model.activations(variables, batch['x'], train)

  def with_forward(self, forward: Apply) -> 'Task':
    """This task evaluated through another forward pass."""
    return dataclasses.replace(self, forward=forward)

  # --- what a task defines ------------------------------------------------
  @classmethod
  @abc.abstractmethod
  def create(cls, model: Model, input_shape: tuple[int, ...], outputs: int) -> 'Task':
    """The task around `model` for inputs of `input_shape` with `outputs` outputs."""

  @abc.abstractmethod
  def losses(self, outputs: jax.Array, batch: dict) -> jax.Array:
    """Per-example loss [N] (unweighted)."""

  @abc.abstractmethod
  def statistics(self, outputs: jax.Array, batch: dict) -> dict[str, jax.Array]:
    """Per-example prediction statistics {name: [N]}, 'loss' among them."""

  def sequence_nll(self, outputs: jax.Array, batch: dict) -> jax.Array:
    """−log p(target | input) per example [N]: the per-example loss, except where that is
    normalised (a language model's summed answer-token NLL; NPO and DPO are written on it)."""
    return self.losses(outputs, batch)

  def head_targets(self, batch: dict) -> jax.Array:
    """Float targets [N, outputs] of a least-squares head (LINEAR_HEAD tasks); [N, P,
    outputs] where an example has P positions (`head_mask`)."""
    raise MuJaxError(f'The {self.name} task has no least-squares head targets.')

  def head_mask(self, batch: dict) -> jax.Array | None:
    """[N, P]: which of an example's P positions are rows of a least-squares head (a
    language model's scored next-token predictions); None where an example is one row."""
    return None

  def lengths(self, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per-example lengths along axis 1 of `sequence_keys` past which nothing changes the
    example's loss, so a batch may be cut to its longest; None where examples have one
    fixed shape."""
    return None

  # --- shared ---------------------------------------------------------------
  def mean_loss(self, outputs: jax.Array, batch: dict, weights: jax.Array | None = None):
    """Σ w·ℓ / Σ w over the batch's real rows (`weights` default: batch['w'])."""
    w = batch['w'] if weights is None else weights
    return jnp.sum(self.losses(outputs, batch) * w) / jnp.maximum(jnp.sum(w), 1.0)

  def check_examples(self, examples: Examples, what: str) -> None:
    """Refuses examples without the task's arrays or with the wrong example shape."""
    missing = [k for k in self.keys if k not in examples]
    if missing:
      raise MuJaxError(f'The {what} examples lack {missing[0]!r}, which the {self.name} '
                       f'task needs (it reads {", ".join(self.keys)}).')
    if 'x' in self.keys and tuple(examples['x'].shape[1:]) != tuple(self.input_shape):
      raise MuJaxError(f'The {what} inputs have shape {examples["x"].shape[1:]} per example; '
                       f'the {self.name} task was built for {self.input_shape}.')

  def summarize(self, stats: dict[str, dict[str, np.ndarray]], *, seed: int,
                mia_max_per_side: int, mia_members: str = 'sample') -> dict[str, float]:
    """The task's metrics from per-split statistics ('forget', 'retain', 'test')."""
    out = {column: self.evaluators[evaluator](stats[split])
           for column, (split, evaluator) in self.metric_columns.items()}
    feature = {split: s[self.mia_statistic] for split, s in stats.items()}
    out['MIA'] = mia_efficacy(feature['retain'], feature['test'], feature['forget'],
                              seed=seed, max_per_side=mia_max_per_side, members=mia_members)
    return out


def requires(task: Task, method: str, *capabilities: str) -> None:
  """Refuses `task` for `method` unless it has every one of `capabilities`."""
  for capability in capabilities:
    if capability not in task.capabilities:
      raise MuJaxError(f'Method {method!r} needs {capability}, which the {task.name} '
                       'task does not have; pick another method or task.')
    if capability == LINEAR_HEAD and task.model.penultimate is None:
      raise MuJaxError(f'Method {method!r} needs {capability}, which model '
                       f'{task.model.name!r} does not expose (it has no features(x) method '
                       "returning the input of a final Dense layer 'head'); pick another method.")


def mean_of(name: str, scale: float = 1.0) -> Callable[[dict], float]:
  """An evaluator: scale × the mean of statistic `name` (NaN on an empty split)."""

  def evaluate(stats: dict) -> float:
    values = np.asarray(stats[name], np.float64)
    return float(scale * values.mean()) if values.size else float('nan')

  return evaluate
