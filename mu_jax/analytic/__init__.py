"""Closed-form heads on frozen features with exact recursive (Woodbury) up/down-dates."""
from mu_jax.analytic.ridge import (
    CHUNK_SIZE, GAMMA, RidgeState, closed_form, forget, init, learn, one_hot)
