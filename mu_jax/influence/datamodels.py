"""True datamodels (Ilyas et al. 2022): regress outputs on training-subset masks.

An ensemble is trained with `vmap` on random α-subsets S_m of the training
set (mask row m, round(α·n) rows each, the paper's α-subsets), member m on
the rows of S_m only, as MadryLab/datamodels `examples/cifar10/train_cifar.py`
loads `indices=np.nonzero(mask)[0]`; each member's output on every target x
is recorded, and a linear model f_x(S) ≈ β(x)ᵀ 1_S + b(x) is fit per target
output by ridge or lasso regression. β_j(x) estimates how much including row
j raises the output at x, in the same convention as TRAK scores, shape
[T, O, n]. Affordable only for small data sets: it needs many more models than
training rows to be sharp.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mu_jax import ensembles
from mu_jax.data import Examples
from mu_jax.errors import MuJaxError
from mu_jax.tasks import margin

REGRESSIONS = ('ridge', 'lasso')
OUTPUTS = ('margin', 'logits')


class Datamodels(NamedTuple):
  beta: np.ndarray   # [T, O, n] effect of including training row j on output o at x_t
  bias: np.ndarray   # [T, O]


def fit(masks: np.ndarray, outputs: np.ndarray, *, regression: str = 'lasso',
        reg: float = 1e-3) -> Datamodels:
  """Linear datamodels from masks [M, n] and outputs [M, T, O]."""
  if regression not in REGRESSIONS:
    raise MuJaxError(f'Unknown datamodel regression {regression!r}; '
                     f'valid: {", ".join(REGRESSIONS)}.')
  num_models, t, o = outputs.shape
  if masks.shape[0] != num_models:
    raise MuJaxError(f'{masks.shape[0]} masks but {num_models} recorded outputs; '
                     'give one mask per trained model.')
  from sklearn import linear_model   # loaded only when datamodels are fit
  estimator = (linear_model.Ridge(alpha=reg) if regression == 'ridge'
               else linear_model.Lasso(alpha=reg, max_iter=10_000))
  estimator.fit(masks.astype(np.float64), outputs.reshape(num_models, t * o).astype(np.float64))
  coef = np.asarray(estimator.coef_).reshape(t * o, -1)
  beta = coef.reshape(t, o, masks.shape[1]).astype(np.float32)
  return Datamodels(beta, np.asarray(estimator.intercept_, np.float32).reshape(t, o))


def estimate(task, train_cfg, data: Examples, targets: Examples, *, num_models: int,
             fraction: float = 0.5, output: str = 'margin', regression: str = 'lasso',
             reg: float = 1e-3, seed: int = 0, mesh) -> Datamodels:
  """Trains `num_models` members, each on a random `fraction`-subset's rows only,
  and fits datamodels.

  `output` is each member's recorded output on the targets: 'margin' (O = 1,
  the datamodels paper's correct-class margin) or 'logits' (O = classes).
  """
  if output not in OUTPUTS:
    raise MuJaxError(f'Unknown datamodel output {output!r}; valid: {", ".join(OUTPUTS)}.')
  masks = ensembles.subset_masks(len(data), num_models, fraction, seed)
  stacked = ensembles.train_ensemble(task, train_cfg, data, mesh=mesh, masks=masks,
                                     seeds=[seed * num_models + m for m in range(num_models)])
  logits = ensembles.ensemble_apply(task, stacked, jax.tree.map(jnp.asarray, targets.arrays()))
  if output == 'margin':
    out = margin(logits, jnp.asarray(targets['y']), clip=None)[..., None]
  else:
    out = logits
  return fit(masks, np.asarray(out), regression=regression, reg=reg)
