"""Figure 6: recalibrating the frozen extensive-rank attention map improves fine-tuning.

At Figure 1's setting (``α = 0.1, α' = 3, T = 3``, ``Δ = 0.5`` and ``2``, ``λ' = 1``), ``E'`` vs the
pre-training ``λ`` for plain LoRA ``Ŝ + uuᵀ/√D`` (solid, ●) and LoRA with a trained scalar
``cŜ + uuᵀ/√D`` (``recalibrate=True``; dash-dot, ■); the no-adaptation baseline ``E'_0`` in grey
dashes. Bottom row: the learned ``c``, drawn only where ``Ŝ ≠ 0`` (at large ``λ`` pre-training
returns ``Ŝ = 0`` and ``c`` is undetermined) (docs/theory.md §4.4: ``c ≈ m/q`` removes the part of ``H0`` that
``Ĥ`` explains, turning the effective noise ``Δ' + mse_S`` into ``Δ' + ρ0 − m²/q``; both are in the
CSV as ``effective_noise`` and ``effective_noise_recalibrated``). Lines: state evolution; markers:
simulations (mean ± s.e. over seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common
from .fig1 import FULL as FIG1_FULL
from .fig1 import QUICK as FIG1_QUICK

NAME = "fig6"


@dataclass(frozen=True)
class Config:
    """Figure 6's settings and run sizes (Figure 1's setting at one ``λ'``).

    Attributes:
        alpha: ``α``, pre-training samples per ``D²``.
        alpha_prime: ``α'``, fine-tuning samples per ``D``.
        T: tokens per sequence.
        activation: ``"softmax"`` or ``"identity"``.
        deltas: the ``Δ`` of the panels.
        lams: one grid of pre-training ``λ`` per ``Δ``.
        lam_prime: ``λ'``, LoRA ridge.
        sim_every: simulate at every ``sim_every``-th ``λ``.
        D: simulation dimension.
        seeds: simulation seeds per point.
        n_test: simulation test samples.
        n_samples: the theory's Monte Carlo channel samples.
        n_test_samples: the theory's Monte Carlo test samples.
    """

    alpha: float = FIG1_FULL.alpha
    alpha_prime: float = FIG1_FULL.alpha_prime
    T: int = FIG1_FULL.T
    activation: str = "softmax"
    deltas: tuple = FIG1_FULL.deltas
    lams: tuple = tuple(g[::FIG1_FULL.sim_every] for g in FIG1_FULL.lams)  # Figure 1's simulated λ (14 per Δ)
    lam_prime: float = 1.0
    sim_every: int = 1
    D: int = FIG1_FULL.D
    seeds: int = FIG1_FULL.seeds
    n_test: int = FIG1_FULL.n_test
    n_samples: int = FIG1_FULL.n_samples
    n_test_samples: int = FIG1_FULL.n_test_samples


FULL = Config()
# quick: Figure 1's quick λ range with 5 points per Δ (recalibrated solves are the slowest: ≤ 5 min on 2 cores)
QUICK = Config(lams=tuple(common.geomgrid(g[0], g[-1], 5) for g in FIG1_QUICK.lams), D=FIG1_QUICK.D, seeds=FIG1_QUICK.seeds, n_test=FIG1_QUICK.n_test,
               n_samples=FIG1_QUICK.n_samples, n_test_samples=FIG1_QUICK.n_test_samples)


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``fig6.png/.pdf/.csv/.json`` under ``out``; ``overrides``: fields of :class:`Config`.

    Args:
        out: output folder (created); simulations are cached under ``out/cache/fig6/``.
        quick: the small configuration ``QUICK`` instead of ``FULL`` (minutes, not hours).
        executor: where the simulations run (:class:`~simulations.campaigns.resumable.Executor`;
            default in-process).
        progress: show progress bars.
        **overrides: fields of :class:`Config` (e.g. ``D=30, seeds=1``).

    Returns:
        ``{"paths": {"png", "pdf", "csv", "json"}, "timings": ...}``.

    Raises:
        ValueError: an unknown override or ``D < 2``.
    """
    cfg = common.make_config(FULL, QUICK, quick, overrides)
    run = common.Reproduction(NAME, out, cfg, executor=executor, progress=progress)
    setting = dict(alpha=cfg.alpha, alpha_prime=cfg.alpha_prime, T=cfg.T, activation=cfg.activation)
    mc = dict(n_samples=cfg.n_samples, n_test_samples=cfg.n_test_samples)
    theory_points = [dict(setting, delta=d, lams=common.lam_grid(cfg, d), recalibrate=recal,
                          lam_primes=[cfg.lam_prime] + ([] if recal else [math.inf]), **mc)
                     for d in cfg.deltas for recal in (False, True)]
    variants = [dict(lam_prime=cfg.lam_prime), dict(lam_prime=cfg.lam_prime, recalibrate=True)]
    sim_points = [dict(setting, delta=d, lam=lam, D=cfg.D, seed=s, n_test=cfg.n_test, variants=variants)
                  for d in cfg.deltas for lam in common.lam_grid(cfg, d)[::cfg.sim_every] for s in range(cfg.seeds)]
    run.expect("theory", theory_points)
    run.expect("simulation", sim_points)
    sims = run.sweep("simulation", common.simulation_point, sim_points)  # first: the ETA calibrates on them early
    curves = run.sweep("theory", common.theory_curve, theory_points)
    rows = common.theory_rows(curves, _panel) + common.simulation_rows(sims, _panel)
    return run.finish(plot(rows, cfg), rows)


def _panel(point) -> str:
    return f"delta={point['delta']:g}"


def plot(rows, cfg: Config):
    """The figure from the tidy rows (also used by the notebook).

    Args:
        rows: the tidy rows (theory and simulation) of the CSV.
        cfg: the :class:`Config` they were computed with.

    Returns:
        The matplotlib figure.
    """
    rows = common.mask_where(common.mask_unconverged(rows), "c", "q_pre", lambda q: q <= 1e-8)
    fig, axes = common.new_figure(2, len(cfg.deltas), width=4.6, height=3.0)
    for col, delta in enumerate(cfg.deltas):
        panel = f"delta={delta:g}"
        ax, ax_c = axes[0, col], axes[1, col]
        common.plot_theory_and_simulation(ax, rows, "lam", color="C0", label="LoRA", panel=panel, metric="E_ft",
                                          lam_prime=cfg.lam_prime, recalibrate=False)
        common.plot_theory_and_simulation(ax, rows, "lam", color="C3", label="LoRA + recalibration c",
                                          panel=panel, metric="E_ft", lam_prime=cfg.lam_prime, recalibrate=True)
        xs, ys, _ = common.series(rows, "lam", source="theory", panel=panel, metric="E_ft", lam_prime=math.inf)
        ax.plot(xs, ys, "--", color="0.5", lw=1, label="E'_0 (no adaptation)")
        ax.set(xlabel="pre-training regularisation λ", ylabel="fine-tuning test error E'")
        ax.set_title(f"Δ = {delta:g}, λ' = {cfg.lam_prime:g} (markers D = {cfg.D}, {cfg.seeds} seeds)", fontsize=8)
        ax.legend(fontsize=7)
        common.plot_theory_and_simulation(ax_c, rows, "lam", color="C3", label="learned c", panel=panel,
                                          metric="c", lam_prime=cfg.lam_prime, recalibrate=True)
        ax_c.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax_c.set(xlabel="pre-training regularisation λ", ylabel="recalibration c")
    fig.tight_layout()
    return fig
