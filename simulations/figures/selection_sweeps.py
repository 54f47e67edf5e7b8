"""Sweep points and tidy rows shared by Figures 3 (reuse) and 4 (active selection).

A *variant* is a named dict of :func:`state_evolution.selection.solve_active_finetuning` options
(``strategy, pool_ratio, reuse``). Theory: one point per pre-training setting, solving the LoRA
fixed point for every ``(variant, α')``. Simulation: one point per ``(setting, α', D, seed)``,
pre-training once and fine-tuning with every variant (common random numbers). Rows follow
:mod:`simulations.figures.common`, the variant's name in the ``panel`` column, plus ``alpha_prime``.
"""

from __future__ import annotations

import csv

import numpy as np

from solvable_attention.averages import mean_se
from simulations.campaigns.theory_points import solve_variants
from state_evolution.sampling import FINETUNE_SEED_OFFSET, N_SAMPLES, N_TEST_SAMPLES

from . import common

COLUMNS = common.CSV_COLUMNS + ("alpha_prime",)
METRICS = ("E_ft", "E_ft_baseline", "alignment", "m_abs", "q_ft")
_THEORY_FIELDS = ("test_error", "test_error_se", "test_error_baseline", "test_error_baseline_se", "alignment",
                  "m_abs", "q", "converged")


def _solve_variant(pre, alpha_prime, lam_prime, variant, seed, **solver_options):
    from state_evolution.selection import solve_active_finetuning

    return solve_active_finetuning(pre, variant["alpha_prime"], lam_prime, seed=seed, **solver_options,
                                   **variant["options"])


def theory_point(alpha, delta, lam, alpha_primes, variants, lam_prime=1.0, n_samples=N_SAMPLES,
                 n_test_samples=N_TEST_SAMPLES, seed=0, **setting) -> dict:
    """The theory at one pre-training setting for every ``(variant, α')`` (docs/theory.md §5).

    Args:
        alpha: ``α > 0``, pre-training samples per ``D²``.
        delta: ``Δ ≥ 0``, label noise (also ``Δ'``).
        lam: ``λ ≥ 0``, pre-training strength.
        alpha_primes: the fine-tuning budgets ``α'``.
        variants: ``{name: options of solve_active_finetuning}`` (``strategy, pool_ratio, reuse``).
        lam_prime: ``λ' ≥ 0``, LoRA ridge.
        n_samples: the theory's Monte Carlo channel samples.
        n_test_samples: its test samples.
        seed: seed of the pre-training channel (fine-tuning uses ``seed + FINETUNE_SEED_OFFSET``).
        **setting: ``T, beta, kappa0, kappa, activation, noise`` of :func:`state_evolution.solve_pretraining`.

    Returns:
        ``{"rows": [{variant, alpha_prime, metrics: {name: [value, se]}}], "pretrain": {m, q, mse_S,
        converged}}``.

    Raises:
        ValueError: a parameter out of its range, or an invalid variant (see
            :func:`state_evolution.selection.solve_active_finetuning`).
    """
    grid = {f"{name},{ap}": dict(name=name, alpha_prime=ap, options=v)
            for name, v in variants.items() for ap in alpha_primes}
    pre, flat = solve_variants(dict(setting, alpha=alpha, delta=delta, lam=lam, lam_prime=lam_prime), seed, grid,
                               _solve_variant, _THEORY_FIELDS, seed_offset=FINETUNE_SEED_OFFSET,
                               n_samples=n_samples, n_test_samples=n_test_samples, warn=False)
    rows = []
    for key, g in grid.items():
        f = {k: flat[f"{k}[{key}]"] for k in _THEORY_FIELDS}
        rows.append(dict(variant=g["name"], alpha_prime=g["alpha_prime"], metrics={
            "E_ft": (f["test_error"], f["test_error_se"]), "E_ft_baseline": (f["test_error_baseline"],
                                                                          f["test_error_baseline_se"]),
            "alignment": (f["alignment"], 0.0), "m_abs": (f["m_abs"], 0.0), "q_ft": (f["q"], 0.0),
            "converged": (float(f["converged"] and pre.converged), 0.0)}))
    return {"rows": rows, "pretrain": dict(m=pre.m, q=pre.q, mse_S=pre.mse_S, converged=pre.converged)}


