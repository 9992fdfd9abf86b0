"""Every value of a finished config checked before any work: `check_config`.

The commands run it right after the config loads (`mu_jax.commands.cli`), and
`prepare_setting`, `run_benchmark` and `run_rigorous` run it for Python users,
so a mistake ends in one sentence naming the key, its value and what is
allowed, before any data is read, any model trained or any folder written.

Numbers are checked by rules on the key's dotted path (`RULES`: the first
rule whose pattern matches applies), so a new method's `epochs`, `batch_size`
or `learning_rate` is covered without a line here; the other checks relate
keys to the registries (methods, models, tasks, sources, forget specs) and to
each other (the data splits).
"""
import inspect
import math
import re
from typing import Any, Callable, Iterator, NamedTuple

import ml_collections
from absl import flags

from mu_jax import optim
from mu_jax.data import sources, text
from mu_jax.data.forget import check_spec
from mu_jax.errors import MuJaxError
from mu_jax.evaluation import klom, mia, ulira
from mu_jax.experiments import config_lib
from mu_jax.methods import METHODS, create_method, method_defaults
from mu_jax.models import MODELS, external
from mu_jax.tasks import TASKS, LanguageModel


class Rule(NamedTuple):
  """Values at paths matching `pattern` (a regex searched in the dotted path)
  must pass `valid`; `allowed` says what passes, for the error."""
  pattern: str
  valid: Callable[[Any], bool]
  allowed: str


def _real(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(minimum: int) -> Callable[[Any], bool]:
  return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _between(low: float, high: float, *, low_open: bool, high_open: bool):
  return lambda v: (_real(v) and (v > low if low_open else v >= low)
                    and (v < high if high_open else v <= high))


def _one_of(choices) -> Callable[[Any], bool]:
  return lambda v: v in choices


RULES = (
    # Keys where 0 means something (first, so the general rules below do not refuse it).
    Rule(r'^rigorous\.relearn\.batch_size$', _whole(0),
         "a whole number >= 0 (0: the training recipe's batch size)"),
    Rule(r'^rigorous\.relearn\.max_steps$', _whole(0),
         'a whole number >= 0 (0: no relearn attack)'),
    Rule(r'(^|\.)(scrub|overrides)\.max_steps$', _whole(0),
         'a whole number >= 0 (the epochs with a SCRUB max-step)'),
    Rule(r'(^|[._])warmup_epochs$', _whole(0), 'a whole number >= 0 (0: no warm-up)'),
    Rule(r'^(eval\.mia_max_per_side|rigorous\.(train_size|eval_size|mia_models))$',
         _whole(0), 'a whole number >= 0 (0: all rows)'),
    Rule(r'^data\.(val|test)_fraction$',
         _between(0, 1, low_open=False, high_open=True), 'a number in [0, 1)'),
    Rule(r'^seed$', _whole(0), 'a whole number >= 0'),
    Rule(r'^(pre)?train\.microbatch$', _whole(0), 'a whole number >= 0 (0: whole batches)'),
    Rule(r'^data\.corpus_seed$', _whole(0), 'a whole number >= 0'),
    Rule(r'^data\.(num_authors|holdout_authors)$', _whole(10),
         'a whole number >= 10 (the smallest forget split is 1% of the authors, at least 1)'),
    Rule(r'^data\.qa_per_author$', _whole(1), 'a whole number >= 1'),
    Rule(r'^data\.vocab_size$', _whole(64), 'a whole number >= 64'),
    Rule(r'^lm\.(retain_eval_size|utility_eval_size|verbmem_prefix|retain_seeds)$', _whole(1),
         'a whole number >= 1'),
    Rule(r'^lm\.dp\.(epsilon|clip)$', _between(0, math.inf, low_open=True, high_open=True),
         'a finite number > 0'),
    Rule(r'^lm\.dp\.delta$', _between(0, 1, low_open=True, high_open=True), 'a number in (0, 1)'),
    Rule(r'^lm\.mink_k$', _between(0, 1, low_open=True, high_open=False), 'a number in (0, 1]'),
    Rule(r'^rigorous\.num_models$', _whole(4), 'a whole number, at least 4 models per side '
         '(for the U-LiRA folds and the challenge score)'),
    # Counts: epochs, steps, batch sizes, ensemble and projection sizes.
    Rule(r'(^|[._])epochs$', _whole(1), 'a whole number >= 1'),
    Rule(r'(^|[._])steps$', _whole(1), 'a whole number >= 1'),
    Rule(r'batch_size$', _whole(1), 'a whole number >= 1'),
    Rule(r'(^|\.)checkpoint_every$', _whole(1), 'a whole number >= 1'),
    Rule(r'(^|[._])(num_models|requests|proj_dim|buffer_size|chunk_size|bins)$', _whole(1),
         'a whole number >= 1'),
    Rule(r'(^|[._])folds$', _whole(2), 'a whole number >= 2'),
    # Step sizes and regularisers.
    Rule(r'(^|[._])(learning_rate|lr)$', _between(0, math.inf, low_open=True, high_open=True),
         'a finite number > 0'),
    Rule(r'(^|[._])(weight_decay|gradient_restriction)$',
         _between(0, math.inf, low_open=False, high_open=True), 'a finite number >= 0'),
    Rule(r'(^|\.)momentum$', _between(0, 1, low_open=False, high_open=True), 'a number in [0, 1)'),
    Rule(r'(^|[._])(temperature|eps)$', _between(0, math.inf, low_open=True, high_open=True),
         'a finite number > 0'),
    Rule(r'fraction$', _between(0, 1, low_open=True, high_open=False), 'a number in (0, 1]'),
    Rule(r'(^|[._])optimizer$', _one_of(optim.OPTIMIZERS), ', '.join(optim.OPTIMIZERS)),
    Rule(r'^(pre)?train\.schedule$', _one_of(optim.SCHEDULES), ', '.join(optim.SCHEDULES)),
    Rule(r'^eval\.mia_members$', _one_of(mia.MEMBERS), ', '.join(mia.MEMBERS)),
    Rule(r'^rigorous\.klom_direction$', _one_of(klom.DIRECTIONS), ', '.join(klom.DIRECTIONS)),
    Rule(r'^rigorous\.ulira_protocol$', _one_of(ulira.PROTOCOLS), ', '.join(ulira.PROTOCOLS)),
)


def check_config(config) -> None:
  """Raises MuJaxError naming the first value of `config` that no run can use."""
  for path, value in _leaves(config.to_dict()):
    _check_value(path, value)
  TASKS.get(config.task)
  _check_methods(config)
  _check_model(config.model)
  if config.task == LanguageModel.name:
    _check_text_data(config)
    return
  _check_data(config.data)
  check_spec(config.forget)


def override_error(config, path: str, value: str | None) -> str | None:
  """Why `--config.<path>=<value>` cannot apply to `config`, as one sentence naming
  the key and what it allows; None if it can (the mistake is elsewhere). A None
  `value` (not known) checks the key only."""
  parts = path.split('.')
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return _missing_key_error(config, parts[:i], part, path)
    if i < len(parts) - 1:
      node = node[part]
  kind = node.get_type(parts[-1])
  parser = _PARSERS.get(kind)
  if parser is not None and value is not None:
    try:
      parser.parse(value)
    except ValueError:
      return f'--config.{path}={value!r} must be {config_lib.EXPECTED_TYPES[kind]}.'
  return None


_PARSERS = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
            float: flags.FloatParser()}


