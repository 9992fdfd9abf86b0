"""Models defined outside mu_jax: a Flax module class named by its import path.

`config.model.name='package.module:ClassName'` builds that `flax.linen.Module`
with `outputs=` the data set's outputs (as the registered models get it) and
`config.model.kwargs`, and wraps it into the same pure functions as the
registered models. The module is called as `module(x, train=...)` when its
`__call__` takes a `train` argument, else as `module(x)`. Methods that work on
the last layer (e.g. acu, boundary_*) also need a `features(x[, train])` method
returning the input of a final Dense layer named 'head', as `Network` has.
"""
import importlib
import inspect

import flax.linen as nn
import jax.numpy as jnp
from absl import logging

from mu_jax.errors import MuJaxError


def is_import_path(name: str) -> bool:
  """True for 'package.module:ClassName', as opposed to a registered model name."""
  return ':' in name


def import_module_class(path: str) -> type[nn.Module]:
  """The `flax.linen.Module` subclass at 'package.module:ClassName'."""
  module_name, _, attribute = path.partition(':')
  try:
    module = importlib.import_module(module_name)
  except (ImportError, ValueError) as e:   # ValueError: an empty module name
    raise MuJaxError(f'Cannot import module {module_name!r} of model {path!r} ({e}); '
                     'check that it is on the Python path.') from e
  cls = getattr(module, attribute, None)
  if cls is None:
    raise MuJaxError(f'Module {module_name!r} has no attribute {attribute!r}, '
                     f'which model {path!r} names.')
  if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
    raise MuJaxError(f'Model {path!r} is not a flax.linen.Module class; '
                     'name one as package.module:ClassName.')
  return cls


def build_module(path: str, outputs: int, **kwargs) -> nn.Module:
  """The module at `path` with `outputs` outputs and the config's kwargs."""
  cls = import_module_class(path)
  if 'outputs' not in inspect.signature(cls).parameters:
    raise MuJaxError(f'Model {path!r} must accept an `outputs` argument (a field '
                     '`outputs: int`, set to the number of classes or targets), as '
                     'mu_jax passes the data set\'s outputs to every model.')
  try:
    return cls(outputs=outputs, **kwargs)
  except TypeError as e:
    raise MuJaxError(f'Cannot build model {path!r} with config.model.kwargs '
                     f'{kwargs} ({e}).') from e


def fitting_kwargs(path: str, kwargs: dict) -> dict:
  """The entries of `kwargs` that the module at `path` takes; the others are
  logged and left out (a config's model.kwargs are for its registered model,
  and a locked config cannot drop them from the command line)."""
  accepted = inspect.signature(import_module_class(path)).parameters
  for key in sorted(set(kwargs) - set(accepted)):
    logging.warning('config.model.kwargs.%s is left out: model %s does not take it.', key, path)
  return {k: v for k, v in kwargs.items() if k in accepted}


def _train_argument(method):
  """(train -> the keyword arguments that pass `train` to `method`): {'train': train}
  if it takes a `train` argument, else {}."""
  takes_train = 'train' in inspect.signature(method).parameters
  return lambda train: {'train': train} if takes_train else {}


def model_functions(path: str, outputs: int, **kwargs):
  """(init, apply, penultimate) of the module at `path`, as `mu_jax.models.Model` takes them;
  penultimate is None for a module without a `features` method."""
  module = build_module(path, outputs, **kwargs)
  call = _train_argument(type(module).__call__)
  features = getattr(type(module), 'features', None)

  def init(rng, sample_x):
    return module.init(rng, sample_x, **call(False))

  def apply(variables, x, train):
    if not train:
      return module.apply(variables, x, **call(False)).astype(jnp.float32), {}
    outputs, state = module.apply(variables, x, **call(True), mutable=['batch_stats'])
    return outputs.astype(jnp.float32), dict(state)

  def penultimate(variables, x):
    return module.apply(variables, x, **_train_argument(features)(False),
                        method=features).astype(jnp.float32)

  return init, apply, None if features is None else penultimate
