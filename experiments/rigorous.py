"""Rigorous evaluation: N unlearned models per method against N oracles.

  python experiments/rigorous.py --config=configs/digits_rigorous.py
  python experiments/rigorous.py --config=configs/fashion_rigorous.py:forget=random:0.1
"""
import time

from mu_jax.experiments import cli
from mu_jax.experiments.rigorous import markdown_table, run_rigorous


def main():
  began = time.perf_counter()
  config, workdir = cli.CONFIG.value, cli.workdir()
  result = run_rigorous(config, workdir)
  rc = config.rigorous
  print(f"\n{config.data.source} / {config.model.name} / request {result['request']} / "
        f'scenario={rc.scenario} / {rc.num_models} models per side\n')
  print(markdown_table(result['rows']))
  print(f"\nwall time {time.perf_counter() - began:.1f}s; results in {result['directory']}/")


if __name__ == '__main__':
  cli.run(main)