def _missing_key_error(config, parents: list[str], key: str, path: str) -> str:
  """The sentence for an override whose `key` is not under config.<parents>."""
  if parents == ['unlearn']:
    return (f'--config.{path}: {key!r} is not a method; valid: '
            f'{", ".join(METHODS.names())}.')
  if len(parents) == 2 and parents[0] == 'unlearn' and parents[1] in METHODS:
    return hyper_parameter_error(parents[1], key)
  if parents == ['unlearn', 'smooth', 'overrides']:
    return (f'--config.{path}: {key!r} is no hyper-parameter of any method; valid: '
            f'{", ".join(sorted(config_lib.wrapped_hyper_parameters()))}.')
  if parents == ['model', 'kwargs']:
    name = config.model.name
    if key in (model_keywords(name) or ()):
      return (f'Model {name!r} takes {key!r}, but this config file sets no '
              f'config.model.kwargs.{key} to override; set it in the config file.')
    if model_keywords(name) is not None:
      return model_keyword_error(name, key)
  node = config
  for part in parents:
    node = node[part]
  where = 'config' + ''.join(f'.{p}' for p in parents)
  keys = ', '.join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ''
  return (f'--config.{path}: {where} has no key {key!r}' +
          (f'; valid: {keys}.' if keys else '.'))


def _leaves(tree: dict, prefix: str = '') -> Iterator[tuple[str, Any]]:
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      yield from _leaves(value, path + '.')
    else:
      yield path, value


def _check_value(path: str, value) -> None:
  if value is None:            # an unset placeholder: the method's own default applies
    return
  for rule in RULES:
    if re.search(rule.pattern, path):
      if not rule.valid(value):
        raise MuJaxError(f'config.{path} is {value!r}; it must be {rule.allowed}.')
      return


