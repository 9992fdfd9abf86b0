"""`python -m mu_jax <command> ...`: the same as the `mu-jax` command."""
from mu_jax.commands import main

main()
