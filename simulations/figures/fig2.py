"""Figure 2: effect of pre-training on the fine-tuning task (softmax).

Design (docs/model.md §7 gives only "effect of pre-training on fine-tuning"): the fine-tuning task is held
at the reference point ``α' = 3, T = 3, Δ = 0.5, λ' = 1``; pre-training is varied through its
sample ratio ``α`` (x axis, log) at a few regularisations ``λ`` (one colour each). Panels:

(a) ``E'`` (solid, markers ●) and the no-adaptation baseline ``E'_0`` (dashed, markers ×) vs ``α``:
    better pre-training lowers both, and the LoRA gain ``E'_0 − E'`` is what fine-tuning adds;
(b) the alignment ``|m'|/√(q'ρ_v)`` of the LoRA direction with the task's vs ``α``;
(c) ``E'`` against the pre-training matrix error ``mse_S`` (parametric in ``α``): if pre-training
    acted on LoRA only through the effective noise ``Δ' + mse_S`` (exact for the identity
    activation, docs/theory.md §4.4), the curves of different ``λ`` would fall on one line.

Lines: state evolution; markers: simulations (mean ± s.e. over seeds). Figure 5 is this figure
with the identity activation (:mod:`simulations.figures.fig5`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common

NAME = "fig2"


@dataclass(frozen=True)
class Config(common.FigureConfig):
    """Figure 2's settings and run sizes.

    Attributes:
        alpha_prime: ``α'``, fine-tuning samples per ``D``.
        alphas: the pre-training ``α`` of the x axis.
        lams: the pre-training ``λ`` of the curves.
        activation: ``"softmax"`` or ``"identity"``.
        delta: ``Δ ≥ 0``, pre-training label noise (also ``Δ'``).
        lam_prime: ``λ' ≥ 0``, LoRA ridge.
        T: tokens per sequence.
        D: simulation dimension, ``≥ 2``.
        seeds: simulation seeds per point.
        n_test: simulation test samples.
        n_samples: the theory's Monte Carlo channel samples.
        n_test_samples: the theory's Monte Carlo test samples.
    """

    alpha_prime: float = 3.0
    alphas: tuple = tuple(float(x) for x in np.geomspace(0.02, 1.0, 9))
    lams: tuple = (0.003, 0.03, 0.3)


FULL = Config()
QUICK = Config(alphas=(0.03, 0.1, 0.3, 1.0), lams=(0.01, 0.1), D=40, seeds=2, n_test=5000, n_samples=2 ** 12,
               n_test_samples=2 ** 15)


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``fig2.png/.pdf/.csv/.json`` under ``out``; ``overrides``: fields of :class:`Config`.

    Args:
        out: output folder (created); simulations are cached under ``out/cache/fig2/``.
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
    return reproduce_as(NAME, FULL, QUICK, out, quick=quick, executor=executor, progress=progress, **overrides)


def reproduce_as(name, full: Config, quick_config: Config, out: Path, *, quick=False, executor=None, progress=True,
                 **overrides) -> dict:
    """This figure's reproduction under another name and configuration (Figure 5: identity).

    Args:
        name: the figure's name (file names and cache folder).
        full: the full :class:`Config`.
        quick_config: the quick :class:`Config`.
        out: output folder.
        quick: use ``quick_config``.
        executor: where the simulations run.
        progress: show progress bars.
        **overrides: fields of :class:`Config`.

    Returns:
        ``{"paths": ..., "timings": ...}``.

    Raises:
        ValueError: an unknown override or ``D < 2``.
    """
    cfg = common.make_config(full, quick_config, quick, overrides)
    run = common.Reproduction(name, out, cfg, executor=executor, progress=progress)
    setting = dict(alpha_prime=cfg.alpha_prime, delta=cfg.delta, T=cfg.T, activation=cfg.activation)
    theory_points = [dict(setting, alpha=a, lams=list(cfg.lams), lam_primes=[cfg.lam_prime],
                          n_samples=cfg.n_samples, n_test_samples=cfg.n_test_samples) for a in cfg.alphas]
    sim_points = [dict(setting, alpha=a, lam=lam, D=cfg.D, seed=s, n_test=cfg.n_test,
                       variants=[dict(lam_prime=cfg.lam_prime)])
                  for a in cfg.alphas for lam in cfg.lams for s in range(cfg.seeds)]
    run.expect("theory", theory_points)
    run.expect("simulation", sim_points)
    sims = run.sweep("simulation", common.simulation_point, sim_points)  # first: the ETA calibrates on them early
    curves = run.sweep("theory", common.theory_curve, theory_points)
    rows = common.theory_rows(curves, _panel) + common.simulation_rows(sims, _panel)
    return run.finish(plot(rows, cfg), rows)


def _panel(point) -> str:
    return "alpha-sweep"


def plot(rows, cfg: Config):
    """The three panels from the tidy rows (also used by the notebooks).

    Args:
        rows: the tidy rows (theory and simulation) of the CSV.
        cfg: the :class:`Config` they were computed with.

    Returns:
        The matplotlib figure.
    """
    rows = common.mask_unconverged(rows)
    fig, axes = common.new_figure(1, 3, width=4.0, height=3.5)
    ax_e, ax_a, ax_m = axes[0]
    for i, lam in enumerate(cfg.lams):
        color, lab = f"C{i}", f"λ = {lam:g}"
        common.plot_theory_and_simulation(ax_e, rows, "alpha", color=color, label=lab, metric="E_ft", lam=lam)
        xs, ys, _ = common.series(rows, "alpha", source="theory", metric="E_ft_baseline", lam=lam)
        ax_e.plot(xs, ys, "--", color=color, lw=1)
        xs, ys, se = common.series(rows, "alpha", source="simulation", metric="E_ft_baseline", lam=lam)
        ax_e.errorbar(xs, ys, yerr=np.nan_to_num(se), fmt="x", color=color, ms=4, capsize=2)
        common.plot_theory_and_simulation(ax_a, rows, "alpha", color=color, label=lab, metric="alignment", lam=lam)
        for source, style in (("theory", "-"), ("simulation", "o")):
            x, y, xse, yse = common.paired(rows, "mse_S", "E_ft", source=source, lam=lam)
            if source == "theory":
                ax_m.plot(x, y, style, color=color, label=lab)
            else:
                ax_m.errorbar(x, y, xerr=np.nan_to_num(xse), yerr=np.nan_to_num(yse), fmt=style, color=color, ms=4,
                              capsize=2)
    ax_e.set(xlabel="pre-training samples α = n/D²", ylabel="E' (solid) and E'_0 (dashed)")
    ax_a.set(xlabel="pre-training samples α = n/D²", ylabel="alignment |m'|/√(q'ρ_v)")
    ax_m.set(xlabel="pre-training error mse_S", ylabel="fine-tuning test error E'")
    ax_e.set_title(f"{cfg.activation}: α' = {cfg.alpha_prime:g}, Δ = {cfg.delta:g}, λ' = {cfg.lam_prime:g}, "
                   f"T = {cfg.T}", fontsize=8)
    ax_a.set_title(f"markers: D = {cfg.D}, {cfg.seeds} seeds", fontsize=8)
    ax_m.set_title("E' vs pre-training error (parametric in α)", fontsize=8)
    ax_e.legend(fontsize=7)
    fig.tight_layout()
    return fig
