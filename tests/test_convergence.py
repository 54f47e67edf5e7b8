"""The convergence runner of simulations/campaigns/convergence.py (``run_comparison``): simulations at
growing D, the table against the theory, and a resumed rerun."""

import pytest


def test_run_comparison_tabulates_and_resumes(tmp_path):
    """The runner on a fake simulation with a known D → ∞ limit (tests/resumable_helpers.py); a rerun
    simulates nothing (its point function would raise)."""
    import resumable_helpers
    from simulations.campaigns.convergence import run_comparison

    setting = dict(a=1.0, b=-2.0, theory=0.9)
    res = run_comparison(setting, [20, 40, 80], [0, 1], out_dir=tmp_path, metrics=["x"], progress=False,
                         theory_fn=resumable_helpers.fake_theory, point_fn=resumable_helpers.fake_simulation)
    table = res["table"]
    assert [r.D for r in table.rows] == [20, 40, 80]
    assert table.rows[0].mean == pytest.approx(1.0 - 2.0 / 20) and table.rows[0].se == pytest.approx(0.01)
    ex = table.extrapolation_of("x")
    assert ex.value == pytest.approx(1.0, abs=1e-10) and ex.theory == 0.9 and not ex.agrees()
    for key in ("csv", "json", "png"):
        assert res["paths"][key].exists()

    def fail(**kw):
        raise AssertionError("recomputed a finished point")

    again = run_comparison(setting, [20, 40, 80], [0, 1], out_dir=tmp_path, metrics=["x"], progress=False,
                           theory_fn=resumable_helpers.fake_theory, point_fn=fail)
    assert again["table"].records() == table.records()
