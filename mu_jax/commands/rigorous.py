"""`mu-jax rigorous`: N unlearned models per method against N oracles.

  mu-jax rigorous --config=mu_jax.configs.digits_rigorous
  mu-jax rigorous --config=mu_jax.configs.fashion_rigorous:forget=random:0.1
"""
import time

from mu_jax.commands import cli
from mu_jax.evaluation import mia_note
from mu_jax.experiments.rigorous import markdown_table, run_rigorous


def main():
  began = time.time()
  config, workdir = cli.CONFIG.value, cli.workdir()
  result = run_rigorous(config, workdir)
  rc = config.rigorous
  print(f"\n{config.data.source} / {config.model.name} / request {result['request']} / "
        f'scenario={rc.scenario} / {rc.num_models} models per side\n')
  print(markdown_table(result['rows']))
  print(f'\n{mia_note(config.eval)}')
  cli.print_done(began, result['directory'])


if __name__ == '__main__':
  cli.run(main)
