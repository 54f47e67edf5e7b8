"""The campaign driver of simulations/validation.py: setting selection and the report, on a toy model
whose simulation mean is known (``x = a + 1/D`` plus seed noise), so the verdict is predictable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulations.validation import run_campaign

SETTINGS = [dict(activation="identity", a=1.0), dict(activation="identity", a=2.0)]


def toy_point(D, seed, activation, a):
    rng = np.random.default_rng(1000 * D + seed)
    return {"x": a + 1.0 / D + 1e-3 * rng.standard_normal()}


def toy_theory(setting, seed=0):
    return {"x": setting["a"], "converged": True, "residual": 0.0, "seconds": 0.0}


def _run(tmp_path, *extra):
    return run_campaign(["--out", str(tmp_path / "out"), "--report", str(tmp_path / "report.md"),
                         "--figures", str(tmp_path / "fig"), "--D", "20", "40", "80", "--seeds", "3",
                         "--mc-replicas", "1", *extra],
                        settings=SETTINGS, quick_settings=SETTINGS[:1], point_fn=toy_point, theory_fn=toy_theory,
                        metrics=("x",), plot_metrics=("x",), title="toy", default_out="unused",
                        default_report="unused", figure_prefix="toy")


def test_settings_option_runs_only_the_chosen_settings(tmp_path):
    _run(tmp_path, "--settings", "1", "--figure-prefix", "chosen")
    points = [json.loads(p.read_text())["point"] for p in (tmp_path / "out").glob("*.json")]
    assert len(points) == 9 and {p["a"] for p in points} == {2.0}
    report = (tmp_path / "report.md").read_text()
    assert "a=2.0" in report and "a=1.0" not in report
    assert "agrees" in report and "disagrees" not in report  # the toy's 1/D extrapolation is exact
    assert (tmp_path / "fig" / "chosen_identity.png").exists()


def test_settings_option_rejects_an_unknown_index(tmp_path):
    with pytest.raises(SystemExit):
        _run(tmp_path, "--settings", "2")
