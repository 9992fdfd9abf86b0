"""Curvature and attribution: diagonal importances (Fisher), HVPs and inverse HVPs."""
from mu_jax.influence.fisher import ESTIMATORS, importance
from mu_jax.influence.hvp import (
    TaskLossSum, conjugate_gradient, hvp, lissa, mean_gradient, mean_hvp)
