"""Figure 4: active fine-tuning — ``E'`` vs the label budget ``α'`` for each selection strategy.

Design (docs/model.md §7: "fine-tuning test errors with and without active selection"): a pool of
``α_pool·D`` fresh candidate inputs; ``α'D`` of them are labelled, chosen by a strategy of
:mod:`solvable_attention.active` (``random`` = no active selection) scoring the frozen logits ``Ĥ``.
Panels: (a) ``E'`` vs ``α'``; (b) the gain ``E'[random] − E'[strategy]`` at equal budget (per seed
in the simulations: common random numbers); (c) the alignment ``|m'|/√(q'ρ_v)``. At ``α' = α_pool``
every strategy labels the whole pool (no selection): the curves meet. Lines: the selection-aware
state evolution (docs/theory.md §5); markers: simulations (mean ± s.e. over seeds).
The JSON records, per budget, the strategy the theory ranks best and its gain over random.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import common, selection_sweeps as sweeps

NAME = "fig4"


@dataclass(frozen=True)
class Config(common.FigureConfig):
    """Figure 4's settings and run sizes.

    Attributes:
        alpha: ``α``, pre-training samples per ``D²``.
        lam: ``λ``, pre-training strength.
        pool_ratio: ``α_pool``, candidates per ``D``.
        alpha_primes: the label budgets ``α'`` of the x axis.
        strategies: the selection strategies compared (names of :data:`solvable_attention.active.STRATEGIES`).
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

    alpha: float = 0.1
    lam: float = 0.05
    pool_ratio: float = 8.0
    alpha_primes: tuple = (1.0, 2.0, 4.0, 8.0)
    strategies: tuple = ("random", "entropy", "low_logit_norm", "logit_norm")


FULL = Config()
QUICK = Config(alpha_primes=(1.0, 4.0), D=40, seeds=1, n_test=4000, n_samples=2 ** 12, n_test_samples=2 ** 14)


def variants(cfg: Config) -> dict:
    """One fine-tuning variant per strategy, all selecting from the pool.

    Args:
        cfg: the :class:`Config`.

    Returns:
        ``{strategy: {"strategy": strategy, "pool_ratio": α_pool}}``.
    """
    return {s: dict(strategy=s, pool_ratio=cfg.pool_ratio) for s in cfg.strategies}


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``fig4.png/.pdf/.csv/.json`` under ``out``; ``overrides``: fields of :class:`Config`.

    Args:
        out: output folder (created); simulations are cached under ``out/cache/fig4/``.
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
    setting = dict(alpha=cfg.alpha, delta=cfg.delta, lam=cfg.lam, lam_prime=cfg.lam_prime, T=cfg.T,
                   activation=cfg.activation)
    theory_points = [dict(setting, alpha_primes=list(cfg.alpha_primes), variants=variants(cfg),
                          n_samples=cfg.n_samples, n_test_samples=cfg.n_test_samples)]
    sim_points = [dict(setting, alpha_prime=ap, D=cfg.D, seed=s, n_test=cfg.n_test, variants=variants(cfg))
                  for ap in cfg.alpha_primes for s in range(cfg.seeds)]
    run.expect("theory", theory_points)
    run.expect("simulation", sim_points)
    sims = run.sweep("simulation", sweeps.simulation_point, sim_points)  # first: the ETA calibrates on them early
    theory = run.sweep("theory", sweeps.theory_point, theory_points)
    rows = sweeps.theory_rows(theory) + sweeps.simulation_rows(sims)
    rows += sweeps.gain_rows(rows, sims, "alpha_prime", "random")
    best = best_strategies(rows, cfg)
    result = run.finish(plot(rows, cfg), rows, notes=f"theory's best strategy per budget: {best}")
    sweeps.write_csv(result["paths"]["csv"], rows)
    result["best"] = best
    return result


def best_strategies(rows, cfg: Config) -> dict:
    """Per budget ``α' < α_pool``: the theory's lowest-``E'`` strategy and its gain over random.

    Args:
        rows: the tidy rows (with the theory's ``E_ft`` of every strategy, ``random`` included).
        cfg: the :class:`Config`.

    Returns:
        ``{f"{α'}": {"strategy", "E_ft", "gain_vs_random", "gain_se"}}``.
    """
    out = {}
    for ap in cfg.alpha_primes:
        if ap >= cfg.pool_ratio:
            continue
        th = {r["panel"]: r for r in common.select(rows, source="theory", metric="E_ft", alpha_prime=ap)}
        name = min(th, key=lambda k: th[k]["value"])
        out[f"{ap:g}"] = dict(strategy=name, E_ft=th[name]["value"], gain_vs_random=th["random"]["value"] - th[name]["value"],
                              gain_se=float(np.hypot(th["random"]["se"], th[name]["se"])))
    return out


def plot(rows, cfg: Config):
    """The figure from the tidy rows.

    Args:
        rows: the tidy rows (theory and simulation) of the CSV.
        cfg: the :class:`Config` they were computed with.

    Returns:
        The matplotlib figure.
    """
    return sweeps.plot_panels(
        rows, cfg.strategies, "alpha_prime", logx=False, xlabel="label budget α' = n'/D", reference="random",
        title=f"{cfg.activation}: α = {cfg.alpha:g}, Δ = {cfg.delta:g}, λ = {cfg.lam:g}, λ' = {cfg.lam_prime:g}, "
              f"pool α_pool = {cfg.pool_ratio:g}",
        markers=f"markers: D = {cfg.D}, {cfg.seeds} seeds (paired differences)")
