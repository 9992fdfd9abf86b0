"""`mu-jax train` from a checkout: python experiments/train.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import train

if __name__ == '__main__':
  train.run()
