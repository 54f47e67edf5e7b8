"""The Bayes-optimal baseline of state_evolution/bayes_optimal.py (docs/theory.md §3): a lower bound on the
ERM error, monotone in the sample ratio."""

import pytest

from state_evolution import bayes_optimal, solve_pretraining


def test_bayes_optimal_is_a_lower_bound_and_monotone():
    errs = [bayes_optimal(a, activation="identity", delta=0.5).mmse for a in (0.02, 0.1, 0.5)]
    assert errs[0] > errs[1] > errs[2] > 0
    for a in (0.02, 0.1, 0.5):
        erm = min(solve_pretraining(a, 0.5, lam, activation="identity").mse_S for lam in (0.01, 0.05, 0.2))
        assert bayes_optimal(a, activation="identity", delta=0.5).mmse <= erm
    # noiseless softmax: more samples, smaller error; 2α(K−1) ≥ 1 measurement per unknown → exact recovery
    s = [bayes_optimal(a).mmse for a in (0.01, 0.03, 0.1)]
    assert s[0] > s[1] > s[2] and s[2] < 1e-6
    with pytest.raises(ValueError, match="delta"):
        bayes_optimal(0.1, delta=0.5)
