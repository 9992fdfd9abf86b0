"""Unlearning methods behind one interface, chosen by name.

Every method built on `gradient_method` (without a weight mask of its own) also
takes the LoRA hyper-parameters `lora.DEFAULTS`: with `lora_rank` > 0 it trains
rank-r adapters on the frozen weights (`mu_jax.lora`).
"""
import functools
import inspect

from mu_jax import lora
from mu_jax.errors import MuJaxError
from mu_jax.methods import acu
from mu_jax.methods import baselines
from mu_jax.methods import blindspot
from mu_jax.methods import boundary
from mu_jax.methods import distill
from mu_jax.methods import dp2unlearning
from mu_jax.methods import dmm
from mu_jax.methods import eco
from mu_jax.methods import iau
from mu_jax.methods import idk
from mu_jax.methods import ihl
from mu_jax.methods import npo
from mu_jax.methods import rmu
from mu_jax.methods import salun
from mu_jax.methods import simnpo
from mu_jax.methods import smooth
from mu_jax.methods import sparse
from mu_jax.methods import ssd
from mu_jax.methods.base import (
    ORIGINAL, PRIVATE, Context, Method, Stream, Unlearned, run_method)
from mu_jax.registry import Registry

METHODS = Registry('method')
METHODS.register('ft')(baselines.ft)
METHODS.register('ga')(baselines.ga)
METHODS.register('rl')(baselines.rl)
METHODS.register('dmm')(dmm.dmm)
METHODS.register('dm_direct')(dmm.dm_direct)
METHODS.register('oracle_matching')(dmm.oracle_matching)
METHODS.register('ssd')(ssd.ssd)
METHODS.register('iau')(iau.iau)
METHODS.register('acu')(acu.acu)
METHODS.register('salun')(salun.salun)
METHODS.register('l1_sparse')(sparse.l1_sparse)
METHODS.register('npo')(npo.npo)
METHODS.register('scrub')(distill.scrub)
METHODS.register('bad_teacher')(distill.bad_teacher)
METHODS.register('boundary_shrink')(boundary.boundary_shrink)
METHODS.register('boundary_expand')(boundary.boundary_expand)
METHODS.register('smooth')(smooth.smooth)
METHODS.register('blindspot')(blindspot.blindspot)
METHODS.register('grad_diff')(baselines.grad_diff)
METHODS.register('simnpo')(simnpo.simnpo)
METHODS.register('idk_dpo')(idk.idk_dpo)
METHODS.register('idk_nll')(idk.idk_nll)
METHODS.register('flat')(idk.flat)
METHODS.register('ihl')(ihl.ihl)
METHODS.register('rmu')(rmu.rmu)
METHODS.register('eco')(eco.eco)
METHODS.register('dp2unlearning')(dp2unlearning.dp2unlearning)

# The language-model methods (`mu_jax.experiments.lm`); any task that meets a method's
# `requires` may use it, but image experiments do not list them by default.
LM_METHODS = ('grad_diff', 'simnpo', 'idk_dpo', 'idk_nll', 'flat', 'ihl', 'rmu', 'eco',
              'dp2unlearning')

# Methods whose papers train LoRA adapters by default: their own `lora_*` defaults.
ADAPTER_DEFAULTS = {'ihl': ihl.ADAPTERS}


def method_defaults(name: str) -> dict:
  """The keyword defaults of method `name`'s factory: its hyper-parameters (with the LoRA
  ones for a method that can train adapters)."""
  factory = {k: p.default for k, p in inspect.signature(METHODS.get(name)).parameters.items()}
  if not adaptable(name):
    return factory
  return {**factory, **lora.DEFAULTS, **ADAPTER_DEFAULTS.get(name, {})}


@functools.cache
def adaptable(name: str) -> bool:
  """Whether method `name` trains through `gradient_method`, without a mask of its own,
  so it can train LoRA adapters instead (found by building it with its defaults)."""
  with lora.low_rank(None) as record:
    METHODS.get(name)()
  return bool(record.built) and all(record.built)


def create_method(name: str, **hparams) -> Method:
  """The method `name` with its defaults overridden by `hparams`."""
  valid = method_defaults(name)
  unknown = sorted(set(hparams) - set(valid))
  if unknown:
    raise MuJaxError(f'Method {name!r} has no hyper-parameter {unknown[0]!r}; '
                     f'valid: {", ".join(sorted(valid))}.')
  adapters = {k: hparams.pop(k, valid.get(k)) for k in lora.DEFAULTS}
  if not adapters['lora_rank']:
    return METHODS.get(name)(**hparams)
  spec = lora.spec_of(*(adapters[k] for k in lora.DEFAULTS))
  with lora.low_rank(spec):
    return METHODS.get(name)(**hparams)
