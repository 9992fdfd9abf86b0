"""The shipped experiment configs: `--config=mu_jax.configs.<name>` or a path to the file."""
