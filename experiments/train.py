"""`mu-jax train` from a checkout: python experiments/train.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import cli, train

if __name__ == '__main__':
  cli.run(train.main)
