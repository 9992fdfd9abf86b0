"""mu_jax: machine unlearning as pure, compiled JAX functions, measured against the oracle."""
__version__ = '0.1.0'
