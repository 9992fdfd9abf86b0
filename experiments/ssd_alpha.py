"""`mu-jax ssd-alpha` from a checkout: python experiments/ssd_alpha.py --config=configs/<name>.py[:args]"""
from mu_jax.commands import cli, ssd_alpha

if __name__ == '__main__':
  cli.run(ssd_alpha.main)
