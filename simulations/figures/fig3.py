"""Figure 3: fine-tuning inputs drawn from the pre-training set (the reuse variant).

Design (docs/model.md §7: "fine-tuning input samples drawn from the pre-training set"): the reference
softmax setting with ``α' = 2`` (the reuse pool must fit in the ``αD²`` pre-training samples),
``λ' = 1``, pre-training regularisation ``λ`` swept (x axis, log). Variants on the same ``Ŝ``:
fresh inputs; reused inputs (a random ``α'D`` of the pre-training set, relabelled by the fine-tuning
teacher with fresh noise); reused inputs selected from a pool of ``α_pool·D`` pre-training samples by
the pre-training residual (largest, and smallest). Panels: (a) ``E'``; (b) the gain
``E'[fresh] − E'[variant]`` (per seed in the simulations); (c) the alignment. In the theory the
reused samples' ``(Ĥ, H0)`` follow the pre-training channel's *training* law at its fixed point
(``Ĥ = ω + V g*``; docs/theory.md §5). Lines: theory; markers: simulations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import common, selection_sweeps as sweeps

NAME = "fig3"


@dataclass(frozen=True)
class Config(common.FigureConfig):
    """Figure 3's settings and run sizes.

    Attributes:
        alpha: ``α``, pre-training samples per ``D²``.
        alpha_prime: ``α'``, fine-tuning samples per ``D``.
        pool_ratio: ``α_pool``, reused candidates per ``D`` of the selecting variants.
        lams: the pre-training ``λ`` of the x axis.
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
    alpha_prime: float = 2.0
    pool_ratio: float = 4.0
    lams: tuple = (0.01, 0.03, 0.1, 0.3)


FULL = Config()
QUICK = Config(lams=(0.03, 0.3), D=50, seeds=1, n_test=4000, n_samples=2 ** 12, n_test_samples=2 ** 14)


def variants(cfg: Config) -> dict:
    """The fine-tuning variants compared: fresh inputs, reused inputs, and reuse with selection by residual.

    Args:
        cfg: the :class:`Config`.

    Returns:
        ``{name: keyword arguments of the fine-tuning variant}``.
    """
    return {"fresh": dict(), "reuse": dict(reuse=True),
            "reuse, top residual": dict(reuse=True, strategy="residual", pool_ratio=cfg.pool_ratio),
            "reuse, low residual": dict(reuse=True, strategy="low_residual", pool_ratio=cfg.pool_ratio)}


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``fig3.png/.pdf/.csv/.json`` under ``out``; ``overrides``: fields of :class:`Config`.

    Args:
        out: output folder (created); simulations are cached under ``out/cache/fig3/``.
        quick: the small configuration ``QUICK`` instead of ``FULL`` (minutes, not hours).
        executor: where the simulations run (:class:`~simulations.campaigns.resumable.Executor`;
            default in-process).
        progress: show progress bars.
        **overrides: fields of :class:`Config` (e.g. ``D=30, seeds=1``).

    Returns:
        ``{"paths": {"png", "pdf", "csv", "json"}, "timings": ...}``.

    Raises:
        ValueError: an unknown override or ``D < 2``, or a reuse pool ``α_pool D`` larger than the ``α D²`` pre-training samples.
    """
    cfg = common.make_config(FULL, QUICK, quick, overrides)
    if cfg.pool_ratio * cfg.D > cfg.alpha * cfg.D ** 2:
        raise ValueError(f"the reuse pool α_pool·D = {cfg.pool_ratio * cfg.D:g} exceeds the αD² = "
                         f"{cfg.alpha * cfg.D ** 2:g} pre-training samples: raise D or lower pool_ratio")
    run = common.Reproduction(NAME, out, cfg, executor=executor, progress=progress)
    setting = dict(alpha=cfg.alpha, delta=cfg.delta, lam_prime=cfg.lam_prime, T=cfg.T, activation=cfg.activation)
    theory_points = [dict(setting, lam=lam, alpha_primes=[cfg.alpha_prime], variants=variants(cfg),
                          n_samples=cfg.n_samples, n_test_samples=cfg.n_test_samples) for lam in cfg.lams]
    sim_points = [dict(setting, lam=lam, alpha_prime=cfg.alpha_prime, D=cfg.D, seed=s, n_test=cfg.n_test,
                       variants=variants(cfg)) for lam in cfg.lams for s in range(cfg.seeds)]
    run.expect("theory", theory_points)
    run.expect("simulation", sim_points)
    sims = run.sweep("simulation", sweeps.simulation_point, sim_points)  # first: the ETA calibrates on them early
    theory = run.sweep("theory", sweeps.theory_point, theory_points)
    rows = sweeps.theory_rows(theory) + sweeps.simulation_rows(sims)
    rows += sweeps.gain_rows(rows, sims, "lam", "fresh")
    result = run.finish(plot(rows, cfg), rows)
    sweeps.write_csv(result["paths"]["csv"], rows)
    return result


def plot(rows, cfg: Config):
    """The figure from the tidy rows.

    Args:
        rows: the tidy rows (theory and simulation) of the CSV.
        cfg: the :class:`Config` they were computed with.

    Returns:
        The matplotlib figure.
    """
    return sweeps.plot_panels(
        rows, list(variants(cfg)), "lam", logx=True, xlabel="pre-training regularisation λ", reference="fresh",
        title=f"{cfg.activation}: α = {cfg.alpha:g}, α' = {cfg.alpha_prime:g}, Δ = {cfg.delta:g}, "
              f"λ' = {cfg.lam_prime:g}, pool α_pool = {cfg.pool_ratio:g}",
        markers=f"markers: D = {cfg.D}, {cfg.seeds} seeds (paired differences)")
