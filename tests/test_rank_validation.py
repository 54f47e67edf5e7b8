"""The extrapolations of simulations/campaigns/rank_validation.py on synthetic runs with a known D → ∞ value."""

import numpy as np
import pytest


def test_extrapolations_recover_a_known_limit():
    """Runs y = 0.5 + 2/D + 0.3·x + noise (x a covariate with mean O(D^{-1/2}) like λ_max(ρ_V) − 1, noise s.d.
    0.01, 200 runs per D): the control-variate fit recovers 0.5 within 3 s.e. while the plain 1/D fit, which
    cannot absorb the D^{-1/2} term, is biased by more than 3 s.e.; the verdict rule is 3 s.e. or 3 %."""
    from simulations.campaigns.rank_validation import extrapolations, verdict

    rng = np.random.default_rng(0)
    runs = []
    for D in (50, 100, 200, 400):
        x = np.abs(rng.standard_normal(200)) * 2 / np.sqrt(D)
        y = 0.5 + 2 / D + 0.3 * x + 0.01 * rng.standard_normal(200)
        runs += [(D, a, b) for a, b in zip(y, x)]
    ex = extrapolations(runs)
    a, se, c = ex["control_variate"]
    assert abs(a - 0.5) < 3 * se and c == pytest.approx(0.3, abs=0.05)
    a1, se1 = ex["inverse_D"]
    assert abs(a1 - 0.5) > 3 * se1
    assert set(ex["per_D"]) == {50, 100, 200, 400} and ex["per_D"][50][2] == 200
    assert verdict(0.51, (0.5, 0.001)) and not verdict(0.6, (0.5, 0.001))
