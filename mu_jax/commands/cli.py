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
import signal
import time
import os
import sys
from typing import Callable

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mu_jax import checkpoint, compilation, files, host_memory, sharding
from mu_jax.errors import MuJaxError
from mu_jax.experiments import config_lib, validation

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
DISCARD_DAMAGED = flags.DEFINE_bool(
    'discard_damaged', False, 'Delete a cached model or statistics checkpoint that cannot be '
    'read (garbled or truncated files) and make it again; without it such a checkpoint '
    'is refused, never loaded.')

COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', None, 'Folder of the persistent XLA compilation cache, so a later '
    'command compiles nothing an earlier one did; default <workdir>/xla_cache (or '
    '$JAX_COMPILATION_CACHE_DIR); "none" turns it off.')
REUSE_FREED_MEMORY = flags.DEFINE_bool(
    'reuse_freed_memory', True, "Keep XLA:CPU's per-step temporaries mapped between steps "
    '(glibc malloc settings, mu_jax.host_memory): fewer page faults, a resident size that '
    'stays at its peak.')


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


def _config_errors(action: Callable, argv: list[str] = ()):
  """Runs `action`, turning a config or flag mistake into one line and exit 1; a
  failed `--config.<key>=<value>` of `argv` is named with what the key allows."""
  try:
    return action()
  except MuJaxError as e:
    _fail(str(e))
  except SyntaxError as e:
    _fail(f'Cannot load the config: {e.filename} has a syntax error at line {e.lineno} '
          f'({e.msg}); fix the file.')
  except OSError as e:
    _fail(f'Cannot load the config file ({_one_line(e).split(" Attempted")[0]}); '
          'pass a config module or an existing config file to --config.')
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = _override_error(argv)
    if message:
      _fail(message)
    if isinstance(e, KeyError):
      _fail(f'The config has no key {_one_line(e.args[0])}; check the override '
            'against the config file.')
    _fail(f'Bad flag or config override: {_one_line(e)}.')


def _overrides(argv: list[str]):
  """(key path, value) of each `--config.<path>=<value>`; the value is None for
  `--config.<path> <value>`, whose value cannot be told from the next flag."""
  for arg in argv:
    if arg.startswith('--config.'):
      path, sep, value = arg[len('--config.'):].partition('=')
      yield path, value if sep else None


def _override_error(argv: list[str]) -> str | None:
  """The first override of `argv` that the --config of `argv` cannot take, as a
  sentence; None when none is at fault (or the config itself does not load)."""
  given = [a.split('=', 1)[1] if a.startswith('--config=') else argv[i + 1]
           for i, a in enumerate(argv)
           if a.startswith('--config=') or (a == '--config' and i + 1 < len(argv))]
  if not given:
    return None
  try:
    config = config_lib.load_config_file(*given[-1].split(':', 1))
    for path, value in _overrides(argv):
      message = validation.override_error(config, path, value)
      if message:
        return message
  except Exception:   # the config failed to load: the caller's generic sentence stands
    return None
  return None


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
  """Runs `main` under absl; a MuJaxError or a failed write becomes one line on stderr and
  exit 1, Ctrl-C (or SIGTERM) one line and exit 130 (143), leaving a rerun to resume."""

  def wrapped(argv):
    if REUSE_FREED_MEMORY.value:
      host_memory.reuse_freed_memory()
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
    signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _without_closed_loop_noise
    try:
      if MULTIHOST.value:
        start_distributed()
      if needs_config and sharding.is_primary():
        files.check_workdir(workdir())
      if needs_config and COMPILATION_CACHE.value != 'none':
        compilation.enable(COMPILATION_CACHE.value or os.path.join(workdir(), 'xla_cache'))
      with checkpoint.discarding_damaged(DISCARD_DAMAGED.value):
        main()
    except MuJaxError as e:
      _quiet_teardown()
      _fail(str(e))
    except OSError as e:   # a failed write outside the library's own error handling
      if e.errno not in files.WRITE_ERRNOS:
        raise
      _quiet_teardown()
      where = e.filename or (workdir() if needs_config else os.getcwd())
      _fail(str(files.write_error(e, where, "the run's files")))
    except KeyboardInterrupt as e:
      _quiet_teardown()
      print(f'{e.args[0] if e.args else "interrupted"}; rerun the same command to resume',
            file=sys.stderr)
      sys.exit(143 if e.args else 130)

  app.run(wrapped, flags_parser=_parse_flags)


def _terminate(signum, frame):
  """SIGTERM unwinds like Ctrl-C (partial run folders are removed on the way out)."""
  raise KeyboardInterrupt('terminated')


def _without_closed_loop_noise(unraisable) -> None:
  """Drops what Orbax's TensorStore callbacks raise into the void once a failed read or
  write has closed their event loop; anything else is printed as usual."""
  error = unraisable.exc_value
  if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
    sys.__unraisablehook__(unraisable)


def _quiet_teardown() -> None:
  """Keeps a failed run's exit to its one line: work still pending in background threads
  (e.g. Orbax's writes) may raise into the void while the interpreter shuts down."""
  sys.unraisablehook = lambda unraisable: None


def print_done(began: float, directory: str) -> None:
  """The last line of a command that wrote a run: its wall time (since `began`, a
  time.time()) and its folder."""
  print(f'\nwall time {time.time() - began:.1f}s; results in {directory}/')


def resolve_config(value: str) -> str:
  """A --config value with a module name ('mu_jax.configs.x:arg') turned into its file's path."""
  target, colon, arg = value.partition(':')
  if os.path.isfile(target):
    _config_errors(lambda: config_lib.check_config_file(target))
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
  _config_errors(lambda: config_lib.check_config_file(spec.origin))
  return spec.origin + colon + arg


def _parse_flags(argv: list[str]) -> list[str]:
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      argv[i] = '--config=' + resolve_config(arg.split('=', 1)[1])
    elif arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = resolve_config(argv[i + 1])
  parsed = _config_errors(lambda: flags.FLAGS(argv), argv)
  # Every value checked before any work (a command without --config has none).
  _config_errors(lambda: CONFIG.value is None or validation.check_config(CONFIG.value))
  return parsed
