"""Monte Carlo sizes shared by the state-evolution tests."""

FAST = dict(n_samples=2 ** 12, n_test_samples=2 ** 15)
"""Keyword arguments of the Monte Carlo channels: 2^12 training and 2^15 test samples (fast, for tests)."""
