"""Run one unlearning method (config.method) on the cached original model.

  python experiments/unlearn.py --config=configs/digits_mlp.py:method=rl,forget=random:0.1
"""
from mu_jax.experiments import cli
from mu_jax.experiments.benchmark import columns, unlearn_and_evaluate
from mu_jax.experiments.results import markdown_table
from mu_jax.methods import create_method
from mu_jax.experiments import config_lib
from mu_jax.experiments.setting import evaluate_on_setting, prepare_setting


def main():
  config = cli.CONFIG.value
  create_method(config.method, **config_lib.method_hparams(config, config.method))
  setting = prepare_setting(config, cli.workdir())
  oracle = evaluate_on_setting(setting, setting.oracle.variables)
  row = unlearn_and_evaluate(setting, config.method, oracle)
  print(markdown_table([row], columns(config)))


if __name__ == '__main__':
  cli.run(main)
