"""Evaluation: image-quality metrics and the super-resolution baselines."""
