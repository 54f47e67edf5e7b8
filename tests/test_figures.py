"""Figure reproductions (simulations/figures/) and the ``reproduce`` / ``convergence`` commands on
tiny settings. These check the plumbing and the relations the figures rest on, not the physics
(small D is far from the theory; the validation campaigns check agreement)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulations import figures
from simulations.cli import main
from simulations.figures import common

# Tiny theory Monte Carlo (2^10 channel samples): enough to run every code path in seconds. The
# identity-activation tests share one shape (D = 10, α = 0.2, α' = 3) so the simulator compiles once.
TINY_MC = dict(n_samples=2 ** 10, n_test_samples=2 ** 12, n_test=500)


def _rows(result):
    return common.read_rows_csv(result["paths"]["csv"])


def _check_files(result, name):
    for ext in ("png", "pdf", "csv", "json"):
        path = result["paths"][ext]
        assert path.name == f"{name}.{ext}" and path.stat().st_size > 0
    meta = json.loads(result["paths"]["json"].read_text())
    for key in ("config", "seeds", "timings", "versions", "machine", "timestamp"):
        assert key in meta, key
    assert meta["timings"]["total_s"] > 0


def test_registry_names_every_figure_and_reports_missing_modules(monkeypatch):
    assert list(figures.FIGURES) == ["fig1", "fig2", "fig3", "fig4", "fig5", "fig6"]
    with pytest.raises(figures.FigureUnavailable, match="unknown figure 'fig9'"):
        figures.load("fig9")
    monkeypatch.setitem(figures.FIGURES, "figX", "simulations.figures.not_written_yet")
    with pytest.raises(figures.FigureUnavailable, match="registered but its module"):
        figures.load("figX")
    assert main(["reproduce", "figX", "--out", "/tmp/unused"]) == 2


def test_full_configurations_are_at_the_papers_scale():
    """Without --quick every figure simulates at D = 150 with 4 runs per marker; Figure 1 has ≥ 14
    simulated λ per Δ (the grid's ends included), theory on ≥ 40 λ, and insets with ≥ 6 λ'."""
    from simulations.figures import fig1, fig2, fig3, fig4, fig5, fig6

    for module in (fig1, fig2, fig3, fig4, fig5, fig6):
        assert (module.FULL.D, module.FULL.seeds) == (150, 4), module.__name__
    for d in fig1.FULL.deltas:
        grid = common.lam_grid(fig1.FULL, d)
        simulated = grid[::fig1.FULL.sim_every]
        assert len(grid) >= 40 and len(simulated) >= 14 and simulated[-1] == grid[-1]
    assert len(set(fig1.FULL.inset_lam_primes) | set(fig1.FULL.lam_primes)) >= 6


def test_fig1_tiny_softmax(tmp_path):
    """Two λ, one Δ, D = 12, one seed: every curve and the inset are in the CSV, λ' = ∞ is the
    baseline E'_0 exactly (theory), and the inset sits at the λ minimising the finite-λ' curves."""
    res = figures.reproduce("fig1", tmp_path, progress=False, deltas=(0.5,), lams=(0.01, 0.1), sim_every=1,
                            inset_lam_primes=(), D=12, seeds=1, **TINY_MC)
    _check_files(res, "fig1")
    rows = _rows(res)
    theory = common.select(rows, source="theory", panel="delta=0.5", metric="E_ft")
    assert sorted((r["lam"], r["lam_prime"]) for r in theory) == sorted(
        (lam, lp) for lam in (0.01, 0.1) for lp in (0.05, 1.0, math.inf))
    for r in common.select(rows, source="theory", panel="delta=0.5", lam_prime=math.inf, metric="E_ft"):
        base = common.select(rows, source="theory", panel="delta=0.5", lam=r["lam"], lam_prime=math.inf,
                             metric="E_ft_baseline")[0]
        assert r["value"] == base["value"]
    inset = common.select(rows, source="theory", panel="delta=0.5 inset", metric="E_ft")
    assert sorted(r["lam_prime"] for r in inset) == [0.05, 1.0, math.inf]
    finite = [r for r in theory if math.isfinite(r["lam_prime"])]
    assert inset[0]["lam"] == min(finite, key=lambda r: r["value"])["lam"]
    sims = common.select(rows, source="simulation", metric="E_ft")
    assert len(sims) == 2 * 3 and all(r["D"] == 12 and r["n_seeds"] == 1 for r in sims)


def test_fig2_and_fig6_tiny_identity(tmp_path):
    """Figures 2 and 6 with the (cheap) identity activation on a tiny grid."""
    res2 = figures.reproduce("fig2", tmp_path, progress=False, activation="identity", alphas=(0.2,),
                             lams=(0.05, 0.2), D=10, seeds=2, **TINY_MC)
    _check_files(res2, "fig2")
    rows = _rows(res2)
    sims = common.select(rows, source="simulation", metric="E_ft")
    assert sorted(r["lam"] for r in sims) == [0.05, 0.2] and all(r["n_seeds"] == 2 for r in sims)
    # the LoRA gain is positive in theory here (λ' = 1 adapts towards the task)
    for lam in (0.05, 0.2):
        e = common.select(rows, source="theory", lam=lam, metric="E_ft")[0]["value"]
        e0 = common.select(rows, source="theory", lam=lam, metric="E_ft_baseline")[0]["value"]
        assert e < e0
    res6 = figures.reproduce("fig6", tmp_path, progress=False, activation="identity", alpha=0.2, deltas=(0.5,),
                             lams=(0.05, 0.2), D=12, seeds=1, **TINY_MC)
    _check_files(res6, "fig6")
    rows = _rows(res6)
    recal = common.select(rows, source="theory", recalibrate=True, metric="c")
    plain = common.select(rows, source="theory", recalibrate=False, lam_prime=1.0, metric="c")
    assert len(recal) == 2 and all(r["value"] == 1.0 for r in plain)  # c is trained only when recalibrating
    # recalibration adds a free parameter: E' cannot be worse at the fixed point (within MC noise)
    for lam in (0.05, 0.2):
        e_recal = common.select(rows, source="theory", recalibrate=True, lam=lam, metric="E_ft")[0]
        e_plain = common.select(rows, source="theory", recalibrate=False, lam=lam, lam_prime=1.0, metric="E_ft")[0]
        assert e_recal["value"] <= e_plain["value"] + 3 * max(e_plain["se"], e_recal["se"], 1e-3)


def test_reproduce_cli_tiny_and_rerun_uses_the_cache(tmp_path, capsys, monkeypatch):
    """``reproduce fig5 --quick`` with its quick grid cut to one point (each new sample ratio α is a new
    JIT compilation of the simulator: the grid, not D, sets this test's cost)."""
    import dataclasses

    from simulations.figures import fig5

    monkeypatch.setattr(fig5, "QUICK", dataclasses.replace(fig5.QUICK, alphas=(0.2,), lams=(0.05,), n_test=500))
    argv = ["reproduce", "fig5", "--quick", "--out", str(tmp_path), "--D", "10", "--seeds", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "fig5.png" in out
    csv1 = (tmp_path / "fig5.csv").read_text()
    cache = sorted(p.name for p in (tmp_path / "cache" / "fig5").rglob("*.json"))
    meta = json.loads((tmp_path / "fig5.json").read_text())
    assert meta["config"]["activation"] == "identity" and meta["config"]["D"] == 10
    assert main(argv) == 0  # rerun: everything from the cache, same data
    assert (tmp_path / "fig5.csv").read_text() == csv1
    assert sorted(p.name for p in (tmp_path / "cache" / "fig5").rglob("*.json")) == cache


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "fig7"], "unknown figure 'fig7'"),
    (["reproduce", "fig1", "--workers", "0"], "--workers must be a positive integer"),
    (["reproduce", "fig1", "--D", "1"], "--D must be an integer >= 2"),
    (["reproduce", "fig1", "--seeds", "0"], "--seeds must be a positive integer"),
    (["reproduce", "fig1", "--quick", "--bogus"], "unrecognized arguments"),
    (["convergence", "--alpha", "0.1", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.1", "--D", "20"],
     "at least 2 distinct dimensions"),
    (["convergence", "--alpha", "-1", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.1", "--D", "20", "30"],
     "alpha"),
    (["convergence", "--alpha", "0.1", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.1", "--D", "20", "30",
      "--reuse"], "--reuse is not supported"),
    (["convergence", "--alpha", "0.1", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.1", "--D", "20", "30",
      "--power", "0"], "--power must be > 0"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_reproduce_rejects_unknown_figure_options(tmp_path):
    with pytest.raises(ValueError, match="unknown figure option"):
        figures.reproduce("fig5", tmp_path, quick=True, progress=False, D_prime=3)


def test_convergence_cli_tiny_identity(tmp_path, capsys):
    """Identity, D ∈ {10, 16}, 2 seeds: the table has one row per metric × D and an extrapolation
    per metric, the CSV/JSON/PNG are written, and the simulated values are those of simulate()."""
    from simulations import simulate

    argv = ["convergence", "--alpha", "0.2", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.05",
            "--activation", "identity", "--D", "10", "16", "--seeds", "2", "--n-test", "500", "--out",
            str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "finetune.test_error" in out and "wrote" in out
    data = json.loads((tmp_path / "comparison.json").read_text())
    table = data["table"]
    sims = [r for r in table if r["kind"] == "simulation"]
    assert {r["D"] for r in sims} == {10, 16} and len({r["metric"] for r in sims}) == 9
    assert len([r for r in table if r["kind"] == "extrapolation"]) == 9
    direct = [simulate(10, 0.2, 3.0, 0.5, 0.05, activation="identity", seed=s, n_test=500).finetune.test_error
              for s in (0, 1)]
    row = next(r for r in sims if r["metric"] == "finetune.test_error" and r["D"] == 10)
    assert row["mean"] == pytest.approx(np.mean(direct), rel=1e-12)
    assert row["theory"] == pytest.approx(data["theory"]["finetune.test_error"])
    assert (tmp_path / "comparison.png").stat().st_size > 1000 and (tmp_path / "comparison.csv").exists()


def test_dask_flag_sends_the_runs_to_dask(tmp_path, monkeypatch):
    """``--dask ADDRESS`` reaches the figure's resumable runs as an explicit :class:`Executor` (the runner
    itself is tested on a local Dask cluster in test_sweep.py); nothing is left in the environment."""
    import os

    from simulations.figures import common as fig_common

    seen = []

    def spy(fn, points, out_dir, **kw):
        seen.append(kw["executor"])
        raise RuntimeError("stop after the first run")

    monkeypatch.setattr(fig_common, "run_points", spy)
    environ = dict(os.environ)
    with pytest.raises(RuntimeError, match="stop after"):
        main(["reproduce", "fig5", "--quick", "--out", str(tmp_path), "--dask", "tcp://example:8786", "--workers", "3"])
    assert [(e.backend, e.address, e.workers) for e in seen] == [("dask", "tcp://example:8786", 3)]
    assert dict(os.environ) == environ


def test_simulation_rows_are_mean_and_se_over_seeds():
    """Synthetic sweep records: two seeds of one point with two variants → mean and std(ddof=1)/√2."""
    base = dict(alpha=0.1, delta=0.5, lam=0.05, D=20, activation="softmax",
                variants=[dict(lam_prime=1.0), dict(lam_prime="inf")])
    recs = [{"point": dict(base, seed=s), "result": {"variants": [{"E_ft": e1}, {"E_ft": e2}]}}
            for s, (e1, e2) in enumerate([(0.4, 0.7), (0.6, 0.9)])]
    rows = common.simulation_rows(recs, lambda p: "p")
    lora = common.select(rows, lam_prime=1.0, metric="E_ft")[0]
    assert lora["value"] == pytest.approx(0.5) and lora["se"] == pytest.approx(np.std([0.4, 0.6], ddof=1) / np.sqrt(2))
    assert lora["n_seeds"] == 2 and lora["D"] == 20
    assert common.select(rows, lam_prime=math.inf, metric="E_ft")[0]["value"] == pytest.approx(0.8)


def test_masks_hide_values_without_dropping_rows():
    rows = [dict(source="theory", D=math.inf, panel="p", alpha=0.1, delta=0.5, lam=lam, lam_prime=1.0,
                 recalibrate=True, activation="softmax", metric=m, value=v, se=0.0)
            for lam, conv, q in ((0.01, 1.0, 0.5), (1.0, 0.0, 0.0))
            for m, v in (("c", 0.7), ("converged", conv), ("q_pre", q))]
    masked = common.mask_unconverged(rows)
    assert len(masked) == len(rows)
    assert common.select(masked, lam=0.01, metric="c")[0]["value"] == 0.7
    assert math.isnan(common.select(masked, lam=1.0, metric="c")[0]["value"])
    assert common.select(masked, lam=1.0, metric="converged")[0]["value"] == 0.0  # the flag itself is kept
    hidden = common.mask_where(rows, "c", "q_pre", lambda q: q <= 1e-8)
    assert [r["value"] for r in common.select(hidden, metric="c")][0] == 0.7
    assert math.isnan(common.select(hidden, lam=1.0, metric="c")[0]["value"])


def test_rs_unstable_theory_points_are_drawn_dotted_and_kept_out_of_minima():
    """Synthetic rows: three theory points of one curve, the middle one not converged because its
    replica-symmetric fixed point is unstable. It stays drawable (dotted), is excluded from a minimum, and a
    point that failed otherwise is masked."""
    import math

    from simulations.figures import common

    base = dict(source="theory", panel="p", alpha=0.1, delta=0.5, lam_prime=1.0, recalibrate=False,
                activation="softmax", D=math.inf, n_seeds=0, se=0.0)
    rows = []
    for lam, e, conv, unst in ((0.01, 0.5, 1, 0), (0.1, 0.3, 0, 1), (1.0, 0.6, 0, 0)):
        rows += [dict(base, lam=lam, metric="E_ft", value=e), dict(base, lam=lam, metric="converged", value=conv),
                 dict(base, lam=lam, metric="rs_unstable", value=unst)]
    kept = {r["lam"]: r["value"] for r in common.mask_unconverged(rows) if r["metric"] == "E_ft"}
    assert kept[0.01] == 0.5 and kept[0.1] == 0.3 and math.isnan(kept[1.0])
    strict = {r["lam"]: r["value"] for r in common.mask_unconverged(rows, keep_unstable=False) if r["metric"] == "E_ft"}
    assert math.isnan(strict[0.1])
    fig, axes = common.new_figure(1, 1)
    common.plot_theory_and_simulation(axes[0, 0], common.mask_unconverged(rows), "lam", color="C0", label="x",
                                      metric="E_ft")
    styles = {line.get_label(): line.get_linestyle() for line in axes[0, 0].get_lines()}
    assert styles == {"x": "-", "x (RS-unstable)": ":"}


def _row(source, metric, value, se, lam=0.1, **kw):
    return dict(source=source, panel="p", alpha=0.1, delta=0.5, lam=lam, lam_prime=1.0, recalibrate=False,
                activation="softmax", D=150 if source == "simulation" else math.inf,
                n_seeds=4 if source == "simulation" else 0, metric=metric, value=value, se=se, **kw)


def test_marker_z_scores_compare_each_marker_with_the_theory_at_its_setting():
    """z = (sim − theory)/√(se_sim² + se_th²) at the same setting; the theory point's state travels with
    it (an RS-unstable line is flagged, a non-converged one gives no z)."""
    rows = [_row("theory", "E_ft", 1.0, 0.0), _row("theory", "converged", 1.0, 0.0),
            _row("theory", "rs_unstable", 0.0, 0.0), _row("simulation", "E_ft", 1.4, 0.1),   # z = 4
            _row("theory", "E_ft", 2.0, 0.03, lam=0.2), _row("theory", "converged", 0.0, 0.0, lam=0.2),
            _row("theory", "rs_unstable", 1.0, 0.0, lam=0.2), _row("simulation", "E_ft", 2.1, 0.04, lam=0.2),  # z = 2
            _row("theory", "E_ft", 3.0, 0.0, lam=0.3), _row("theory", "converged", 0.0, 0.0, lam=0.3),
            _row("simulation", "E_ft", 2.0, 0.1, lam=0.3),  # theory not converged: no z
            _row("simulation", "E_ft", 5.0, 0.1, lam=0.4)]  # no theory at this λ: not a marker of the check
    out = common.marker_z_scores(rows)
    by_lam = {m["lam"]: m for m in out["markers"]}
    assert set(by_lam) == {0.1, 0.2, 0.3}
    assert by_lam[0.1]["z"] == pytest.approx(4.0) and by_lam[0.1]["theory_state"] == "converged"
    assert by_lam[0.2]["z"] == pytest.approx(2.0) and by_lam[0.2]["theory_state"] == "rs_unstable"
    assert by_lam[0.3]["z"] is None and by_lam[0.3]["theory_state"] == "not_converged"
    assert out["summary"]["E_ft"] == {"markers": 3, "compared": 2, "within_3se": 1, "rs_unstable": 1,
                                      "outside_3se_rs_stable": 1}


def test_marker_z_scores_keep_settings_apart_by_every_column():
    """Rows with an extra setting column (Figure 4's α') are matched on it too: each α' with its own theory."""
    rows = []
    for ap, th, sim in ((1.0, 0.6, 0.61), (8.0, 0.42, 0.41)):
        rows += [_row("theory", "E_ft", th, 0.0, alpha_prime=ap), _row("theory", "converged", 1.0, 0.0, alpha_prime=ap),
                 _row("simulation", "E_ft", sim, 0.01, alpha_prime=ap)]
    z = {m["alpha_prime"]: m["z"] for m in common.marker_z_scores(rows)["markers"]}
    assert z == {1.0: pytest.approx(1.0), 8.0: pytest.approx(-1.0)}
