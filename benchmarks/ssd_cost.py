r"""What one SSD forget request costs against training, on the Fashion-MNIST CNN.

Measures in one process, on one machine: a training epoch of the CNN on the
55k training split (the first one with compilation, then a second, warm one;
each a `train_model` call with a 1-epoch copy of the config's recipe), SSD
cold (I_D and I_Df computed, empty cache), SSD with I_D cached (only the D_f
pass; compiled functions still warm from the cold run), and the full oracle
retraining: its recorded time, and warm epoch × --epochs_for_oracle as an
estimate. Original and oracle come from `prepare_setting` (trained and cached
in --workdir if missing, ~8 min on a 2-core CPU). Prints a Markdown table and
writes it as JSON to <workdir>/results/<forget request>/ssd_cost.json. Run:

  python benchmarks/ssd_cost.py --workdir=runs/fashion_mnist_cnn --forget=random:0.1
"""
import json
import os
import platform
import tempfile
import time

import jax
from absl import app, flags

from mu_jax.experiments import config_lib
from mu_jax.experiments.results import atomic_write
from mu_jax.experiments.benchmark import request_context, unlearn
from mu_jax.train import train_model
from mu_jax.experiments.setting import prepare_setting

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs',
                      'fashion_mnist_cnn.py')
COLD_EPOCHS = 2.0     # target: SSD cold < 2 training epochs
CACHED_EPOCHS = 0.3   # target: a request with I_D cached < 0.3 epoch (10% forget set)

_WORKDIR = flags.DEFINE_string('workdir', 'runs/fashion_mnist_cnn',
                               'Where the original and oracle are cached (trained if missing).')
_FORGET = flags.DEFINE_string('forget', 'random:0.1', 'The forget request.')
_EPOCHS_FOR_ORACLE = flags.DEFINE_integer(
    'epochs_for_oracle', None, 'Epochs in the oracle estimate; default: the config\'s.')


def _epoch_seconds(setting) -> float:
  """Wall time of one `train_model` epoch on D (its compile included the first time)."""
  recipe = setting.config.train.copy_and_resolve_references()
  recipe.epochs = 1
  return train_model(setting.task, recipe, setting.data.train, seed=setting.config.seed,
                     mesh=setting.mesh, name='epoch').train_seconds


def _machine() -> str:
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'load {os.getloadavg()[0]:.1f}, jax {jax.__version__} {jax.devices()}')


def _verdict(ratio: float, target: float) -> str:
  return f'{ratio:.2f} < {target} epoch(s): {"PASS" if ratio < target else "FAIL"}'


def main(argv):
  del argv
  began = time.perf_counter()
  config = config_lib.load_config_file(CONFIG, f'forget={_FORGET.value}')
  setting = prepare_setting(config, _WORKDIR.value)
  cold_epoch, warm_epoch = _epoch_seconds(setting), _epoch_seconds(setting)
  with tempfile.TemporaryDirectory() as cache_dir:
    ctx = request_context(setting, cache_dir)
    cold, cached = unlearn(setting, 'ssd', ctx), unlearn(setting, 'ssd', ctx)
  epochs = _EPOCHS_FOR_ORACLE.value or config.train.epochs
  oracle, estimate = setting.oracle.train_seconds, warm_epoch * epochs
  rows = [
      ('training epoch, cold (compile included)', cold_epoch, None),
      ('training epoch, warm', warm_epoch, None),
      ('SSD cold (I_D + I_Df)', cold.seconds, cold.info),
      ('SSD, I_D cached (I_Df only)', cached.seconds, cached.info),
      (f'oracle retraining, recorded ({setting.oracle.epochs} epochs on D_r)', oracle, None),
      (f'oracle retraining, estimate (warm epoch × {epochs})', estimate, None),
  ]
  table = [{'what': what, 'seconds': s, 'per_warm_epoch': s / warm_epoch,
            'per_oracle': s / oracle, 'per_oracle_estimate': s / estimate,
            **({'selected': int(info['selected']),
                'selected_fraction': info['selected_fraction']} if info else {})}
           for what, s, info in rows]
  machine = _machine()
  forget_share = len(setting.forget_idx) / len(setting.data.train)
  targets = {
      'ssd_cold_epochs': _verdict(cold.seconds / warm_epoch, COLD_EPOCHS),
      'ssd_cached_epochs': _verdict(cached.seconds / warm_epoch, CACHED_EPOCHS),
  }
  print(f'SSD cost, Fashion-MNIST CNN, forget={config.forget} '
        f'({len(setting.forget_idx)} of {len(setting.data.train)} = {forget_share:.1%})\n')
  print('| step | seconds | / warm epoch | / oracle | / oracle est. | selected params |')
  print('|---|---:|---:|---:|---:|---:|')
  for r in table:
    selected = (f'{r["selected"]} ({100 * r["selected_fraction"]:.2g}%)' if 'selected' in r else '')
    print(f'| {r["what"]} | {r["seconds"]:.2f} | {r["per_warm_epoch"]:.3f} | '
          f'{r["per_oracle"]:.4f} | {r["per_oracle_estimate"]:.4f} | {selected} |')
  print(f'\nmachine: {machine}')
  print(f'oracle: recorded when it was trained, in {setting.oracle.directory}; '
        'the estimate is warm epoch × epochs on D, not a measurement')
  print(f'target SSD cold: {targets["ssd_cold_epochs"]}')
  print(f'target SSD with I_D cached ({forget_share:.0%} forget set): '
        f'{targets["ssd_cached_epochs"]}')
  path = os.path.join(setting.results_dir, 'ssd_cost.json')
  atomic_write(path, json.dumps({
      'forget': config.forget, 'forget_size': int(len(setting.forget_idx)),
      'train_size': int(len(setting.data.train)), 'rows': table, 'targets': targets,
      'machine': machine, 'oracle_dir': setting.oracle.directory,
      'epochs_for_oracle_estimate': epochs}, indent=2) + '\n')
  print(f'wrote {path}; run took {time.perf_counter() - began:.0f}s')


if __name__ == '__main__':
  app.run(main)
