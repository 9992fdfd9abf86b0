"""Sharpness-aware (smoothed) unlearning: any gradient-based method with SAM steps.

Fan, Jia, Zhang, Ramakrishna, Hong & Liu, ICML 2025, arXiv:2502.05374
("Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware
Minimization Perspective and Beyond"; OPTML-Group/Unlearn-Smooth) make
unlearning robust to relearning by minimising the unlearning objective at its
worst point within radius ρ, i.e. by SAM (Foret et al., ICLR 2021): each
step ascends to θ + ρ·g/‖g‖₂ and descends with the gradient found there.

`smooth(method=..., rho=..., overrides=...)` builds the registered `method`
with its hyper-parameters (defaults, then `overrides`) inside a
`gradient.sharpness_aware(ρ)` block, so every `gradient_method` it builds
takes SAM steps: it works for any method built on `gradient_method`, and
ρ = 0 is the plain method exactly. The perturbation uses the method's whole
per-step loss (the paper perturbs only the forget term; the two coincide for
forget-only losses such as GA or NPO without its retain term). The default
method is NPO, the paper's main combination (NPO+SAM).
"""
import ast
import re

from mu_jax.errors import MuJaxError
from mu_jax.methods.base import Method
from mu_jax.methods.gradient import sharpness_aware

RHO = 0.05   # Foret et al. 2021 (google-research/sam): --sam_rho 0.05 for CIFAR


def parse_overrides(overrides: str, defaults: dict) -> dict:
  """'learning_rate=1e-3;epochs=5' (';' or ',' between items) typed like `defaults`."""
  out = {}
  for item in filter(None, (s.strip() for s in re.split('[;,]', overrides))):
    key, sep, value = (part.strip() for part in item.partition('='))
    if not sep or key not in defaults:
      raise MuJaxError(f'Override {item!r} is not key=value with a key among: '
                       f'{", ".join(sorted(defaults))}.')
    default = defaults[key]
    try:
      if isinstance(default, str):
        out[key] = value
      elif isinstance(default, bool):
        out[key] = {'true': True, 'false': False}[value.lower()]
      else:
        parsed = ast.literal_eval(value)
        if isinstance(default, float) and type(parsed) is int:
          parsed = float(parsed)
        if default is not None and type(parsed) is not type(default):
          raise TypeError(value)
        out[key] = parsed
    except (KeyError, ValueError, SyntaxError, TypeError) as e:
      raise MuJaxError(f'Override {item!r}: {value!r} does not fit the default '
                       f'{default!r}.') from e
  return out


def smooth(*, method: str = 'npo',   # Fan et al. 2025's main combination: NPO+SAM
           rho: float = RHO,
           overrides: str = '') -> Method:
  """`method` (hyper-parameters: its defaults, then `overrides`) with SAM steps of radius rho."""
  from mu_jax.methods import create_method, method_defaults   # the registry imports this module
  if rho < 0:
    raise MuJaxError(f'The SAM radius rho={rho} must be ≥ 0.')
  if method == 'smooth':
    raise MuJaxError("smooth cannot wrap itself; name a gradient-based method, e.g. 'npo'.")
  hparams = parse_overrides(overrides, method_defaults(method))
  with sharpness_aware(rho) as record:
    built = create_method(method, **hparams)
  if not record.built:
    raise MuJaxError(f'Method {method!r} takes no gradient steps, so it has no '
                     'sharpness-aware version.')
  return built
