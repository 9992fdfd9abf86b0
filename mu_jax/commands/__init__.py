"""The `mu-jax` command: `mu-jax <command> --flag=value ...`, one absl app per command.

  mu-jax benchmark --config=mu_jax.configs.digits_mlp      # also: python -m mu_jax benchmark
  mu-jax benchmark --helpfull                              # every flag of a command

Each command is also a module of its own: `python -m mu_jax.commands.benchmark`.
"""
import importlib
import sys

from mu_jax.commands import cli

COMMANDS = {
    'train': 'train (or load) the original model and the oracle, and evaluate both',
    'unlearn': 'run one method (config.method) beside the original and the oracle',
    'benchmark': 'run every method of config.methods against the oracle, as one table',
    'rigorous': 'N unlearned models per method against N oracles (KLoM, U-LiRA, ...)',
    'ssd-alpha': "choose SSD's alpha for a request on a held-out part of the forget set",
    'report': 'generate the results pages and the leaderboard from runs\' JSON',
}


def usage() -> str:
  lines = ['usage: mu-jax <command> [--flag=value ...]', '', 'commands:']
  lines += [f'  {name:<10} {text}' for name, text in COMMANDS.items()]
  lines += ['', 'mu-jax <command> --help lists the flags of a command.']
  return '\n'.join(lines)


def main() -> None:
  """Dispatches `mu-jax <command> ...` to the command's absl app."""
  if len(sys.argv) < 2 or sys.argv[1] in ('-h', '--help', 'help'):
    print(usage())
    sys.exit(0 if len(sys.argv) >= 2 else 2)
  command = sys.argv[1]
  if command not in COMMANDS:
    print(f'error: unknown command {command!r}; valid commands are: {", ".join(COMMANDS)}.',
          file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(f'mu_jax.commands.{command.replace("-", "_")}')
  sys.argv = [f'mu-jax {command}', *sys.argv[2:]]
  cli.run(module.main, needs_config=getattr(module, 'NEEDS_CONFIG', True))
