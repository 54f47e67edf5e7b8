"""The analysis helpers of simulations/finetuning_claims.py on inputs with known answers, and one tiny
end-to-end run of its sweeps (identity activation: closed-form pre-training, seconds)."""

import math

import numpy as np
import pytest

from simulations.campaigns.finetuning_claims import argmin_lam, disagreement_intervals, lambda_sweep, surrogate_sweep


def test_disagreement_intervals_mark_where_error_and_alignment_move_together():
    x = [1, 2, 3, 4, 5, 6]
    err = [5, 4, 3, 4, 5, 4]  # falls, falls, rises, rises, falls
    ali = [1, 2, 3, 4, 5, 6]  # always rises: disagreement (both "up") on [3, 5]
    assert disagreement_intervals(x, err, ali) == [(3.0, 5.0)]
    assert disagreement_intervals(x, err, [-v for v in ali]) == [(1.0, 3.0), (5.0, 6.0)]
    assert disagreement_intervals([1, 2], [1, 1], [0, 1]) == []  # flat error: no disagreement


def test_argmin_lam():
    rows = [dict(lam=0.1, E=2.0), dict(lam=0.2, E=1.0), dict(lam=0.3, E=1.5)]
    assert argmin_lam(rows, "E") == (0.2, 1.0)


def test_identity_surrogate_is_exact():
    """docs/theory.md §6.2 through the claims machinery: for the identity activation the LoRA overlaps on the real
    pre-training state equal those of perfect pre-training with Δ' + mse_S (same Monte Carlo samples up to the
    GOE pair's realisation: 3 % tolerance, as tests/test_finetuning.py)."""
    out = surrogate_sweep(0.5, [0.1], lam_prime=1.0, activation="identity")["rows"][0]
    for k in ("m_prime", "q_prime", "alignment"):
        assert math.isclose(out[f"plain_real_{k}"], out[f"plain_surrogate_{k}"], rel_tol=0.03), k
    rows = lambda_sweep(0.5, [0.1, 0.2], [1.0, "inf"], activation="identity")["rows"]
    assert [r["lam_prime"] for r in rows] == [1.0, math.inf, 1.0, math.inf]
    assert all(r["converged"] for r in rows) and np.isfinite([r["E_prime"] for r in rows]).all()


def test_fine_grid_claims_minima_regrets_and_intervals():
    """(c)/(d) from Figure-1 curve rows: synthetic E(λ) minimal at λ = 0.02, E'(λ) at 0.04, alignment
    rising until 0.06: the minima, both regrets (exact differences of the grid values) and the
    disagreement interval [0.04, 0.06] (E' worsens while the alignment still improves) are found."""
    from simulations.campaigns.finetuning_claims import fine_grid_claims, format_fine_grid

    lams = [0.01, 0.02, 0.04, 0.06, 0.08]
    E = {0.01: 0.5, 0.02: 0.4, 0.04: 0.45, 0.06: 0.5, 0.08: 0.6}
    Ep = {0.01: 0.7, 0.02: 0.65, 0.04: 0.6, 0.06: 0.62, 0.08: 0.7}
    al = {0.01: 0.5, 0.02: 0.6, 0.04: 0.7, 0.06: 0.8, 0.08: 0.7}
    curves = [dict(delta=0.5, lam=lam, lam_prime="1.0", test_error=E[lam], test_error_ft=Ep[lam],
                   alignment=al[lam], converged=True) for lam in lams]
    c = fine_grid_claims(curves)[0.5]
    assert c["lam_opt_E"] == 0.02 and c["1.0"]["lam_opt_E_prime"] == 0.04
    assert c["1.0"]["regret_E_prime_at_lam_E"] == pytest.approx(0.05)
    assert c["1.0"]["regret_E_at_lam_E_prime"] == pytest.approx(0.05)
    assert c["1.0"]["disagree_along_lam"] == [(0.04, 0.06)]
    assert "0.04" in format_fine_grid({0.5: c}, "x.json")
