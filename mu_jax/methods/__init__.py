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


def create_method(name: str, **hparams) -> Method:
  """The method `name` with its defaults overridden by `hparams`."""
  factory = METHODS.get(name)
  valid = set(inspect.signature(factory).parameters)
  unknown = sorted(set(hparams) - valid)
  if unknown:
    raise MuJaxError(f'Method {name!r} has no hyper-parameter {unknown[0]!r}; '
                     f'valid: {", ".join(sorted(valid))}.')
  return factory(**hparams)
