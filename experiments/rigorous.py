"""`mu-jax rigorous` from a checkout: python experiments/rigorous.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import cli, rigorous

if __name__ == '__main__':
  cli.run(rigorous.main)
