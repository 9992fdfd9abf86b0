"""Data sets, train/val/test splits and forget-set selection for unlearning."""
from mu_jax.data.examples import Examples, concat
from mu_jax.data.forget import save_indices, select_forget
from mu_jax.data.splits import Dataset, load_dataset
