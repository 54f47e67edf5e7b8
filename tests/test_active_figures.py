"""Figures 3 and 4 (reuse, active selection) on tiny settings: the plumbing and the relations the
figures rest on, not the physics (tiny D is far from the theory; docs/validation_active.md checks
agreement)."""

from __future__ import annotations

import pytest

from simulations import figures
from simulations.figures import common

TINY = dict(n_samples=2 ** 10, n_test_samples=2 ** 12, n_test=500, seeds=1)


def test_fig4_tiny_identity(tmp_path):
    """At α' = α_pool every strategy labels the whole pool: identical theory (the same fixed point), zero gain."""
    res = figures.reproduce("fig4", tmp_path, progress=False, activation="identity", lam=0.1, pool_ratio=4.0,
                            alpha_primes=(1.0, 4.0), strategies=("random", "low_logit_norm"), D=12, **TINY)
    for ext in ("png", "pdf", "csv", "json"):
        assert res["paths"][ext].stat().st_size > 0
    rows = common.read_rows_csv(res["paths"]["csv"])
    full = common.select(rows, source="theory", metric="E_ft", alpha_prime=4.0)
    assert len(full) == 2 and full[0]["value"] == full[1]["value"]
    for r in common.select(rows, metric="gain", panel="random"):
        assert r["value"] == 0.0
    sims = common.select(rows, source="simulation", metric="E_ft")
    assert sorted((r["alpha_prime"], r["panel"]) for r in sims) == [
        (1.0, "low_logit_norm"), (1.0, "random"), (4.0, "low_logit_norm"), (4.0, "random")]
    assert set(res["best"]) == {"1"}  # budgets below the pool only


def test_fig3_tiny_identity_and_the_pool_constraint(tmp_path):
    res = figures.reproduce("fig3", tmp_path, progress=False, activation="identity", alpha=0.5, lams=(0.1,), D=10,
                            **TINY)
    rows = common.read_rows_csv(res["paths"]["csv"])
    names = {r["panel"] for r in common.select(rows, source="theory", metric="E_ft")}
    assert names == {"fresh", "reuse", "reuse, top residual", "reuse, low residual"}
    assert len(common.select(rows, source="simulation", metric="gain")) == 4
    with pytest.raises(ValueError, match="pool"):  # α_pool·D = 40 > αD² = 10 pre-training samples
        figures.reproduce("fig3", tmp_path / "bad", progress=False, alpha=0.1, D=10, **TINY)
