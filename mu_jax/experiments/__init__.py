"""The experiment layer: settings, benchmark, rigorous evaluation, results, the CLI.

Everything here sits on top of the core (tasks, data, models, methods,
influence, analytic heads, ensembles, evaluation metrics, sharding,
checkpoints); no core module imports this package.
"""
