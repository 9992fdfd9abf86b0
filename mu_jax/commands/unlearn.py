"""`mu-jax unlearn`: one method (config.method) on the cached original, beside the oracle.

  mu-jax unlearn --config=mu_jax.configs.digits_mlp:method=rl,forget=random:0.1
"""
import time

from mu_jax.commands import cli
from mu_jax.experiments.benchmark import columns, run_benchmark
from mu_jax.experiments.results import markdown_table


def main():
  began = time.time()
  config = cli.CONFIG.value
  result = run_benchmark(config, cli.workdir(), methods=[config.method])
  print(markdown_table(result['rows'], columns(config)))
  cli.print_done(began, result['directory'])


if __name__ == '__main__':
  cli.run(main)
