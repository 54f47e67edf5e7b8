"""The campaign driver of simulations/campaigns/validation.py: setting selection and the report, on a toy
model whose simulation mean is known (``x = a + 1/D`` plus seed noise), so the verdict is predictable; the
replicated theory's mean and Monte Carlo spread."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulations.campaigns.validation import replicate_theory, run_campaign

SETTINGS = [dict(activation="identity", a=1.0), dict(activation="identity", a=2.0)]


def toy_point(D, seed, activation, a):
    """``x = a + 1/D + c + small noise`` with a control ``c`` of known mean 0 (the role of ρ_v − 1)."""
    rng = np.random.default_rng(1000 * D + seed)
    c = 0.1 * rng.standard_normal()
    return {"x": a + 1.0 / D + c + 1e-4 * rng.standard_normal(), "c": c}


def toy_theory(setting, seed=0):
    return {"x": setting["a"], "converged": True, "residual": 0.0, "seconds": 0.0}


def _run(tmp_path, *extra, control=None):
    return run_campaign(["--out", str(tmp_path / "out"), "--report", str(tmp_path / "report.md"),
                         "--figures", str(tmp_path / "fig"), "--D", "20", "40", "80", "--seeds", "3",
                         "--mc-replicas", "1", *extra],
                        settings=SETTINGS, quick_settings=SETTINGS[:1], point_fn=toy_point, theory_fn=toy_theory,
                        metrics=("x",), plot_metrics=("x",), title="toy", default_out="unused",
                        default_report="unused", figure_prefix="toy", control=control)


def test_settings_option_runs_only_the_chosen_settings(tmp_path):
    _run(tmp_path, "--settings", "1", "--figure-prefix", "chosen")
    points = [json.loads(p.read_text())["point"] for p in (tmp_path / "out").glob("*.json")]
    assert len(points) == 9 and {p["a"] for p in points} == {2.0}
    report = (tmp_path / "report.md").read_text()
    assert "a=2.0" in report and "a=1.0" not in report
    assert "agrees" in report and "disagrees" not in report  # the toy's 1/D extrapolation is exact
    assert (tmp_path / "fig" / "chosen_identity.png").exists()


def test_control_variate_rows_and_figure(tmp_path):
    """With the control, the adjusted rows remove c's seed spread (s.e. ~1e-4 instead of ~0.06)."""
    _run(tmp_path, "--settings", "0", control=("c", 0.0))
    summary = json.loads((tmp_path / "out" / "summary" / "summary.json").read_text())
    adjusted = [r for r in summary if r["metric"] == "x|c"][0]
    plain = [r for r in summary if r["metric"] == "x"][0]
    assert max(r["se"] for r in adjusted["rows"]) < 0.01 < min(r["se"] for r in plain["rows"])
    assert adjusted["agrees"]
    assert (tmp_path / "fig" / "toy_identity.png").exists()


def test_settings_option_rejects_an_unknown_index(tmp_path):
    with pytest.raises(SystemExit):
        _run(tmp_path, "--settings", "2")


def test_plot_metrics_option_rejects_an_unknown_metric(tmp_path):
    with pytest.raises(SystemExit):
        _run(tmp_path, "--plot-metrics", "y")


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
