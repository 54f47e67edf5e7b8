"""The rank figure's tables and plot (simulations/figures/rank.py) on hand-made records: which theory points are
drawn, the best-rank table, the simulation means. No solve is run: the records are written here."""

import pytest


def _theory(lp, rs, r, E, status):
    return {"point": {"lam_prime": lp, "shift_rank": rs, "rank": r},
            "result": {"test_error": E, "test_error_se": 0.001, "test_error_baseline": 0.6, "update_alignment": 0.8,
                       "replicon": 1.4 if status == "unstable_fixed_point" else 0.2, "status": status,
                       "converged": status == "converged", "rs_unstable": status == "unstable_fixed_point"}}


def _sim(lp, rs, seed, values):
    return {"point": {"lam_prime": lp, "shift_rank": rs, "seed": seed},
            "result": {"variants": {name: {"test_error": e, "test_error_baseline": 0.6, "update_alignment": 0.7,
                                           "update_rank": 1.0} for name, e in values.items()}}}


@pytest.fixture
def records():
    from simulations.figures import rank

    cfg = rank.Config(lam_primes=(1.0,), shift_ranks=(1,), theory_ranks=(1, 2, 4), sim_ranks=(1, 2), D=40, seeds=2)
    theory = [_theory(1.0, 1, 1, 0.48, "converged"), _theory(1.0, 1, 2, 0.49, "unstable_fixed_point"),
              _theory(1.0, 1, 4, 0.30, "max_iterations")]  # the r = 4 value is no fixed point: never used
    sims = [_sim(1.0, 1, 0, {"lora_r1": 0.47, "lora_r2": 0.50, "full_nuclear": 0.49, "full_ridge": 0.58}),
            _sim(1.0, 1, 1, {"lora_r1": 0.49, "lora_r2": 0.52, "full_nuclear": 0.51, "full_ridge": 0.60})]
    return cfg, theory, sims


def test_table_uses_only_fixed_points_and_marks_unstable(records):
    from simulations.figures import rank

    cfg, theory, sims = records
    rows = rank.rows_of(theory, sims, cfg)
    table, entries = rank.best_rank_table(rows, cfg)
    (entry,) = entries
    assert set(entry["theory"]) == {1, 2}  # r = 4 stopped without a fixed point
    assert entry["theory_best"] == 1  # not the 0.30 of the unconverged r = 4 point
    assert "2: 0.4900ᵘ" in table
    assert entry["simulation_best"] == "1"
    mean, se = entry["simulation"]["1"]
    assert mean == pytest.approx(0.48) and se == pytest.approx(0.01)  # s.d. 0.01414 over 2 seeds / √2


def test_plot_draws_only_fixed_points(records):
    from simulations.figures import rank

    cfg, theory, sims = records
    fig = rank.plot(rank.rows_of(theory, sims, cfg), cfg)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert [list(ln.get_xdata()) for ln in lines] == [[1, 2]]  # the theory line; r = 4 left out
