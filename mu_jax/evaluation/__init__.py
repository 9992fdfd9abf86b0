"""Unlearning metrics: per-example statistics, the task's metrics, MIA-efficacy, Avg. Gap.

The N-vs-N metrics (klom, ulira, challenge, entropy_mia, margins) and the
attacks (relearn, worst_case) are imported by module name.
"""
from mu_jax.evaluation.metrics import predict_outputs, split_statistics
from mu_jax.evaluation.mia import mia_efficacy
from mu_jax.evaluation.report import (GAP_METRICS, avg_gap, evaluate_model, mia_note,
                                      table_columns)
