"""`mu-jax benchmark` from a checkout: python experiments/benchmark.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import cli, benchmark

if __name__ == '__main__':
  cli.run(benchmark.main)
