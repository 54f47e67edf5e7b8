"""The report of simulations/campaigns/full_finetuning_scaling.py on synthetic records: the 1/D fit recovers
a known limit and the gain's log-log slope a known exponent."""

import pytest

from simulations.campaigns.full_finetuning_scaling import VARIANTS, report


def _records(Ds, seeds=8):
    recs = []
    for D in Ds:
        for s in range(seeds):
            eps = 0.01 if s % 2 else -0.01  # ± noise, mean zero at every D
            v = {"test_error": 0.5 + 2.0 / D + eps, "test_error_baseline": 0.5 + 2.0 / D + eps + 3.0 * D ** -0.5,
                 "update_alignment": 0.9, "update_rank": 1.0, "update_norm": 1.0, "converged": True}
            recs.append({"point": {"activation": "identity", "D": D, "seed": s},
                         "result": {"variants": {name: dict(v) for name in VARIANTS}}})
    return recs


def test_fit_recovers_the_limit_and_the_gain_exponent():
    Ds = [50, 100, 150, 200]
    text, data = report(_records(Ds), Ds)
    rows = data["identity"]["full_ridge"]
    a, se_a, b = rows["test_error"]["fit"]
    assert a == pytest.approx(0.5, abs=1e-9) and b == pytest.approx(2.0, abs=1e-6)  # exact: noise averages out
    assert rows["gain_log_slope"] == pytest.approx(-0.5, abs=1e-9)
    assert "| full_ridge | test_error |" in text
