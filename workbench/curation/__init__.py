"""Shaping a dataset: balance the category mix, leakage-free splits, drift between versions."""
