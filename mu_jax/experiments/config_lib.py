"""Shared pieces of the ml-collections configs in configs/.

Each config file's `get_config(arg)` starts from `base_config()`, sets its
data set, model and recipe, then calls `finish(config, arg)`, which applies
the `key=value,...` argument, shrinks everything when smoke=True, and locks.
"""
import ast
import importlib.util
import inspect
import os
import typing
from typing import Callable

import ml_collections

from mu_jax.errors import MuJaxError
from mu_jax.methods import METHODS, PRIVATE, create_method, method_defaults
from mu_jax.tasks import Task, requires

# Keys the `get_config(arg)` string may set, and where they live.
ARG_KEYS = {
    'method': 'method', 'methods': 'methods', 'forget': 'forget', 'seed': 'seed',
    'mesh': 'mesh', 'smoke': 'smoke', 'data_dir': 'data.data_dir', 'source': 'data.source',
    'task': 'task',
    'epochs': 'train.epochs', 'gradient_restriction': 'train.gradient_restriction',
}


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; values here are placeholders the files set."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.smoke = False
  c.mesh = ''                      # '' = every device on the 'data' axis
  c.forget = 'class:0'
  c.task = 'classification'        # mu_jax.tasks.TASKS: classification, regression
  c.method = 'ft'                  # mu-jax unlearn
  c.methods = 'ft,ga,rl'           # mu-jax benchmark, in table order
  c.data = ml_collections.ConfigDict(dict(
      source='digits', data_dir='', val_fraction=0.1, test_fraction=0.2))
  # name: a registered model or 'package.module:ClassName' (a flax.linen.Module
  # taking `outputs`); checkpoint: its variables trained elsewhere (an Orbax
  # directory or a .msgpack file), used as the original instead of training one.
  c.model = ml_collections.ConfigDict(dict(
      name='mlp', kwargs=ml_collections.ConfigDict(), checkpoint=''))
  c.train = ml_collections.ConfigDict(dict(
      optimizer='adam', learning_rate=1e-3, momentum=0.9, weight_decay=0.0,
      schedule='constant', batch_size=64, epochs=10, checkpoint_every=1,
      # IAU's training-time gradient restriction α (0 = plain training; the
      # official IAU code trains IAU-ready models with 0.005).
      gradient_restriction=0.0,
      # Rows per gradient pass, accumulated into the batch's step (0 = the whole
      # batch): the same step up to rounding, faster on a CPU whose caches a
      # whole batch overflows (`mu_jax.train.make_train_step`).
      microbatch=0))
  # SVC MIA rows: no cap per side, as SalUn main_forget.py; mia_members 'sample' (a seeded
  # sample, fair whatever order a source keeps its rows in) or 'first' (SalUn's
  # `Subset(retain_dataset, range(test_len))`): mu_jax.evaluation.mia.
  c.eval = ml_collections.ConfigDict(dict(batch_size=512, mia_max_per_side=0,
                                          mia_members='sample'))
  c.unlearn = ml_collections.ConfigDict()   # per-method hyper-parameter overrides
  return c


def parse_arg(arg: str | None, extra_keys: tuple[str, ...] = ()) -> dict[str, str]:
  """Parses 'method=ft,forget=class:0,smoke=True' into a dict of strings; the
  keys are ARG_KEYS and `extra_keys` (an experiment's own, e.g. rigorous's)."""
  out = {}
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key = key.strip()
    if not sep:
      raise MuJaxError(f'Config argument {item!r} is not key=value; write e.g. '
                       "'method=ft,forget=class:0'.")
    if key not in ARG_KEYS and key not in extra_keys:
      raise MuJaxError(f'Unknown config argument {key!r}; valid: '
                       f'{", ".join(sorted([*ARG_KEYS, *extra_keys]))}.')
    out[key] = value.strip()
  return out


# What a value of each type must look like, for the errors.
EXPECTED_TYPES = {bool: 'True or False', int: 'a whole number (int)', float: 'a number (float)'}


def _convert(key: str, old, value: str):
  """`value` as the type of the field's current value `old`; refuses it naming `key`."""
  kind = type(old)
  try:
    if kind is bool:
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(value)
      return value.lower() in ('true', '1')
    return kind(value) if kind in (int, float) else value
  except ValueError as e:
    raise MuJaxError(f'Config argument {key}={value!r} must be {EXPECTED_TYPES[kind]}.') from e


