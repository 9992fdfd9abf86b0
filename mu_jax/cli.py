"""What the absl mains share: the config flag, the workdir flag, clean errors."""
import os
import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from mu_jax.errors import MuJaxError

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a configs/*.py file, optionally with ":key=value,..." '
    'arguments for its get_config(arg).', lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for cached models and results; defaults to '
    'runs/<config file name>.')


def workdir() -> str:
  """--workdir, or runs/<config name> beside the current directory."""
  if WORKDIR.value:
    return WORKDIR.value
  path = flags.FLAGS['config'].config_filename
  return os.path.join('runs', os.path.splitext(os.path.basename(path))[0])


def run(main: Callable[[], None]) -> None:
  """Runs `main` under absl; a MuJaxError becomes one line on stderr and exit 1."""

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
    if CONFIG.value is None:
      raise app.UsageError('--config is required, e.g. --config=configs/digits_mlp.py')
    logging.set_verbosity(logging.INFO)
    try:
      main()
    except MuJaxError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)
