"""`mu-jax train`: train (or load from the workdir cache) the original model and the oracle.

  mu-jax train --config=mu_jax.configs.fashion_mnist_cnn:forget=class:0
"""
from mu_jax.commands import cli
from mu_jax.experiments.benchmark import columns
from mu_jax.experiments.results import markdown_table
from mu_jax.experiments.setting import train_and_evaluate


def main():
  config = cli.CONFIG.value
  results = train_and_evaluate(config, cli.workdir())
  rows = [{'method': role, **metrics} for role, metrics in results.items()]
  print(markdown_table(rows, columns(config)[:-3]))


if __name__ == '__main__':
  cli.run(main)
