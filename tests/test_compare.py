"""The comparison layer's statistics on synthetic inputs with known answers."""

import numpy as np
import pytest

from simulations.validation import replicate_theory
from solvable_attention.compare import comparison_rows, extrapolate, gap_shrinks


def test_extrapolation_recovers_a_known_line_and_z_uses_the_theory_error():
    # noiseless data on a + b/D: the fit is exact, the intercept is a
    a, b = 1.3, -4.0
    by_D = {D: [a + b / D + e for e in (-0.01, 0.01)] for D in (50, 100, 200, 400)}
    rows = comparison_rows("x", 1.25, by_D)
    assert [r.D for r in rows] == [50, 100, 200, 400]
    assert rows[0].se == pytest.approx(0.01)  # std(ddof=1) of ±0.01 is 0.01·√2; over √2 samples
    ex = extrapolate(rows, 1.0)
    assert ex.value == pytest.approx(a, abs=1e-12) and ex.slope == pytest.approx(b, abs=1e-9)
    assert ex.chi2_dof == pytest.approx(0.0, abs=1e-20)
    # theory 1.25 is 0.05 away: 3.85 % off, and many s.e. away without a theory error ...
    assert not ex.agrees()
    # ... but within 3 combined s.e. when the theory's own Monte Carlo error is 0.02
    ex_mc = extrapolate(rows, 1.0, theory_se=0.02)
    assert ex_mc.combined_se == pytest.approx(np.hypot(ex.se, 0.02))
    assert abs(ex_mc.z) < 3 and ex_mc.agrees()
    assert gap_shrinks(comparison_rows("x", a, by_D))


def test_replicate_theory_averages_and_reports_the_spread():
    def fake(setting, seed):
        return {"q": 1.0 + 0.1 * seed, "converged": seed != 2, "residual": 1e-9 * (seed + 1), "seconds": 1.0,
                "name": "x"}

    out = replicate_theory(fake, {}, 4)
    q = 1.0 + 0.1 * np.arange(4)
    assert out["q"] == pytest.approx(q.mean())
    assert out["q_mc_se"] == pytest.approx(q.std(ddof=1) / 2)
    assert out["converged"] is False and out["residual"] == pytest.approx(4e-9) and out["seconds"] == 4.0
    assert out["name"] == "x" and out["mc_replicas"] == 4
    assert replicate_theory(fake, {}, 1)["q_mc_se"] == 0.0
