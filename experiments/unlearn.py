"""`mu-jax unlearn` from a checkout: python experiments/unlearn.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import cli, unlearn

if __name__ == '__main__':
  cli.run(unlearn.main)
