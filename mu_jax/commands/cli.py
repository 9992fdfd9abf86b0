"""What the absl commands share: the config and workdir flags, clean errors, multi-host start.

--config takes a config module (`mu_jax.configs.digits_mlp`) or a path to a
config file (`configs/digits_mlp.py`), either optionally followed by
":key=value,..." arguments for its get_config(arg).

Multi-host (TPU pods, GPU clusters): start the same command on every host with
--multihost (or MU_JAX_MULTIHOST=1). `jax.distributed.initialize` then runs
before anything else, auto-detecting the cluster (Cloud TPU, SLURM, Open MPI,
Kubernetes) or taking --coordinator_address, --num_processes and --process_id.
The default mesh then spans every host's devices; only process 0 logs at INFO,
prints, and writes results, while Orbax coordinates the checkpoints, which
every process saves together.
"""
import importlib.util
import time
import os
import sys
from typing import Callable

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mu_jax import sharding
from mu_jax.errors import MuJaxError

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A config module (mu_jax.configs.digits_mlp) or file (configs/digits_mlp.py), '
    'optionally with ":key=value,..." arguments for its get_config(arg).', lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for cached models and results; defaults to '
    'runs/<config file name>.')
MULTIHOST = flags.DEFINE_bool(
    'multihost', os.environ.get('MU_JAX_MULTIHOST', '').lower() in ('1', 'true'),
    'Call jax.distributed.initialize() first (one process per host); default: '
    'the MU_JAX_MULTIHOST environment variable.')
COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'With --multihost where JAX cannot detect the '
    'cluster: host:port of process 0 (give --num_processes and --process_id too).')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'With --coordinator_address.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'With --coordinator_address.')


def default_workdir(config_argument: str) -> str:
  """runs/<config name> for 'configs/<name>.py[:key=value,...]' (after `resolve_config`):
  one per config file, so every forget request of a config shares its cached models."""
  path = config_argument.split(':')[0]
  return os.path.join('runs', os.path.splitext(os.path.basename(path))[0])


def workdir() -> str:
  """--workdir, or `default_workdir` of --config."""
  return WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def _one_line(error) -> str:
  return ' '.join(str(error).replace('"', "'").split())


def _config_errors(action: Callable):
  """Runs `action`, turning a config or flag mistake into one line and exit 1."""
  try:
    return action()
  except MuJaxError as e:
    _fail(str(e))
  except OSError as e:
    _fail(f'Cannot load the config file ({_one_line(e).split(" Attempted")[0]}); '
          'pass a config module or an existing config file to --config.')
  except KeyError as e:
    _fail(f'The config has no key {_one_line(e.args[0])}; check the override '
          'against the config file.')
  except (flags.Error, AttributeError, TypeError, ValueError) as e:
    _fail(f'Bad flag or config override: {_one_line(e)}.')


def start_distributed() -> None:
  """jax.distributed.initialize from the flags; then quiets every process but 0."""
  explicit = {'coordinator_address': COORDINATOR.value, 'num_processes': NUM_PROCESSES.value,
              'process_id': PROCESS_ID.value}
  given = {k: v for k, v in explicit.items() if v is not None}
  if given and len(given) < len(explicit):
    _fail('--coordinator_address, --num_processes and --process_id go together; '
          'give all three or none (to auto-detect the cluster).')
  jax.distributed.initialize(**given)
  if not sharding.is_primary():
    logging.set_verbosity(logging.WARNING)
    sys.stdout = open(os.devnull, 'w')
  logging.info('process %d of %d: %d local of %d devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def run(main: Callable[[], None], *, needs_config: bool = True) -> None:
  """Runs `main` under absl; a MuJaxError becomes one line on stderr and exit 1."""

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
    if needs_config:
      if CONFIG.value is None:
        raise app.UsageError('--config is required, e.g. --config=mu_jax.configs.digits_mlp')
      # A config file that failed to load leaves a placeholder that raises on use.
      _config_errors(lambda: CONFIG.value.keys())
    logging.set_verbosity(logging.INFO)
    # Orbax logs every save step at INFO; keep the console to mu_jax's progress.
    logging.get_absl_handler().addFilter(lambda record: 'orbax' not in record.pathname)
    if MULTIHOST.value:
      start_distributed()
    try:
      main()
    except MuJaxError as e:
      _fail(str(e))

  app.run(wrapped, flags_parser=_parse_flags)


def print_done(began: float, directory: str) -> None:
  """The last line of a command that wrote a run: its wall time (since `began`, a
  time.time()) and its folder."""
  print(f'\nwall time {time.time() - began:.1f}s; results in {directory}/')


def resolve_config(value: str) -> str:
  """A --config value with a module name ('mu_jax.configs.x:arg') turned into its file's path."""
  target, colon, arg = value.partition(':')
  if os.path.isfile(target):
    return value
  example = 'e.g. --config=mu_jax.configs.digits_mlp or --config=path/to/config.py'
  if target.endswith('.py') or os.sep in target:
    _fail(f'Config file {target} does not exist; pass a config module or file, {example}.')
  try:
    spec = importlib.util.find_spec(target)
  except (ImportError, ValueError):
    spec = None
  if spec is None or not (spec.origin or '').endswith('.py'):
    _fail(f'Config module {target} cannot be imported; pass a config module or file, {example}.')
  return spec.origin + colon + arg


def _parse_flags(argv: list[str]) -> list[str]:
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      argv[i] = '--config=' + resolve_config(arg.split('=', 1)[1])
    elif arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = resolve_config(argv[i + 1])
  return _config_errors(lambda: flags.FLAGS(argv))
