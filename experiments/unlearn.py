"""`mu-jax unlearn` from a checkout: python experiments/unlearn.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import unlearn

if __name__ == '__main__':
  unlearn.run()
