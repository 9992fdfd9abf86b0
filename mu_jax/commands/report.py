"""`mu-jax report`: results pages and the leaderboard from runs' JSON.

  mu-jax report --add=runs/digits_mlp/results/class-0/latest   # copy a run into the store
  mu-jax report                                               # docs/runs -> docs/
  mu-jax report --readme=README.md                            # also the README's headline

A run added for a setting (kind, model, data set, request) replaces the
store's earlier run of that setting; with --part=LABEL (e.g. the methods a
second run added), only the setting's earlier run of that part.
"""
from absl import flags

from mu_jax.commands import cli
from mu_jax.experiments import report

NEEDS_CONFIG = False
STORE = flags.DEFINE_string('runs', 'docs/runs', "Folder of runs' JSON, one sub-folder per page.")
OUT = flags.DEFINE_string('out', 'docs', 'Where results/<page>.md and leaderboard.md go.')
ADD = flags.DEFINE_multi_string('add', [], 'Run folder (or its results.json) to copy into '
                                '--runs before rendering; repeatable.')
PART = flags.DEFINE_string('part', None, 'Label of the --add runs: each replaces only its '
                           "setting's run of the same part, shown as a table of its own.")
README = flags.DEFINE_string('readme', None, "A README whose '<!-- report: PAGE FORGET -->' "
                             'blocks get the headline table.')


def main():
  for run in ADD.value:
    print(f'added {report.add_run(run, STORE.value, PART.value)}')
  for path in report.write_report(STORE.value, OUT.value, README.value):
    print(f'wrote {path}')


if __name__ == '__main__':
  cli.run(main, needs_config=NEEDS_CONFIG)
