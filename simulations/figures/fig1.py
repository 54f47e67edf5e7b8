"""Figure 1: fine-tuning test error ``E'`` vs the pre-training regularisation ``λ``.

docs/model.md §7: ``α = 0.1, α' = 3, T = 3, κ0 = κ = 1``, ``Δ = 0.5`` (left) and ``Δ = 2`` (right), one
curve per ``λ' ∈ {0.05, 1, ∞}`` (``λ' = ∞``: no adaptation, ``E' = E'_0``, the pre-trained model
alone). Lines: state evolution; markers: simulations (mean ± s.e. over seeds; full: ``D = 150``,
4 runs). Dotted vertical lines: each curve's minimum over the ``λ`` grid. Insets: ``E'`` vs ``λ'`` at
the optimal ``λ`` (the grid ``λ`` minimising the best finite-``λ'`` curve), ``E'_0`` dashed: the
curves' own ``λ'`` plus ``inset_lam_primes`` (none in the quick version, which keeps it cheap).

The minimiser of ``E'`` over ``λ`` is in general not the ``λ`` that minimises the pre-training test
error: the CSV has ``E_pre`` along the same grid to check it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from state_evolution.sampling import N_SAMPLES, N_TEST_SAMPLES

from . import common

NAME = "fig1"

_grid = common.geomgrid

@dataclass(frozen=True)
class Config:
    """Figure 1's settings and run sizes.

    Attributes:
        alpha: ``α``, pre-training samples per ``D²``.
        alpha_prime: ``α'``, fine-tuning samples per ``D``.
        T: tokens per sequence.
        activation: ``"softmax"`` or ``"identity"``.
        deltas: the ``Δ`` of the panels.
        lams: one grid of pre-training ``λ`` per ``Δ``.
        lam_primes: the LoRA ridges ``λ'`` of the curves (``inf``: no adaptation).
        inset_lam_primes: extra ``λ'`` of the insets at the optimal ``λ``.
        sim_every: simulate at every ``sim_every``-th ``λ`` of the grid.
        theory_pieces: each ``Δ``'s theory curve is solved as this many contiguous warm-started pieces
            (each starting cold), so that several workers share it.
        D: simulation dimension.
        seeds: simulation seeds per point.
        n_test: simulation test samples.
        n_samples: the theory's Monte Carlo channel samples.
        n_test_samples: the theory's Monte Carlo test samples.
    """

    alpha: float = 0.1
    alpha_prime: float = 3.0
    T: int = 3
    activation: str = "softmax"
    deltas: tuple = (0.5, 2.0)
    # one λ grid per Δ (the interesting range moves with Δ): theory on 40 λ, simulations on every third
    # (14 per Δ, the grid's ends included: 40 = 3·13 + 1)
    lams: tuple = (_grid(1e-3, 0.3, 40), _grid(0.01, 1.0, 40))
    lam_primes: tuple = (0.05, 1.0, math.inf)
    inset_lam_primes: tuple = tuple(float(x) for x in np.geomspace(3e-3, 30.0, 9))  # besides lam_primes
    sim_every: int = 3          # simulate at every sim_every-th λ of the grid
    theory_pieces: int = 3      # contiguous pieces of each Δ's theory curve (load balance across workers)
    D: int = 150
    seeds: int = 4
    n_test: int = 20000
    n_samples: int = N_SAMPLES    # theory Monte Carlo samples (channel) and test samples
    n_test_samples: int = N_TEST_SAMPLES


FULL = Config()
QUICK = Config(lams=(_grid(2e-3, 0.2, 6), _grid(0.025, 1.0, 6)), inset_lam_primes=(), sim_every=1, theory_pieces=1,
               D=50, seeds=2, n_test=5000, n_samples=2 ** 12, n_test_samples=2 ** 15)


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``fig1.png/.pdf/.csv/.json`` under ``out``; ``overrides``: fields of :class:`Config`.

    Args:
        out: output folder (created); simulations are cached under ``out/cache/fig1/``.
        quick: the small configuration ``QUICK`` instead of ``FULL`` (minutes, not hours).
        executor: where the simulations run (:class:`~simulations.campaigns.resumable.Executor`;
            default in-process).
        progress: show progress bars.
        **overrides: fields of :class:`Config` (e.g. ``D=30, seeds=1``).

    Returns:
        ``{"paths": {"png", "pdf", "csv", "json"}, "timings": ...}``.

    Raises:
        ValueError: an unknown override or ``D < 2``.
        RuntimeError: a ``Δ`` without any converged theory point (no optimal ``λ`` for the inset).
    """
    cfg = common.make_config(FULL, QUICK, quick, overrides)
    run = common.Reproduction(NAME, out, cfg, executor=executor, progress=progress)
    setting = dict(alpha=cfg.alpha, alpha_prime=cfg.alpha_prime, T=cfg.T, activation=cfg.activation)
    mc = dict(n_samples=cfg.n_samples, n_test_samples=cfg.n_test_samples)
    panel = _panel

    # each Δ's curve in theory_pieces contiguous warm-started pieces (each starts cold), the costly Δ = 2 first:
    # pieces balance the load of several workers
    theory_points = [dict(setting, delta=d, lams=piece, lam_primes=list(cfg.lam_primes), **mc)
                     for d in sorted(cfg.deltas, reverse=True)
                     for piece in common.split_grid(common.lam_grid(cfg, d), cfg.theory_pieces)]
    variants = [dict(lam_prime=lp) for lp in cfg.lam_primes]
    sim_points = [dict(setting, delta=d, lam=lam, D=cfg.D, seed=s, n_test=cfg.n_test, variants=variants)
                  for d in cfg.deltas for lam in common.lam_grid(cfg, d)[::cfg.sim_every] for s in range(cfg.seeds)]
    run.expect("theory", theory_points)
    if cfg.inset_lam_primes and len(list((run.cache / "theory_inset").glob("*.json"))) < len(cfg.deltas):
        # the inset's λ is known only after the curves: points of the same cost stand in for them
        run.expect("theory_inset", [dict(setting, delta=d, lams=[0.0], lam_primes=list(cfg.inset_lam_primes), **mc)
                                    for d in cfg.deltas])
    run.expect("simulation", sim_points)
    # the simulations first: at 10 % of the work the progress ETA has then calibrated the kind of point that is
    # most of it (benchmarks/README.md, "Progress ETA")
    sims = run.sweep("simulation", common.simulation_point, sim_points)
    curves = run.sweep("theory", common.theory_curve, theory_points)
    rows = common.theory_rows(curves, panel)
    finite = [lp for lp in cfg.lam_primes if math.isfinite(lp)]
    best = {d: _optimal_lam(rows, d, finite or list(cfg.lam_primes)) for d in cfg.deltas}
    # inset: the main curves' λ' at the optimal λ, plus the extra λ' of the config solved there
    inset_rows = [dict(r, panel=r["panel"] + " inset") for r in rows if r["lam"] == best[r["delta"]]]
    if cfg.inset_lam_primes:
        insets = run.sweep("theory_inset", common.theory_curve,
                           [dict(setting, delta=d, lams=[best[d]], lam_primes=list(cfg.inset_lam_primes), **mc)
                            for d in cfg.deltas])
        inset_rows += common.theory_rows(insets, lambda p: _panel(p) + " inset")

    rows = rows + inset_rows + common.simulation_rows(sims, panel)
    fig = plot(rows, cfg)
    return run.finish(fig, rows, notes=f"optimal λ per Δ (inset): {best}")