def check_config_file(path: str) -> None:
  """Refuses a config file that does not parse or defines no `get_config`, naming it,
  before it runs (nothing of it is executed here)."""
  try:
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), filename=path)
  except SyntaxError as e:
    raise MuJaxError(f'Config file {path} has a syntax error at line {e.lineno} ({e.msg}); '
                     'fix the file.') from e
  except (OSError, UnicodeDecodeError) as e:
    raise MuJaxError(f'Cannot read config file {path} ({e}); pass a readable Python file.') from e
  defined = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      defined.add(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):   # '*' may bring get_config
      defined.update('get_config' if a.name == '*' else (a.asname or a.name).split('.')[0]
                     for a in node.names)
    elif isinstance(node, ast.Assign):
      defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
  if 'get_config' not in defined:
    raise MuJaxError(f'Config file {path} defines no get_config(arg); a config file returns '
                     'its ml_collections.ConfigDict from get_config(arg=None).')


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the configs/*.py file at `path` (notebooks, scripts, tests)."""
  if not os.path.isfile(path):
    raise MuJaxError(f'Config file {path} does not exist; pass one of configs/*.py.')
  check_config_file(path)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _set(config, key: str, value: str) -> None:
  *parents, leaf = ARG_KEYS[key].split('.')
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = _convert(key, node[leaf], value)


def finish(config: ml_collections.ConfigDict, arg: str | None, *,
           smoke=None, per_request=None) -> ml_collections.ConfigDict:
  """Applies `smoke(config)` if smoke=True, then `arg`, then `per_request(config)`
  (defaults that depend on the request, e.g. on `config.forget`), and locks.

  `per_request` sees the `forget` of `arg`; a later `--config.forget=` flag
  does not re-run it, so pick requests with the `:forget=` argument.
  """
  # 'methods' in an argument uses '+' or ';' between names (',' splits keys).
  values = parse_arg(arg)
  fill_method_defaults(config)
  if 'smoke' in values:
    _set(config, 'smoke', values.pop('smoke'))
  if config.smoke and smoke is not None:
    smoke(config)
  for key, value in values.items():
    _set(config, key, value.replace('+', ',').replace(';', ','))
  if per_request is not None:
    per_request(config)
  config.lock()
  return config


def fill_method_defaults(config: ml_collections.ConfigDict) -> None:
  """Completes `config.unlearn.<method>` with every registered method's defaults.

  So every hyper-parameter is visible in the config, overridable from the
  command line (`--config.unlearn.ga.learning_rate=0.01`) and recorded with
  the results; a key a method does not have is refused.
  """
  for name in METHODS.names():
    defaults = method_defaults(name)
    given = config.unlearn[name].to_dict() if name in config.unlearn else {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
      raise MuJaxError(f'Method {name!r} has no hyper-parameter {unknown[0]!r}; '
                       f'valid: {", ".join(sorted(defaults))}.')
    fields = {k: _overridable(v, METHODS.get(name), k) for k, v in defaults.items()}
    if name == 'smooth':   # the wrapped method's overrides: typed, unset (None) by default
      fields['overrides'] = ml_collections.ConfigDict(
          {**wrapped_hyper_parameters(), **given.pop('overrides', {})})
    config.unlearn[name] = ml_collections.ConfigDict({**fields, **given})


def wrapped_hyper_parameters() -> dict:
  """Every hyper-parameter name of the registered methods as a typed, unset
  placeholder: `--config.unlearn.smooth.overrides.learning_rate=1e-4` then
  overrides it for whichever method smooth wraps."""
  out = {}
  for name in METHODS.names():
    if name == 'smooth':
      continue
    for key, default in method_defaults(name).items():
      kind = type(default) if default is not None else object
      out.setdefault(key, ml_collections.config_dict.placeholder(kind))
  return out


def _overridable(default, factory, key: str):
  """A None default becomes a typed placeholder, so the command line can set it."""
  if default is not None:
    return default
  annotation = inspect.signature(factory).parameters[key].annotation
  types = [t for t in typing.get_args(annotation) if t is not type(None)]
  return ml_collections.config_dict.placeholder(types[0] if types else object)


def method_names(config) -> list[str]:
  """The methods of `config.methods` ('ft,ga,...'), in table order."""
  return [m.strip() for m in config.methods.split(',') if m.strip()]


def capability_check(config, methods, private: bool = False) -> Callable[[Task], None]:
  """Fails now on an unknown method or hyper-parameter, or on a method that starts from a
  DP-SGD-trained model where the caller trains none (`private` False); returns the check,
  run on the built task before any training, that every method has the capabilities it
  needs."""
  built = {name: create_method(name, **method_hparams(config, name)) for name in methods}
  for name, method in built.items():
    if method.start == PRIVATE and not private:
      raise MuJaxError(f'Method {name!r} starts from a model trained with DP-SGD, which this '
                       'run does not train (the language-model benchmark and its sequential '
                       'requests do); drop it from config.methods.')

  def check(task: Task) -> None:
    for name, method in built.items():
      requires(task, name, *method.requires)

  return check


def method_hparams(config, name: str) -> dict:
  """The hyper-parameters of method `name` in `config.unlearn`, as keyword arguments
  (smooth's `overrides`: only those set)."""
  if name not in config.unlearn:
    return {}
  hparams = config.unlearn[name].to_dict()
  if 'overrides' in hparams:
    hparams['overrides'] = {k: v for k, v in hparams['overrides'].items() if v is not None}
  return hparams
