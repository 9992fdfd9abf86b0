"""Differential privacy: DP-SGD's privatised gradient and its Rényi-DP accountant."""