def simulation_variant(v: dict, lam_prime: float) -> dict:
    """A variant as a :func:`simulations.simulate_variants` variant (``select`` key when selecting).

    Args:
        v: the variant's options (``strategy``, ``pool_ratio``, ``reuse``).
        lam_prime: ``λ'``.

    Returns:
        ``{"lam_prime", "reuse"[, "select": {"strategy", "pool_ratio"}]}``.
    """
    out = dict(lam_prime=lam_prime, reuse=bool(v.get("reuse", False)))
    if "strategy" in v:
        out["select"] = dict(strategy=v["strategy"], pool_ratio=v["pool_ratio"])
    return out


def simulation_point(D, seed, alpha, alpha_prime, delta, lam, variants, lam_prime=1.0, n_test=5000,
                     **setting) -> dict:
    """``{"variants": {name: {metric: value}}}`` of one pre-training fine-tuned with each variant.

    Args:
        D: simulation dimension, ``≥ 2``.
        seed: the seed (common to all variants: common random numbers).
        alpha: ``α``.
        alpha_prime: ``α'``.
        delta: ``Δ``.
        lam: ``λ``.
        variants: ``{name: options}`` as in :func:`theory_point`.
        lam_prime: ``λ'``.
        n_test: test samples.
        **setting: further keywords of :func:`simulations.simulate_variants`.

    Returns:
        ``{"variants": {name: {"E_ft", "E_ft_baseline", "alignment", "m_abs", "q_ft"}}}``.

    Raises:
        ValueError: a parameter out of its range (as :func:`simulations.simulate_variants`).
    """
    from simulations import simulate_variants

    results = simulate_variants(D, alpha, alpha_prime, delta, lam, seed=seed, n_test=n_test,
                                variants=[simulation_variant(v, lam_prime) for v in variants.values()], **setting)
    return {"variants": {name: dict(E_ft=r.finetune.test_error, E_ft_baseline=r.finetune.test_error_baseline,
                                    alignment=r.finetune.alignment, m_abs=abs(r.finetune.m), q_ft=r.finetune.q)
                         for name, r in zip(variants, results)}}


def _setting(p, variant) -> dict:
    return dict(panel=variant, alpha=p["alpha"], delta=p["delta"], lam=p["lam"], lam_prime=p.get("lam_prime", 1.0),
                recalibrate=False, activation=p.get("activation", "softmax"))


def theory_rows(records) -> list[dict]:
    """Tidy theory rows (``D = inf``) from the records of :func:`theory_point`.

    Args:
        records: records of :func:`~simulations.campaigns.resumable.run_points` over :func:`theory_point`.

    Returns:
        One row per (setting, variant, ``α'``, metric), the variant's name in ``panel``.
    """
    rows = []
    for rec in records:
        p = rec["point"]
        for r in rec["result"]["rows"]:
            for metric, (value, se) in r["metrics"].items():
                rows.append(dict(source="theory", **_setting(p, r["variant"]), D=common.INF, n_seeds=0, metric=metric,
                                 value=value, se=se, alpha_prime=r["alpha_prime"]))
    return rows


def simulation_rows(records) -> list[dict]:
    """Mean ± s.e. over seeds per (setting, α', D, variant, metric).

    Args:
        records: records of :func:`~simulations.campaigns.resumable.run_points` over :func:`simulation_point`.

    Returns:
        Tidy simulation rows.
    """
    groups = {}
    for rec in records:
        p = rec["point"]
        key = tuple(sorted((k, str(v)) for k, v in p.items() if k not in ("seed", "variants")))
        for name, metrics in rec["result"]["variants"].items():
            g = groups.setdefault((key, name), (p, {}))
            for metric, value in metrics.items():
                g[1].setdefault(metric, []).append(value)
    rows = []
    for (_, name), (p, by_metric) in groups.items():
        for metric, values in by_metric.items():
            mean, se, n = mean_se(values)
            rows.append(dict(source="simulation", **_setting(p, name), D=p["D"], n_seeds=n, metric=metric,
                             value=mean, se=se, alpha_prime=p["alpha_prime"]))
    return rows


