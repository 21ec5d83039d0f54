"""Evaluation: metrics, protocols and baselines."""
