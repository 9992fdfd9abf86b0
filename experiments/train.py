"""Train (or load from the workdir cache) the original model and the oracle.

  python experiments/train.py --config=configs/fashion_mnist_cnn.py:forget=class:0
"""
from mu_jax import cli
from mu_jax.evaluation import markdown_table
from mu_jax.train import train_and_evaluate


def main():
  results = train_and_evaluate(cli.CONFIG.value, cli.workdir())
  print(markdown_table([{'method': role, **metrics} for role, metrics in results.items()]))


if __name__ == '__main__':
  cli.run(main)