def gain_rows(rows, sims, x: str, reference: str) -> list[dict]:
    """``gain = E'[reference] − E'[variant]`` at each ``x`` (``"alpha_prime"`` or ``"lam"``): theory as the
    difference of the two fixed points (s.e. combined), simulation as mean ± s.e. over seeds of the
    per-seed difference (common random numbers: the same pre-training and test inputs).

    Args:
        rows: theory and simulation rows (with ``E_ft``).
        sims: the simulation records (per-seed values).
        x: the column swept, ``"alpha_prime"`` or ``"lam"``.
        reference: the variant the gain is measured against.

    Returns:
        ``metric="gain"`` rows, theory then simulation.
    """
    out = []
    theory = common.select(rows, source="theory", metric="E_ft")
    ref = {r[x]: r for r in theory if r["panel"] == reference}
    for r in theory:
        b = ref[r[x]]
        out.append(dict(r, metric="gain", value=b["value"] - r["value"], se=float(np.hypot(b["se"], r["se"]))))
    template = {(r[x], r["panel"]): r for r in common.select(rows, source="simulation", metric="E_ft")}
    per_seed = {}
    for rec in sims:
        v = rec["result"]["variants"]
        for name in v:
            per_seed.setdefault((rec["point"][x], name), []).append(v[reference]["E_ft"] - v[name]["E_ft"])
    for key, values in per_seed.items():
        mean, se, n = mean_se(values)
        out.append(dict(template[key], metric="gain", value=mean, se=se, n_seeds=n))
    return out


def plot_panels(rows, variant_names, x: str, *, logx: bool, xlabel: str, reference: str, title: str, markers: str):
    """Three panels: ``E'``, the gain over ``reference``, the alignment; theory lines, simulation markers.

    Args:
        rows: tidy rows (with the ``gain`` rows of :func:`gain_rows`).
        variant_names: the variants to draw, one colour each.
        x: the column of the x axis.
        logx: logarithmic x axis.
        xlabel: its label.
        reference: the reference variant of the gain.
        title: title of the first panel.
        markers: title of the second panel (what the markers are).

    Returns:
        The matplotlib figure.
    """
    fig, axes = common.new_figure(1, 3, width=4.0, height=3.5)
    for i, name in enumerate(variant_names):
        for ax, metric in zip(axes[0], ("E_ft", "gain", "alignment")):
            common.plot_theory_and_simulation(ax, rows, x, color=f"C{i}", label=name, logx=logx, metric=metric,
                                              panel=name)
    a, g, al = axes[0]
    if logx:  # few points per decade: label the major ticks only
        from matplotlib.ticker import NullFormatter

        for ax in axes[0]:
            ax.xaxis.set_minor_formatter(NullFormatter())
    a.set(xlabel=xlabel, ylabel="fine-tuning test error E'")
    g.set(xlabel=xlabel, ylabel=f"gain E'[{reference}] − E'[variant]")
    g.axhline(0, color="k", lw=0.5)
    al.set(xlabel=xlabel, ylabel="alignment |m'|/√(q'ρ_v)")
    a.set_title(title, fontsize=8)
    g.set_title(markers, fontsize=8)
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_csv(path, rows) -> None:
    """The rows with :data:`COLUMNS` (the common columns plus ``alpha_prime``; read back with
    :func:`simulations.figures.common.read_rows_csv`).

    Args:
        path: the CSV file (overwritten).
        rows: tidy rows (other keys ignored).
    """
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
