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
ρ = 0 is the plain method exactly. `sam_scope='forget'` (the default, the
reference's: Unlearn-Smooth MUSE/baselines/baselines/sam_iterative.py:121-139
perturbs with the forget loss's gradient only and adds the retain gradient at
the unperturbed point) perturbs the forget term of a method that returns one
(`gradient.LossTerms`: NPO with its retain term) and the whole loss of any
other; `sam_scope='total'` always perturbs the whole per-step loss. The
default method is NPO, the paper's main combination (NPO+SAM).

ρ per setting: the reference uses 0.01 on MUSE (run_muse_unlearn.sh:62, 82;
unlearn.py:143) and 0.1 on WMDP (configs/unlearn/wmdp/NPO+SAM.json:26), both
for 7B language models; it has no image setting, so the default here, used by
the image configs, is SAM's own CIFAR radius.
"""
from typing import Mapping

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Method
from mu_jax.methods.gradient import check_sam_scope, sharpness_aware

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
           sam_scope: str = 'forget',   # Unlearn-Smooth sam_iterative.py:129-138: forget loss only
           overrides: Mapping | None = None) -> Method:
  """`method` (hyper-parameters: its defaults, then `overrides`) with SAM steps of
  radius rho that perturb `sam_scope` ('forget' or 'total')."""
  from mu_jax.methods import create_method, method_defaults   # the registry imports this module
  if rho < 0:
    raise MuJaxError(f'The SAM radius rho={rho} must be ≥ 0.')
  check_sam_scope(sam_scope)
  if method == 'smooth':
    raise MuJaxError("smooth cannot wrap itself; name a gradient-based method, e.g. 'npo'.")
  hparams = typed_overrides(overrides, method_defaults(method))
  with sharpness_aware(rho, sam_scope) as record:
    built = create_method(method, **hparams)
  if not record.built:
    raise MuJaxError(f'Method {method!r} takes no gradient steps, so it has no '
                     'sharpness-aware version.')
  return built