def _panel(point) -> str:
    return f"delta={point['delta']:g}"


def _optimal_lam(rows, delta, lam_primes) -> float:
    """The grid ``λ`` minimising ``min_{λ'} E'`` (converged, replica-symmetry stable theory points) at ``Δ = delta``."""
    sel = common.select(common.mask_unconverged(rows, keep_unstable=False), source="theory", metric="E_ft",
                        delta=float(delta))
    sel = [r for r in sel if r["lam_prime"] in lam_primes and not math.isnan(r["value"])]
    if not sel:
        raise RuntimeError(f"no converged theory point at delta={delta}: cannot locate the optimal lambda")
    return float(min(sel, key=lambda r: r["value"])["lam"])


def plot(rows, cfg: Config):
    """The figure from the tidy rows (also used by the notebook).

    Args:
        rows: the tidy rows (theory and simulation) of the CSV.
        cfg: the :class:`Config` they were computed with.

    Returns:
        The matplotlib figure.
    """
    rows = common.mask_unconverged(rows)
    fig, axes = common.new_figure(1, len(cfg.deltas), width=4.8, height=3.8)
    for ax, delta in zip(axes[0], cfg.deltas):
        panel = f"delta={delta:g}"
        for i, lp in enumerate(cfg.lam_primes):
            color = f"C{i}"
            lab = "λ' = ∞ (no LoRA)" if math.isinf(lp) else f"λ' = {lp:g}"
            common.plot_theory_and_simulation(ax, rows, "lam", color=color, label=lab, panel=panel, metric="E_ft",
                                              lam_prime=lp)
            try:
                ax.axvline(common.argmin_x(rows, "lam", source="theory", panel=panel, metric="E_ft", lam_prime=lp),
                           color=color, ls=":", lw=1)
            except ValueError:
                pass
        ax.set_xlabel("pre-training regularisation λ")
        ax.set_ylabel("fine-tuning test error E'")
        ax.set_title(f"Δ = {delta:g}  (α = {cfg.alpha:g}, α' = {cfg.alpha_prime:g}, T = {cfg.T}; "
                     f"markers D = {cfg.D}, {cfg.seeds} runs)", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        _inset(ax, rows, panel + " inset")
    fig.tight_layout()
    return fig


def _inset(ax, rows, panel) -> None:
    xs, ys, _ = common.series(rows, "lam_prime", source="theory", panel=panel, metric="E_ft")
    if not len(xs):
        return
    lam = common.select(rows, panel=panel)[0]["lam"]
    finite = np.isfinite(xs)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.7 * (hi - lo))  # head room: the inset sits above the curves
    inset = ax.inset_axes([0.6, 0.63, 0.37, 0.3])
    inset.plot(xs[finite], ys[finite], "k-o", lw=1, ms=3)
    if (~finite).any():
        inset.axhline(ys[~finite][0], color="k", ls="--", lw=0.8)
    inset.set_xscale("log")
    inset.set_title(f"E' vs λ' at λ = {lam:.3g}", fontsize=6)
    inset.tick_params(labelsize=6)
