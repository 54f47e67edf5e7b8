"""Survey of the solvers' status over random valid parameter points, against simulation.

    python -m simulations.campaigns.status_survey [--points 50] [--D 100] [--seeds 2] [--workers 2]
        [--out results/status_survey] [--report docs/status_survey.md]

Draws ``--points`` settings at random (fixed seed; ranges in :data:`RANGES`, log-uniform where the range
spans decades, the activation softmax or identity with equal probability), solves the state evolution at
each (:func:`state_evolution.solve_state_evolution`), simulates each at ``D`` over ``--seeds`` seeds
(:func:`simulations.simulate`), and writes a report: the fraction of points by status, and for the
successful ones the gap of ``E'`` and of the alignment between theory and simulation (relative gap and
z-score with the simulation's standard error), plus every point whose status is successful although
a sibling branch had a lower objective (there must be none). Both kinds of point are resumable
(:func:`~simulations.campaigns.resumable.run_points`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from .records import run_metadata, write_json_atomic
from .resumable import Executor, run_points

# (low, high, log-scale) of each drawn parameter.
RANGES = {"lam": (0.005, 1.0, True), "lam_prime": (0.01, 10.0, True), "delta": (0.0, 2.0, False),
          "beta": (0.5, 20.0, True), "alpha": (0.05, 1.0, True), "alpha_prime": (0.5, 10.0, True)}
METRICS = ("test_error", "alignment")
# A theory value below this (an alignment of exactly 0 on the uninformative branch) gets no relative gap.
ZERO_THEORY = 1e-9


def draw_points(n: int, seed: int = 2026) -> list[dict]:
    """``n`` random settings (dicts of keyword arguments of ``solve_state_evolution``).

    Args:
        n: number of settings.
        seed: seed of the draw.

    Returns:
        The settings, each with ``alpha, alpha_prime, delta, lam, lam_prime, beta, activation``.
    """
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        p = {}
        for name, (lo, hi, log) in RANGES.items():
            u = rng.uniform()
            p[name] = float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if log else lo + u * (hi - lo))
        p["activation"] = "softmax" if rng.uniform() < 0.5 else "identity"
        points.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in p.items()})
    return points


def theory_point(alpha, alpha_prime, delta, lam, lam_prime, beta, activation, n_samples=2 ** 14) -> dict:
    """The state evolution at one setting: metrics, status, branches (see :func:`draw_points`).

    Args:
        alpha: ``α > 0``, pre-training samples per ``D²``.
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D``.
        delta: ``Δ ≥ 0``, label noise of both stages.
        lam: ``λ ≥ 0``, pre-training regularisation.
        lam_prime: ``λ' ≥ 0``, LoRA ridge.
        beta: ``β > 0``, inverse temperature.
        activation: ``"softmax"`` or ``"identity"``.
        n_samples: Monte Carlo samples of the channels.

    Returns:
        ``{"status", "message", "converged", "test_error", "alignment", "replicon", "objective", "branches",
        "selection_resolved"}``;
        ``status = "error"`` with the exception's text when the solve raised.
    """
    from state_evolution import solve_state_evolution

    try:
        sol = solve_state_evolution(alpha, alpha_prime, delta, lam, lam_prime=lam_prime, beta=beta,
                                    activation=activation, n_samples=n_samples, warn=False)
    except Exception as exc:  # reported, not hidden: a crash on a valid input is a finding of the survey
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "converged": False}
    f = sol.finetune
    branches = [{"objective": getattr(b, "objective", math.nan), "alignment": getattr(b, "alignment", math.nan),
                 "test_error": getattr(b, "test_error", math.nan), "objective_se": getattr(b, "objective_se", math.nan)}
                for b in getattr(f, "branches", ()) or ()]
    status = getattr(sol, "status", None)
    return {"status": str(status) if status is not None else ("converged" if sol.converged else "not_converged"),
            "message": getattr(sol, "status_message", ""), "converged": bool(sol.converged),
            "test_error": f.test_error, "alignment": f.alignment, "replicon": getattr(f, "replicon", math.nan),
            "objective": getattr(f, "objective", math.nan), "branches": branches,
            "selection_resolved": bool(getattr(f, "selection_resolved", True))}


def simulation_point(D, seed, alpha, alpha_prime, delta, lam, lam_prime, beta, activation) -> dict:
    """One simulation at dimension ``D`` (see :func:`draw_points` for the other arguments).

    Args:
        D: embedding dimension.
        seed: seed of the simulation.
        alpha: as :func:`theory_point`.
        alpha_prime: as :func:`theory_point`.
        delta: as :func:`theory_point`.
        lam: as :func:`theory_point`.
        lam_prime: as :func:`theory_point`.
        beta: as :func:`theory_point`.
        activation: as :func:`theory_point`.

    Returns:
        ``{"test_error", "alignment", "converged", "status"}`` (``status = "error"`` if it raised).
    """
    from simulations import simulate

    try:
        r = simulate(D, alpha, alpha_prime, delta, lam, lam_prime=lam_prime, beta=beta, activation=activation,
                     seed=seed, n_test=5000)
    except Exception as exc:
        return {"status": "error", "message": f"{type(exc).__name__}: {exc}", "converged": False}
    status = getattr(r, "status", None)
    converged = bool(r.pretrain.converged and r.finetune.converged)
    return {"test_error": r.finetune.test_error, "alignment": r.finetune.alignment, "converged": converged,
            "status": str(status) if status is not None else ("converged" if converged else "not_converged")}


def summarise(points, theory, sims) -> tuple[str, dict]:
    """The report (Markdown) and its numbers.

    Args:
        points: the settings (:func:`draw_points`).
        theory: ``{index: theory record}`` (:func:`theory_point`).
        sims: ``{index: [simulation records]}`` (:func:`simulation_point`).

    Returns:
        ``(markdown, numbers)``.
    """
    from collections import Counter

    counts = Counter(theory[i]["status"] for i in range(len(points)))
    rows, wrong_branch, unresolved, gaps = [], [], [], {m: [] for m in METRICS}
    for i, p in enumerate(points):
        t, ss = theory[i], [s for s in sims.get(i, []) if s.get("status") != "error"]
        line = {"i": i, **p, "status": t["status"]}
        if t.get("converged"):
            lower = [b for b in t.get("branches", []) if b["objective"] < t.get("objective", math.inf) - 1e-9]
            if lower:
                wrong_branch.append(i)
            # records written before the field existed carry the finding in their message only
            if not t.get("selection_resolved", "selection not resolved" not in t.get("message", "")):
                unresolved.append(i)
        for m in METRICS:
            vals = np.array([s[m] for s in ss], float)
            vals = vals[np.isfinite(vals)]
            if vals.size == 0 or not t.get("converged") or not np.isfinite(t.get(m, math.nan)):
                line[m] = ""
                continue
            mean = float(vals.mean())
            se = float(vals.std(ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else math.nan
            if abs(t[m]) < ZERO_THEORY:  # a relative gap to 0 means nothing: the difference is shown, not counted
                line[m] = f"{t[m]:.4g} vs {mean:.4g} ± {se:.2g} (difference {mean - t[m]:+.3g})"
                continue
            rel = (mean - t[m]) / abs(t[m])
            gaps[m].append(rel)
            line[m] = f"{t[m]:.4g} vs {mean:.4g} ± {se:.2g} ({100 * rel:+.1f} %)"
        rows.append(line)
    n = len(points)
    numbers = {"n": n, "status_counts": dict(counts), "wrong_branch": wrong_branch, "unresolved_selection": unresolved,
               "median_abs_rel_gap": {m: float(np.median(np.abs(g))) if g else math.nan for m, g in gaps.items()},
               "within_10pct": {m: int(np.sum(np.abs(np.array(g)) <= 0.10)) for m, g in gaps.items()},
               "n_compared": {m: len(g) for m, g in gaps.items()}}
    md = ["# Status survey: random valid parameter points", "",
          "Generated by `python -m simulations.campaigns.status_survey` (settings drawn at random in "
          + ", ".join(f"{k} ∈ [{lo}, {hi}]" for k, (lo, hi, _) in RANGES.items()) + ", softmax or identity).", "",
          "| status | points |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(counts.items())] + [
          "", f"Successful points compared with the simulation: E' {numbers['n_compared']['test_error']}, "
          f"alignment {numbers['n_compared']['alignment']}; within 10 %: E' {numbers['within_10pct']['test_error']}, "
          f"alignment {numbers['within_10pct']['alignment']}; median |relative gap|: E' "
          f"{numbers['median_abs_rel_gap']['test_error']:.3f}, alignment {numbers['median_abs_rel_gap']['alignment']:.3f}.",
          f"Successful points with a lower-objective sibling branch: {len(wrong_branch)} {wrong_branch}.",
          f"Successful points whose branch selection is not resolved (another fixed point's objective within the "
          f"Monte Carlo error): {len(unresolved)} {unresolved}.",
          "Relative gaps are counted where the theory value is not 0 (below that the difference is shown).", "",
          "| # | activation | α | α' | Δ | λ | λ' | β | status | E' theory vs simulation | alignment |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['i']} | {r['activation']} | {r['alpha']:.3g} | {r['alpha_prime']:.3g} | {r['delta']:.3g} | "
                  f"{r['lam']:.3g} | {r['lam_prime']:.3g} | {r['beta']:.3g} | {r['status']} | {r['test_error']} | "
                  f"{r['alignment']} |")
    return "\n".join(md) + "\n", numbers


def main(argv=None) -> None:
    """Command line (see the module docstring).

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--D", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--n-samples", type=int, default=2 ** 14, help="Monte Carlo samples of the theory's channels")
    ap.add_argument("--out", default="results/status_survey")
    ap.add_argument("--report", default="docs/status_survey.md")
    args = ap.parse_args(argv)
    points = draw_points(args.points)
    ex = Executor(workers=args.workers)
    t_recs = run_points(theory_point, [dict(p, n_samples=args.n_samples) for p in points], Path(args.out) / "theory",
                        executor=ex, desc="theory")
    s_points = [dict(p, D=args.D, seed=s) for p in points for s in range(args.seeds)]
    s_recs = run_points(simulation_point, s_points, Path(args.out) / "simulations", executor=ex, desc="simulations")
    key = lambda p: tuple(sorted((k, v) for k, v in p.items() if k in points[0]))  # noqa: E731
    index = {key(p): i for i, p in enumerate(points)}
    theory = {index[key(r["point"])]: r["result"] for r in t_recs}
    sims = {}
    for r in s_recs:
        sims.setdefault(index[key(r["point"])], []).append(r["result"])
    md, numbers = summarise(points, theory, sims)
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(md)
    write_json_atomic(Path(args.out) / "summary.json", {"numbers": numbers, "args": vars(args), **run_metadata()})
    print(md)


if __name__ == "__main__":
    main()
