"""Harder unlearning settings: sequential requests and corrective unlearning.

Sequential: one forget set split into k disjoint requests served one after
another, each unlearned from the previous request's model and compared with
an oracle retrained without everything forgotten so far.

Corrective (Goel et al. 2024, "Corrective Machine Unlearning", TMLR;
github.com/drimpossible/corrective-unlearning-bench, src/datasets.py): part
of the training set is manipulated, a model is trained on it, and only a
fraction of the manipulated rows is identified and forgotten. Two
manipulations, as the reference:
  badnet      a seeded set of rows gets a constant patch in the bottom-right
              corner and the target label (BadNets, Gu et al. 2017); the attack
              succeeds on a test image of another class when the patch alone
              makes the model predict the target;
  label_swap  "interclass confusion": rows of class a are relabelled b and
              rows of b relabelled a, half each; the attack succeeds on a clean
              test image of a or b predicted as the other class of the pair.
Clean accuracy is accuracy on the unmodified test set.
"""
from typing import NamedTuple

import numpy as np

from mu_jax.data import Examples
from mu_jax.errors import MuJaxError

MANIPULATIONS = ('badnet', 'label_swap')
PATCH_SIZE = 3            # reference DatasetWrapper: corrupt_size=3 (bottom-right corner)
TARGET_CLASS = 0          # reference manip_dataset: poisoned labels set to 0
SWAP_CLASSES = (3, 5)     # reference get_targeted_classes('CIFAR10') = (3, 5)


def sequential_requests(forget_idx: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
  """`forget_idx` split into k disjoint, sorted, seeded requests of near-equal size."""
  forget_idx = np.asarray(forget_idx)
  if not 1 <= k <= len(forget_idx):
    raise MuJaxError(f'Cannot split {len(forget_idx)} forget examples into {k} requests; '
                     'use between 1 and the forget-set size.')
  order = np.random.default_rng(seed).permutation(len(forget_idx))
  return [np.sort(forget_idx[part]) for part in np.array_split(order, k)]


def add_patch(x: np.ndarray, value: float, size: int = PATCH_SIZE) -> np.ndarray:
  """A copy of NHWC images with their bottom-right size×size corner set to `value`."""
  if not 1 <= size <= min(x.shape[1:3]):
    raise MuJaxError(f'A {size}x{size} patch does not fit {x.shape[1]}x{x.shape[2]} images; '
                     'pick a smaller patch size.')
  x = np.array(x, copy=True)
  x[:, -size:, -size:, :] = value
  return x


class Manipulated(NamedTuple):
  train: Examples            # the training set the original model sees
  manipulated: np.ndarray    # sorted indices of the manipulated rows
  kind: str
  patch_value: float         # badnet: the patch's value (the training set's maximum)


def manipulate(train: Examples, kind: str, count: int, seed: int, *, num_classes: int,
               target: int = TARGET_CLASS, classes: tuple[int, int] = SWAP_CLASSES,
               patch_size: int = PATCH_SIZE) -> Manipulated:
  """Applies the corrective setting's manipulation to `count` seeded training rows.

  badnet draws the rows among those not already of class `target` (a patched
  row of the target class would carry no poison); label_swap draws count/2
  rows of each class of `classes`.
  """
  if kind not in MANIPULATIONS:
    raise MuJaxError(f'Unknown manipulation {kind!r}; valid: {", ".join(MANIPULATIONS)}.')
  rng = np.random.default_rng(seed)
  x, y = train['x'], train['y'].copy()
  if kind == 'badnet':
    if not 0 <= target < num_classes:
      raise MuJaxError(f'BadNet target class {target} is not in [0, {num_classes - 1}].')
    candidates = np.flatnonzero(y != target)
    if not 0 < count <= len(candidates):
      raise MuJaxError(f'Cannot poison {count} of the {len(candidates)} rows outside the '
                       'target class; choose a count in between.')
    rows = np.sort(rng.choice(candidates, count, replace=False))
    value = float(x.max())   # reference: corrupt_val = the data set's maximum pixel value
    x = x.copy()
    x[rows] = add_patch(x[rows], value, patch_size)
    y[rows] = target
    return Manipulated(Examples(x=x, y=y), rows, kind, value)
  a, b = classes
  if a == b or not (0 <= a < num_classes and 0 <= b < num_classes):
    raise MuJaxError(f'Label swap needs two different classes in [0, {num_classes - 1}], '
                     f'got {classes}.')
  half = count // 2
  rows_a, rows_b = np.flatnonzero(y == a), np.flatnonzero(y == b)
  if count % 2 or not 0 < half <= min(len(rows_a), len(rows_b)):
    raise MuJaxError(f'Label swap needs an even count with at most {min(len(rows_a), len(rows_b))}'
                     f' rows per class; got {count}.')
  rows_a, rows_b = rng.choice(rows_a, half, replace=False), rng.choice(rows_b, half, replace=False)
  y[rows_a], y[rows_b] = b, a
  return Manipulated(Examples(x=x, y=y), np.sort(np.concatenate([rows_a, rows_b])), kind,
                     float('nan'))


def identified(manipulated: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """The sorted, seeded `fraction` of the manipulated rows that gets forgotten."""
  count = round(fraction * len(manipulated))
  if not 0.0 < fraction <= 1.0 or count == 0:
    raise MuJaxError(f'Identified fraction {fraction} of {len(manipulated)} manipulated rows '
                     'forgets nothing; use a fraction in (0, 1].')
  return np.sort(np.random.default_rng(seed).choice(manipulated, count, replace=False))


def attack_split(test: Examples, setting: Manipulated, *, target: int = TARGET_CLASS,
                 classes: tuple[int, int] = SWAP_CLASSES,
                 patch_size: int = PATCH_SIZE) -> Examples:
  """The test rows the attack is measured on, labelled with what the attack wants.

  badnet: patched test images of other classes, labelled `target`; label_swap:
  clean test images of the pair, labelled with the other class of the pair.
  The attack success rate is the accuracy on this split.
  """
  if setting.kind == 'badnet':
    rows = test['y'] != target
    return Examples(x=add_patch(test['x'][rows], setting.patch_value, patch_size),
                    y=np.full(int(rows.sum()), target, test['y'].dtype))
  a, b = classes
  rows = (test['y'] == a) | (test['y'] == b)
  return Examples(x=test['x'][rows], y=np.where(test['y'][rows] == a, b, a).astype(test['y'].dtype))
