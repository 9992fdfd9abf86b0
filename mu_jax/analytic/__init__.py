"""Closed-form heads on frozen features with exact recursive (Woodbury) up/down-dates."""
from mu_jax.analytic.ridge import (
    CHUNK_SIZE, GAMMA, RidgeState, check_forget, check_learn, closed_form, downdate, forget,
    init, learn, learned_ids, one_hot)
