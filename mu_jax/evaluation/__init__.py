"""Unlearning metrics: accuracies, MIA-efficacy, Avg. Gap, and result tables."""
from mu_jax.evaluation.metrics import accuracy, predict_logits, true_class_confidence
from mu_jax.evaluation.mia import mia_efficacy
from mu_jax.evaluation.report import (
    GAP_METRICS, TABLE_COLUMNS, atomic_write, avg_gap, evaluate_model, markdown_table,
    write_results)
# Rigorous evaluation (N vs N models); its other modules (klom, entropy_mia, relearn,
# worst_case, plots, rigorous) are imported by name.
from mu_jax.evaluation.challenge import challenge_score
from mu_jax.evaluation.margins import ensemble_outputs, margin
from mu_jax.evaluation.ulira import ulira_accuracy