def _check_methods(config) -> None:
  """config.method and config.methods name registered methods, each once; every
  block of config.unlearn belongs to a method and holds only its hyper-parameters."""
  valid = ', '.join(METHODS.names())
  names = [m.strip() for m in config.methods.split(',')]
  if not any(names) and config.task != LanguageModel.name:   # an LM run may have no methods
    raise MuJaxError(f'config.methods is {config.methods!r}, which names no method; list '
                     f'one or more, comma-separated, of: {valid}.')
  named = [m for m in names if m]
  for key, given in (('methods', named), ('method', [config.method.strip()])):
    for name in given:
      if name not in METHODS:
        raise MuJaxError(f'config.{key} names {name!r}, which is not a method; valid: '
                         f'{valid}.')
  twice = sorted({m for m in named if named.count(m) > 1})
  if twice:
    raise MuJaxError(f'config.methods is {config.methods!r}, which lists {twice[0]!r} more '
                     'than once; name each method once.')
  for name in config.unlearn.keys():
    if name not in METHODS:
      raise MuJaxError(f'config.unlearn.{name} is not a method; valid: {valid}.')
    allowed = set(method_defaults(name))
    unknown = sorted(set(config.unlearn[name].keys()) - allowed)
    if unknown:
      raise MuJaxError(hyper_parameter_error(name, unknown[0]))
  if 'smooth' in config.unlearn and config.unlearn.smooth.get('overrides') is not None:
    wrapped = config_lib.wrapped_hyper_parameters()
    unknown = sorted(set(config.unlearn.smooth.overrides.keys()) - set(wrapped))
    if unknown:
      raise MuJaxError(f'config.unlearn.smooth.overrides.{unknown[0]} is no hyper-parameter '
                       f'of any method; valid: {", ".join(sorted(wrapped))}.')
  for name in config.unlearn.keys():   # the factories' own checks (e.g. a SCRUB schedule)
    create_method(name, **config_lib.method_hparams(config, name))


def hyper_parameter_error(method: str, key: str) -> str:
  """The sentence for a hyper-parameter `key` that method `method` does not take."""
  return (f'Method {method!r} has no hyper-parameter {key!r} (config.unlearn.{method}.{key}); '
          f'valid: {", ".join(sorted(method_defaults(method)))}.')


def model_keywords(name: str) -> list[str] | None:
  """The keywords config.model.kwargs may set for model `name`; None for a model
  named by import path, whose keywords the module decides (`external.fitting_kwargs`)."""
  if external.is_import_path(name):
    return None
  factory = MODELS.get(name)
  return sorted(k for k in inspect.signature(factory).parameters if k != 'outputs')


def model_keyword_error(name: str, key: str) -> str:
  """The sentence for a config.model.kwargs key that model `name` does not take."""
  valid = model_keywords(name)
  return (f'Model {name!r} takes no keyword {key!r} (config.model.kwargs.{key}); valid: '
          f'{", ".join(valid) if valid else "none"}.')


def _check_model(model) -> None:
  if external.is_import_path(model.name):
    external.import_module_class(model.name)
    return
  valid = model_keywords(model.name)
  unknown = sorted(set(model.kwargs.keys()) - set(valid))
  if unknown:
    raise MuJaxError(model_keyword_error(model.name, unknown[0]))


def _check_text_data(config) -> None:
  """A language-model config reads the generated corpus and names one of its forget splits."""
  if config.data.source != text.SOURCE:
    raise MuJaxError(f'config.data.source is {config.data.source!r}; the {config.task} task '
                     f'reads the generated corpus, {text.SOURCE!r}.')
  text.forget_size(config.forget, config.data.num_authors)


def _check_data(data) -> None:
  """The source is registered, and its splits leave training rows and a test split."""
  kind = data.source.partition(':')[0]
  sources.SOURCES.get(kind)
  if data.val_fraction + data.test_fraction >= 1:
    raise MuJaxError(f'config.data.val_fraction ({data.val_fraction}) and '
                     f'config.data.test_fraction ({data.test_fraction}) sum to '
                     f'{data.val_fraction + data.test_fraction:g}, leaving no training rows; '
                     'their sum must be below 1.')
  if kind in sources.CARVED_TEST and data.test_fraction <= 0:
    raise MuJaxError(f'config.data.test_fraction is {data.test_fraction!r}, but {kind} has no '
                     'test split of its own, so its test split would be empty and the '
                     'evaluation needs one; it must be in (0, 1).')
