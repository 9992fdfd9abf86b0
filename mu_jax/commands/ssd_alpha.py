"""`mu-jax ssd-alpha`: SSD's α for a setting, the largest α that forgets a held-out part of D_f.

  mu-jax ssd-alpha --config=mu_jax.configs.fashion_mnist_cnn:forget=class:0

Runs `mu_jax.methods.ssd.select_alpha` on the cached original model with the
config's SSD hyper-parameters (the official loaders' batches with
--config.unlearn.ssd.order=reference) and prints every α tried. Without
--target_forget_acc the target follows the request: for a whole class, 5% (an
oracle misclassifies every row of a class it never saw, forget accuracy 0; on
Fashion-MNIST class 0 no α keeps retain accuracy within 1 point below 3%);
otherwise the original's test accuracy (an oracle's
accuracy on rows it never saw is about its test accuracy; the original's
stands in, as the oracle is unknown when a request arrives).
"""
import json
import os
import time

from absl import flags

from mu_jax.commands import cli
from mu_jax.experiments import config_lib, runs
from mu_jax.experiments.benchmark import request_context
from mu_jax.errors import MuJaxError
from mu_jax.experiments.results import atomic_write, markdown_table
from mu_jax.methods import ssd
from mu_jax.experiments.setting import evaluate_on_setting, prepare_setting

TARGET = flags.DEFINE_float('target_forget_acc', None,
                            'Held-out forget accuracy (percent) to reach; default: see above.')
TOLERANCE = flags.DEFINE_float('retain_tolerance', 1.0,
                               'Largest allowed drop of retain accuracy, in points.')
CLASS_TARGET = 5.0


def main():
  started = time.time()
  config = cli.CONFIG.value
  hp = config_lib.method_hparams(config, 'ssd')
  setting = prepare_setting(config, cli.workdir())
  target = TARGET.value
  if target is None:
    target = (CLASS_TARGET if config.forget.startswith('class:')
              else evaluate_on_setting(setting, setting.original.variables)['TA'])
  chosen = ssd.select_alpha(
      setting.original.variables, request_context(setting), target_forget_acc=target,
      retain_tolerance=TOLERANCE.value, dampening_constant=hp['dampening_constant'],
      estimator=hp['estimator'], layers=hp['layers'], order=hp['order'],
      batch_size=hp['batch_size'])
  print(markdown_table(chosen.trials, ('alpha', 'selected', 'forget_acc', 'retain_acc')))
  with runs.new_run(os.path.join(setting.request_dir, 'ssd-alpha'), config) as run:
    atomic_write(os.path.join(run.path, 'ssd_alpha.json'), json.dumps(
        {'alpha': chosen.alpha, 'target_forget_acc': target,
         'retain_tolerance': TOLERANCE.value, 'trials': chosen.trials,
         'config': config.to_dict(), 'provenance': runs.provenance(started)}, indent=2) + '\n')
  goal = (f'held-out forget accuracy <= {target:.2f}% with retain accuracy within '
          f'{TOLERANCE.value} points')
  if chosen.alpha is None:
    raise MuJaxError(f'No alpha tried reached {goal}; see the table, and relax the target '
                     'or the tolerance.')
  print(f'\nalpha = {chosen.alpha} ({goal})')


if __name__ == '__main__':
  cli.run(main)
