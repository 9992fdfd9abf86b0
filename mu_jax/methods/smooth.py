"""Sharpness-aware (smoothed) unlearning: any gradient-based method with SAM steps.

Fan, Jia, Zhang, Ramakrishna, Hong & Liu, ICML 2025, arXiv:2502.05374
("Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware
Minimization Perspective and Beyond"; OPTML-Group/Unlearn-Smooth) make
unlearning robust to relearning by minimising the unlearning objective at its
worst point within radius ρ, i.e. by SAM (Foret et al., ICLR 2021): each
step ascends to θ + ρ·g/‖g‖₂ and descends with the gradient found there.

`smooth(factory)` turns a method factory into its sharpness-aware version:
the same hyper-parameters plus `rho`. Every `gradient_method` the factory
builds takes SAM steps (`gradient.sharpness_aware`), so it works for any
method built on it; ρ = 0 is the plain method exactly. The perturbation uses
the method's whole per-step loss (the paper perturbs only the forget term;
the two coincide for forget-only losses such as GA or NPO without retain term).
"""
import functools
import inspect
from typing import Callable

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Method
from mu_jax.methods.gradient import sharpness_aware

RHO = 0.05   # Foret et al. 2021 (google-research/sam): --sam_rho 0.05 for CIFAR


def smooth(factory: Callable[..., Method], name: str) -> Callable[..., Method]:
  """The factory of method `name` with SAM steps of radius `rho` (a new keyword)."""

  @functools.wraps(factory)
  def build(*, rho: float = RHO, **hparams) -> Method:
    if rho < 0:
      raise MuJaxError(f'The SAM radius rho={rho} must be ≥ 0.')
    with sharpness_aware(rho) as record:
      method = factory(**hparams)
    if not record.built:
      raise MuJaxError(f'Method {name!r} takes no gradient steps, so it has no '
                       'sharpness-aware version.')
    return method

  params = list(inspect.signature(factory).parameters.values())
  rho = inspect.Parameter('rho', inspect.Parameter.KEYWORD_ONLY, default=RHO, annotation=float)
  build.__signature__ = inspect.Signature(params + [rho], return_annotation=Method)
  build.__doc__ = f'{name} with sharpness-aware (SAM) steps of radius rho.'
  return build
