"""Beyond the paper: what a larger LoRA rank buys, and where full fine-tuning sits (docs/model.md §6).

Design: the reference softmax setting (α = 0.1, α' = 3, Δ = 0.5, λ = 0.05) with a teacher shift of rank
``r* ∈ {1, 2, 4}``; fine-tuned by LoRA of rank ``r`` (x axis, log₂), by the nuclear-penalised full update and
by the ridge-penalised full update (right of the axis), at each ``λ'`` (rows). Panels: ``E'`` and the update
alignment. Lines: the rank-r state evolution (docs/theory.md §7.1; ``r`` up to ``max(theory_ranks)``);
markers: simulations at ``D`` with ``seeds`` runs (every variant fine-tunes the same pre-training on the same
data). A table of the best rank per ``(r*, λ')`` goes to ``rank.md`` next to the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from solvable_attention.averages import mean_se

from ..campaigns.records import write_file_atomic
from . import common

NAME = "rank"
FULL_UPDATES = ("full_nuclear", "full_ridge")
# theory points drawn: the solve reached a fixed point (a replica-symmetric unstable one is drawn, circled)
FIXED_POINT_STATUSES = ("converged", "converged_at_noise_floor", "unstable_fixed_point", "not_global")
COLUMNS = ("source", "panel", "alpha", "delta", "lam", "lam_prime", "activation", "shift_rank", "rank", "D",
           "n_seeds", "metric", "value", "se")


@dataclass(frozen=True)
class Config(common.FigureConfig):
    """The rank figure's settings and run sizes.

    Attributes:
        alpha: ``α``.
        alpha_prime: ``α'``.
        lam: pre-training ``λ``.
        lam_primes: the ``λ'`` of the rows (LoRA and nuclear; the ridge uses the same value as ``λ'_F``).
        shift_ranks: the shift ranks ``r*`` (one line/marker colour each).
        theory_ranks: the LoRA ranks of the theory lines.
        sim_ranks: the LoRA ranks of the simulation markers.
        high_rank: theory points with ``r ≥ high_rank`` use ``high_rank_samples`` Monte Carlo samples instead of
            ``n_samples`` (a rank-4 map evaluation costs 8–12 s at 2¹⁴ samples, 1.5–2 s at 2¹²; docs/theory.md
            §7.1; softmax ``r = 4, r* = 1``, λ' = 1: ``E'`` 0.5066 at 2¹² against 0.5056 at 2¹⁴).
        high_rank_samples: their Monte Carlo samples.
        theory_time_limit: seconds one theory point with ``r ≥ high_rank`` may take (its solve then stops at the
            best iterate, status ``max_iterations``, and the point is not drawn); ``None``: no limit.
        activation, delta, T, D, seeds, n_test, n_samples, n_test_samples: as :class:`common.FigureConfig`.
    """

    alpha: float = 0.1
    alpha_prime: float = 3.0
    lam: float = 0.05
    lam_primes: tuple = (0.05, 1.0)
    shift_ranks: tuple = (1, 2, 4)
    theory_ranks: tuple = (1, 2, 4)
    sim_ranks: tuple = (1, 2, 4, 8)
    high_rank: int = 4
    high_rank_samples: int = 2 ** 12
    theory_time_limit: float | None = 900.0


FULL = Config()
QUICK = Config(lam_primes=(1.0,), shift_ranks=(1, 2), theory_ranks=(1, 2), sim_ranks=(1, 2, 4), D=40, seeds=2,
               n_test=4000, n_samples=2 ** 11, n_test_samples=2 ** 14)


def theory_point(alpha, alpha_prime, delta, lam, lam_prime, activation, T, shift_rank, rank, n_samples,
                 n_test_samples, time_limit=None) -> dict:
    """One rank-r state-evolution point (docs/theory.md §7.1).

    Args:
        alpha, alpha_prime, delta, lam, lam_prime, activation, T: the setting.
        shift_rank: ``r*``.
        rank: ``r``.
        n_samples, n_test_samples: the Monte Carlo samples.
        time_limit: seconds the solve may take (``None``: no limit).

    Returns:
        ``{"test_error", "test_error_se", "test_error_baseline", "update_alignment", "replicon", "status",
        "converged", "rs_unstable", "Q_eigenvalues", "M_singular_values"}``.
    """
    from state_evolution import solve_state_evolution

    s = solve_state_evolution(alpha, alpha_prime, delta, lam, lam_prime=lam_prime, activation=activation, T=T,
                              rank=rank, shift_rank=shift_rank, n_samples=n_samples, n_test_samples=n_test_samples,
                              warn=False, time_limit=time_limit)
    f = s.finetune
    alignment = f.update_alignment if hasattr(f, "update_alignment") else f.alignment ** 2
    return {"test_error": f.test_error, "test_error_se": f.test_error_se, "test_error_baseline": f.test_error_baseline,
            "update_alignment": alignment, "replicon": f.replicon, "status": f.status.value,
            "converged": bool(s.converged), "rs_unstable": f.status.value == "unstable_fixed_point",
            "Q_eigenvalues": list(getattr(f, "Q_eigenvalues", [f.q] if hasattr(f, "q") else [])),
            "M_singular_values": list(getattr(f, "M_singular_values", [abs(f.m)] if hasattr(f, "m") else []))}


def variant_specs(sim_ranks, lam_prime) -> dict:
    """``{name: simulate_variants spec}``: LoRA of each rank, the nuclear and the ridge full updates.

    Args:
        sim_ranks: the LoRA ranks.
        lam_prime: ``λ'`` (and ``λ'_F``).

    Returns:
        The specs by name (``lora_r{r}``, ``full_nuclear``, ``full_ridge``).
    """
    specs = {f"lora_r{r}": dict(rank=int(r), lam_prime=lam_prime) for r in sim_ranks}
    specs.update(full_nuclear=dict(finetune="full_nuclear", lam_prime=lam_prime),
                 full_ridge=dict(finetune="full_ridge", lam_prime=lam_prime))
    return specs


def simulation_point(D, seed, alpha, alpha_prime, delta, lam, lam_prime, activation, T, shift_rank, sim_ranks,
                     n_test) -> dict:
    """One pre-training fine-tuned by every variant of :func:`variant_specs` on the same data.

    Args:
        D, seed: size and seed.
        alpha, alpha_prime, delta, lam, lam_prime, activation, T: the setting.
        shift_rank: ``r*``.
        sim_ranks: the LoRA ranks.
        n_test: test samples.

    Returns:
        ``{"variants": {name: {"test_error", "test_error_baseline", "update_alignment", "update_rank",
        "converged"}}}``.
    """
    from simulations import simulate_variants

    specs = variant_specs(sim_ranks, lam_prime)
    res = simulate_variants(D, alpha, alpha_prime, delta, lam, variants=list(specs.values()), seed=seed,
                            activation=activation, T=T, n_test=n_test, shift_rank=shift_rank)
    out = {}
    for name, r in zip(specs, res):
        f = r.finetune
        out[name] = {k: float(getattr(f, k)) for k in ("test_error", "test_error_baseline", "update_alignment",
                                                        "update_rank")}
        out[name]["converged"] = bool(r.converged)
    return {"variants": out}


def _rank_of(name: str):
    return int(name[len("lora_r"):]) if name.startswith("lora_r") else name


def rows_of(theory, sims, cfg: Config) -> list[dict]:
    """Tidy rows (:data:`COLUMNS`): theory per ``(λ', r*, r)``, simulation mean ± s.e. per variant.

    Args:
        theory: the theory records.
        sims: the simulation records.
        cfg: the :class:`Config`.

    Returns:
        The rows; metrics ``E_ft``, ``E_ft_baseline``, ``update_alignment`` (and, for the theory, ``replicon``,
        ``converged``, ``rs_unstable``; for the simulations ``update_rank``).
    """
    base = dict(alpha=cfg.alpha, delta=cfg.delta, lam=cfg.lam, activation=cfg.activation)
    rows = []
    for rec in theory:
        p, res = rec["point"], rec["result"]
        setting = dict(base, panel=f"λ'={p['lam_prime']:g}", lam_prime=p["lam_prime"], shift_rank=p["shift_rank"],
                       rank=p["rank"])
        for metric, value, se in (("E_ft", res["test_error"], res["test_error_se"]),
                                  ("E_ft_baseline", res["test_error_baseline"], 0.0),
                                  ("update_alignment", res["update_alignment"], 0.0),
                                  ("replicon", res["replicon"], 0.0), ("converged", float(res["converged"]), 0.0),
                                  ("rs_unstable", float(res["rs_unstable"]), 0.0),
                                  ("fixed_point", float(res["status"] in FIXED_POINT_STATUSES), 0.0)):
            rows.append(dict(source="theory", **setting, D=math.inf, n_seeds=0, metric=metric, value=value, se=se))
    groups = {}
    for rec in sims:
        p = rec["point"]
        for name, v in rec["result"]["variants"].items():
            g = groups.setdefault((p["lam_prime"], p["shift_rank"], name), {})
            for metric, key in (("E_ft", "test_error"), ("E_ft_baseline", "test_error_baseline"),
                                ("update_alignment", "update_alignment"), ("update_rank", "update_rank")):
                g.setdefault(metric, []).append(v[key])
    for (lp, rs, name), g in groups.items():
        setting = dict(base, panel=f"λ'={lp:g}", lam_prime=lp, shift_rank=rs, rank=_rank_of(name))
        for metric, values in g.items():
            est = mean_se(values)
            rows.append(dict(source="simulation", **setting, D=cfg.D, n_seeds=est.n, metric=metric, value=est.mean,
                             se=est.se))
    return rows


def _x(rank, cfg):
    top = max(max(cfg.sim_ranks), max(cfg.theory_ranks))
    return {"full_nuclear": 2.0 * top, "full_ridge": 4.0 * top}.get(rank, rank)


def plot(rows, cfg: Config):
    """The figure: rows ``λ'``, columns ``E'`` and the update alignment; a colour per ``r*``.

    Args:
        rows: the tidy rows.
        cfg: the :class:`Config`.

    Returns:
        The matplotlib figure.
    """
    fig, axes = common.new_figure(len(cfg.lam_primes), 2)
    axes = np.atleast_2d(axes)
    colours = ["C0", "C1", "C2", "C3", "C4"]
    for i, lp in enumerate(cfg.lam_primes):
        for j, metric in enumerate(("E_ft", "update_alignment")):
            ax = axes[i, j]
            for k, rs in enumerate(cfg.shift_ranks):
                c = colours[k % len(colours)]
                drawn = {r["rank"] for r in rows if r["source"] == "theory" and r["metric"] == "fixed_point"
                         and r["lam_prime"] == lp and r["shift_rank"] == rs and r["value"] > 0.5}
                th = sorted((r for r in rows if r["source"] == "theory" and r["metric"] == metric
                             and r["lam_prime"] == lp and r["shift_rank"] == rs and r["rank"] in drawn),
                            key=lambda r: r["rank"])
                unstable = {r["rank"] for r in rows if r["source"] == "theory" and r["metric"] == "rs_unstable"
                            and r["lam_prime"] == lp and r["shift_rank"] == rs and r["value"] > 0.5}
                if th:
                    ax.plot([r["rank"] for r in th], [r["value"] for r in th], "-", color=c, label=f"theory, r* = {rs}")
                    ax.plot([r["rank"] for r in th if r["rank"] in unstable],
                            [r["value"] for r in th if r["rank"] in unstable], "o", mfc="none", color=c, ms=9)
                sim = [r for r in rows if r["source"] == "simulation" and r["metric"] == metric
                       and r["lam_prime"] == lp and r["shift_rank"] == rs]
                sim.sort(key=lambda r: _x(r["rank"], cfg))
                ax.errorbar([_x(r["rank"], cfg) for r in sim], [r["value"] for r in sim], [r["se"] for r in sim],
                            fmt="s", color=c, ms=4, capsize=2, label=f"D = {cfg.D}, r* = {rs}" if j == 0 else None)
                if metric == "E_ft":
                    base = [r for r in rows if r["source"] == "theory" and r["metric"] == "E_ft_baseline"
                            and r["lam_prime"] == lp and r["shift_rank"] == rs]
                    if base:
                        ax.axhline(base[0]["value"], color=c, ls=":", lw=0.8)
            ax.set_xscale("log", base=2)
            ticks = sorted(set(cfg.sim_ranks) | set(cfg.theory_ranks))
            ax.set_xticks(ticks + [_x("full_nuclear", cfg), _x("full_ridge", cfg)])
            ax.set_xticklabels([str(t) for t in ticks] + ["nuc", "ridge"])
            ax.set_xlabel("LoRA rank r (right: full fine-tuning)")
            ax.set_ylabel("E'" if metric == "E_ft" else "update alignment")
            ax.set_title(f"{cfg.activation}, λ' = {lp:g}: " + ("E' (dotted: E'_0)" if metric == "E_ft"
                                                                 else "⟨Δ̂, VVᵀ⟩/(‖Δ̂‖‖VVᵀ‖)"), fontsize=9)
            if i == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f"α = {cfg.alpha:g}, α' = {cfg.alpha_prime:g}, Δ = {cfg.delta:g}, λ = {cfg.lam:g}; "
                 "open circles: replica-symmetric point unstable", fontsize=9)
    fig.tight_layout()
    return fig


def best_rank_table(rows, cfg: Config) -> tuple[str, list[dict]]:
    """The best rank per ``(λ', r*)``, by the theory and by the simulations, and where full fine-tuning sits.

    Args:
        rows: the tidy rows.
        cfg: the :class:`Config`.

    Returns:
        ``(markdown, entries)``.
    """
    lines = ["| λ' | r* | theory E' by r (ᵘ: RS-unstable) | theory best r (E') | sim E' by variant | sim best | "
             "E'(r*) − E'(best) sim | E'_0 |", "|---|---|---|---|---|---|---|---|"]
    entries = []
    for lp in cfg.lam_primes:
        for rs in cfg.shift_ranks:
            flags = {(r["metric"], r["rank"]): r["value"] for r in rows if r["source"] == "theory"
                     and r["lam_prime"] == lp and r["shift_rank"] == rs and r["metric"] in ("fixed_point", "rs_unstable")}
            th = {r["rank"]: r["value"] for r in rows if r["source"] == "theory" and r["metric"] == "E_ft"
                  and r["lam_prime"] == lp and r["shift_rank"] == rs and flags.get(("fixed_point", r["rank"]), 1) > 0.5}
            sim = {r["rank"]: (r["value"], r["se"]) for r in rows if r["source"] == "simulation"
                   and r["metric"] == "E_ft" and r["lam_prime"] == lp and r["shift_rank"] == rs}
            base = [r["value"] for r in rows if r["metric"] == "E_ft_baseline" and r["lam_prime"] == lp
                    and r["shift_rank"] == rs]
            best_th = min(th, key=th.get) if th else None
            best_sim = min(sim, key=lambda k: sim[k][0]) if sim else None
            at_rs = sim.get(rs)
            gap = f"{at_rs[0] - sim[best_sim][0]:+.4f}" if at_rs and best_sim is not None else "—"
            entries.append(dict(lam_prime=lp, shift_rank=rs, theory=th, theory_best=best_th,
                                simulation={str(k): v for k, v in sim.items()}, simulation_best=str(best_sim)))
            lines.append(f"| {lp:g} | {rs} | " + ", ".join(f"{k}: {v:.4f}" + ("ᵘ" if flags.get(("rs_unstable", k)) else "")
                                                    for k, v in sorted(th.items()))
                         + f" | {best_th} ({th.get(best_th, math.nan):.4f}) | "
                         + ", ".join(f"{k}: {v[0]:.4f} ± {v[1]:.4f}" for k, v in
                                     sorted(sim.items(), key=lambda kv: _x(kv[0], cfg)))
                         + f" | {best_sim} | {gap} | {base[0] if base else math.nan:.4f} |")
    return "\n".join(lines), entries


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``rank.png/.pdf/.csv/.json`` and ``rank.md`` (the best-rank table) under ``out``.

    Args:
        out: output folder (created); theory and simulations are cached under ``out/cache/rank/``.
        quick: the small configuration ``QUICK``.
        executor: where the points run (:class:`~simulations.campaigns.resumable.Executor`).
        progress: show the progress bar.
        **overrides: fields of :class:`Config`.

    Returns:
        ``{"paths": {"png", "pdf", "csv", "json", "md"}, "timings": ...}``.

    Raises:
        ValueError: an unknown override or ``D < 2``.
    """
    cfg = common.make_config(FULL, QUICK, quick, overrides)
    run = common.Reproduction(NAME, out, cfg, executor=executor, progress=progress)
    setting = dict(alpha=cfg.alpha, alpha_prime=cfg.alpha_prime, delta=cfg.delta, lam=cfg.lam,
                   activation=cfg.activation, T=cfg.T)
    theory_points = [dict(setting, lam_prime=lp, shift_rank=rs, rank=r,
                          n_samples=cfg.high_rank_samples if r >= cfg.high_rank else cfg.n_samples,
                          n_test_samples=cfg.n_test_samples,
                          **({"time_limit": cfg.theory_time_limit}
                             if cfg.theory_time_limit is not None and r >= cfg.high_rank else {}))
                     for lp in cfg.lam_primes for rs in cfg.shift_ranks for r in cfg.theory_ranks]
    sim_points = [dict(setting, lam_prime=lp, shift_rank=rs, sim_ranks=list(cfg.sim_ranks), D=cfg.D, seed=s,
                       n_test=cfg.n_test) for lp in cfg.lam_primes for rs in cfg.shift_ranks for s in range(cfg.seeds)]
    run.expect("theory", theory_points)
    run.expect("simulation", sim_points)
    theory = run.sweep("theory", theory_point, theory_points)
    sims = run.sweep("simulation", simulation_point, sim_points)
    rows = rows_of(theory, sims, cfg)
    table, entries = best_rank_table(rows, cfg)
    result = run.finish(plot(rows, cfg), rows, notes=table)
    common.write_rows_csv(result["paths"]["csv"], rows, COLUMNS)
    md = Path(out) / f"{NAME}.md"
    write_file_atomic(md, lambda tmp: Path(tmp).write_text(table + "\n"))
    result["paths"]["md"] = md
    return result
