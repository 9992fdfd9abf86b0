"""Unlearning methods behind one interface, chosen by name."""
import inspect

from mu_jax.errors import MuJaxError
from mu_jax.methods import baselines
from mu_jax.methods.base import (
    Context, Method, ModelSpec, Stream, Unlearned, run_method)
from mu_jax.registry import Registry

METHODS = Registry('method')
METHODS.register('ft')(baselines.ft)
METHODS.register('ga')(baselines.ga)
METHODS.register('rl')(baselines.rl)


def method_defaults(name: str) -> dict:
  """The keyword defaults of method `name`'s factory: its hyper-parameters."""
  return {k: p.default for k, p in inspect.signature(METHODS.get(name)).parameters.items()}


def create_method(name: str, **hparams) -> Method:
  """The method `name` with its defaults overridden by `hparams`."""
  valid = method_defaults(name)
  unknown = sorted(set(hparams) - set(valid))
  if unknown:
    raise MuJaxError(f'Method {name!r} has no hyper-parameter {unknown[0]!r}; '
                     f'valid: {", ".join(sorted(valid))}.')
  return METHODS.get(name)(**hparams)
