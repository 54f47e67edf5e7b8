"""The statistics of simulations/campaigns/statistics.py (finite-D rows, the extrapolation to D → ∞, the
control-variate mean, the tidy table) on synthetic inputs with known answers."""

import math

import numpy as np
import pytest

from simulations.campaigns.statistics import comparison_rows, extrapolate, gap_shrinks


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


# --------------------------------------------------------------------------- the tidy table

def _synthetic(a=1.3, b=-4.0, eps=0.01, Ds=(50, 100, 200, 400)):
    """Two seeds per D at a + b/D ± eps: mean a + b/D exactly, s.e. = eps (std(ddof=1) = eps·√2, /√2)."""
    return {D: [a + b / D + eps, a + b / D - eps] for D in Ds}


def test_comparison_table_rows_have_the_known_statistics():
    from simulations.campaigns.statistics import comparison_table

    a, b, th = 1.3, -4.0, 1.25
    table = comparison_table({"x": th, "y": 2.0}, {"x": _synthetic(a, b), "y": _synthetic(2.0, 1.0)},
                             theory_se={"x": 0.02})
    assert table.metrics == ["x", "y"]
    rows = table.rows_of("x")
    assert [r.D for r in rows] == [50, 100, 200, 400]
    for r in rows:
        expected_mean = a + b / r.D
        assert r.mean == pytest.approx(expected_mean, abs=1e-12)
        assert r.se == pytest.approx(0.01, rel=1e-9)
        assert r.gap == pytest.approx(expected_mean - th, abs=1e-12)
        assert r.z == pytest.approx((expected_mean - th) / 0.01, rel=1e-9)
        assert r.n == 2
    ex = table.extrapolation_of("x")
    assert ex.value == pytest.approx(a, abs=1e-10) and ex.slope == pytest.approx(b, abs=1e-7)
    assert ex.theory_se == 0.02 and ex.z == pytest.approx((a - th) / np.hypot(ex.se, 0.02), rel=1e-9)
    # the intercept's s.e. of an equal-weight straight-line fit: s·√(Σx²/(nΣx² − (Σx)²)), s = 0.01
    x = 1.0 / np.array([50, 100, 200, 400.0])
    n = len(x)
    assert ex.se == pytest.approx(0.01 * np.sqrt((x @ x) / (n * (x @ x) - x.sum() ** 2)), rel=1e-9)
    assert table.extrapolation_of("y").value == pytest.approx(2.0, abs=1e-10)
    assert table.extrapolation_of("y").agrees()


def test_comparison_table_records_csv_and_plot(tmp_path):
    import csv

    from simulations.campaigns.comparison_plots import plot_comparison
    from simulations.campaigns.statistics import comparison_table

    table = comparison_table({"x": 1.0}, {"x": _synthetic(1.0, 2.0)})
    recs = table.records()
    assert [r["kind"] for r in recs] == ["simulation"] * 4 + ["extrapolation"]
    assert recs[-1]["D"] == float("inf") and recs[-1]["agrees"] and recs[-1]["gap_shrinks"]
    table.write_csv(tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and float(rows[0]["mean"]) == pytest.approx(1.0 + 2.0 / 50)
    plot_comparison(table, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000
    seven = comparison_table({f"m{i}": 1.0 for i in range(7)}, {f"m{i}": _synthetic(1.0, 2.0) for i in range(7)})
    fig = plot_comparison(seven, tmp_path / "seven.png", per_row=5)  # 2 blocks of 2 rows, 3 panels hidden
    assert sum(ax.get_visible() for ax in fig.axes) == 2 * 7
    assert "extrapolation" not in table.format() and "agrees" in table.format()


def test_comparison_table_rejects_metrics_without_theory():
    from simulations.campaigns.statistics import comparison_table

    with pytest.raises(ValueError, match="no theory value"):
        comparison_table({"x": 1.0}, {"x": _synthetic(), "z": _synthetic()})


def test_control_variate_removes_a_known_linear_dependence():
    """y = 2 + 3(c − 1) + small noise with E[c] = 1: the control-variate mean is 2 within its s.e. even when
    the seeds' c̄ is far from 1 (where the plain mean is biased by 3(c̄ − 1)); s.e. formula checked against
    the spread over repetitions (Monte Carlo: 2000 repetitions, tolerance 10 % on the s.e.)."""
    from simulations.campaigns.statistics import control_variate_mean_se

    rng = np.random.default_rng(0)
    est, ses = [], []
    for _ in range(2000):
        c = 1 + 0.2 * rng.standard_normal(8)
        y = 2 + 3 * (c - 1) + 0.05 * rng.standard_normal(8)
        v, se, n = control_variate_mean_se(y, c, 1.0)
        est.append(v)
        ses.append(se)
    est, ses = np.array(est), np.array(ses)
    assert n == 8 and abs(est.mean() - 2) < 4 * est.std() / np.sqrt(est.size)
    assert np.sqrt(np.mean(ses ** 2)) == pytest.approx(est.std(), rel=0.1)
    assert est.std() < 0.3 * 3 * 0.2 / np.sqrt(8)  # far below the plain mean's spread 3·0.2/√8
    with pytest.raises(ValueError, match="control"):
        control_variate_mean_se([1.0, 2.0], [1.0, 1.1], 1.0)


def test_bounded_metrics_and_few_seeds_are_flagged():
    """An alignment whose simulations extrapolate to 1.22 (above the range [0, 1] of a cosine) is 'out of range',
    never 'agrees', even with a theory of 1.22; 2 seeds per D are flagged (``few_seeds``, a note in the table,
    a warning on stderr from the ``convergence`` command)."""
    from simulations.campaigns.statistics import comparison_table, metric_bounds

    assert metric_bounds("finetune.alignment") == (0.0, 1.0) and metric_bounds("pretrain.m") == (-math.inf, math.inf)
    table = comparison_table({"finetune.alignment": 1.2251}, {"finetune.alignment": _synthetic(1.2251, -4.0, eps=0.001)})
    assert table.few_seeds == [50, 100, 200, 400]
    e = table.extrapolation_of("finetune.alignment")
    assert e.out_of_range() and not e.agrees()
    text = table.format()
    assert "OUT OF RANGE" in text and "fewer than 8 seeds" in text
