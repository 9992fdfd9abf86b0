"""Benchmark: original, oracle and every method of config.methods, as one table.

  python experiments/benchmark.py --config=configs/digits_mlp.py
  python experiments/benchmark.py --config=configs/fashion_mnist_cnn.py:forget=random:0.1
"""
import time

from mu_jax.experiments import cli
from mu_jax.experiments.benchmark import columns, run_benchmark
from mu_jax.experiments.results import markdown_table


def main():
  began = time.perf_counter()
  config, workdir = cli.CONFIG.value, cli.workdir()
  rows = run_benchmark(config, workdir)
  print(f'\n{config.data.source} / {config.model.name} / forget={config.forget}\n')
  print(markdown_table(rows, columns(config)))
  print(f'\nwall time {time.perf_counter() - began:.1f}s; results in {workdir}/results/')


if __name__ == '__main__':
  cli.run(main)
