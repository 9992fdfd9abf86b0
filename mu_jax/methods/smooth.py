"""Sharpness-aware (smoothed) unlearning: any gradient-based method with SAM steps.

Fan, Jia, Zhang, Ramakrishna, Hong & Liu, ICML 2025, arXiv:2502.05374
("Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware
Minimization Perspective and Beyond"; OPTML-Group/Unlearn-Smooth) make
unlearning robust to relearning by minimising the unlearning objective at its
worst point within radius ρ, i.e. by SAM (Foret et al., ICLR 2021): each
step ascends to θ + ρ·g/‖g‖₂ and descends with the gradient found there.

`smooth(method=..., rho=..., overrides={...})` builds the registered `method`
with its hyper-parameters (defaults, then the `overrides` mapping; in a
config, the nested `config.unlearn.smooth.overrides`) inside a
`gradient.sharpness_aware(ρ)` block, so every `gradient_method` it builds
takes SAM steps: it works for any method built on `gradient_method`, and
ρ = 0 is the plain method exactly. The perturbation uses the method's whole
per-step loss (the paper perturbs only the forget term; the two coincide for
forget-only losses such as GA or NPO without its retain term). The default
method is NPO, the paper's main combination (NPO+SAM).
"""
from typing import Mapping

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Method
from mu_jax.methods.gradient import sharpness_aware

RHO = 0.05   # Foret et al. 2021 (google-research/sam): --sam_rho 0.05 for CIFAR


def typed_overrides(overrides: Mapping | None, defaults: dict) -> dict:
  """`overrides` (None values dropped) checked against the wrapped method's
  `defaults`: known keys only, each of its default's type (an int for a float)."""
  out = {}
  for key, value in (overrides or {}).items():
    if value is None:
      continue
    if key not in defaults:
      raise MuJaxError(f'Override {key!r} is not a hyper-parameter of the wrapped method; '
                       f'valid: {", ".join(sorted(defaults))}.')
    default = defaults[key]
    if isinstance(default, float) and type(value) is int:
      value = float(value)
    if default is not None and type(value) is not type(default):
      raise MuJaxError(f'Override {key}={value!r} does not fit the default {default!r}.')
    out[key] = value
  return out


def smooth(*, method: str = 'npo',   # Fan et al. 2025's main combination: NPO+SAM
           rho: float = RHO,
           overrides: Mapping | None = None) -> Method:
  """`method` (hyper-parameters: its defaults, then `overrides`) with SAM steps of radius rho."""
  from mu_jax.methods import create_method, method_defaults   # the registry imports this module
  if rho < 0:
    raise MuJaxError(f'The SAM radius rho={rho} must be ≥ 0.')
  if method == 'smooth':
    raise MuJaxError("smooth cannot wrap itself; name a gradient-based method, e.g. 'npo'.")
  hparams = typed_overrides(overrides, method_defaults(method))
  with sharpness_aware(rho) as record:
    built = create_method(method, **hparams)
  if not record.built:
    raise MuJaxError(f'Method {method!r} takes no gradient steps, so it has no '
                     'sharpness-aware version.')
  return built
