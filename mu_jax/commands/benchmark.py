"""`mu-jax benchmark`: original, oracle and every method of config.methods, as one table.

  mu-jax benchmark --config=mu_jax.configs.digits_mlp
  mu-jax benchmark --config=mu_jax.configs.fashion_mnist_cnn:forget=random:0.1
  mu-jax benchmark --config=mu_jax.configs.tofu_lm:forget=forget10
"""
import time

from mu_jax.commands import cli
from mu_jax.evaluation import mia_note
from mu_jax.experiments.benchmark import columns, run_benchmark
from mu_jax.experiments.results import markdown_table
from mu_jax.tasks import LanguageModel


def main():
  began = time.time()
  config, workdir = cli.CONFIG.value, cli.workdir()
  result = run_benchmark(config, workdir)
  print(f'\n{config.data.source} / {config.model.name} / forget={config.forget}\n')
  print(markdown_table(result['rows'], columns(config)))
  if config.task != LanguageModel.name:
    print(f'\n{mia_note(config.eval)}')
  cli.print_done(began, result['directory'])


if __name__ == '__main__':
  cli.run(main)
