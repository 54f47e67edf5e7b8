"""Benchmark of the state-evolution solvers (a script, not a test).

    python benchmarks/bench_theory.py [--quick] [--out benchmarks/results/theory.json]

Measures, compile-then-time: one identity pre-training solve; one softmax T = 3 solve (first call,
with compilation, and a second call); a warm-started sweep of 40 λ values (softmax, or identity with
--quick); the full two-stage solve at the reference point; the relative Monte Carlo error of the test
error; and a D = 150 simulation of the same point for the speed ratio.

``--figure1 [--workers 2] [--chunks K] [--n-samples N]``: the theory curves of Figure 1 (softmax, α = 0.1,
α' = 3, T = 3, Δ ∈ {0.5, 2}, 40 λ per Δ on the figure's grids × λ' ∈ {0.05, 1, ∞}, warm starts) and one D = 150
simulation of a Figure-1 point with its three λ' (one pre-training, three fine-tunings), from which the
cost of simulating the same 80 (λ, Δ) points × 4 runs is extrapolated. With ``--workers 2`` each Δ's λ
grid is cut into ``--chunks`` contiguous pieces (default 3; 1: one process per Δ), each a warm-started
sweep that starts cold at its first λ; the pieces go to the processes as they free up, the Δ = 2 ones
first (the costly small-λ, λ' = 0.05 solves are there). Compilation is included in the wall time.
``--compilation-cache DIR``: the processes keep their compiled programs in ``DIR`` (run twice on one empty
folder: the first run compiles and writes, the second loads; the cold and the warm time).
``--compare PATH``: a previous ``--figure1`` result; the run records, per ``(Δ, λ, λ')``, the change of ``E'``
relative to it, in units of this run's Monte Carlo s.e. and relative, and which points changed status.

``--rank [--ranks 1 2 4] [--n-samples N]``: one rank-``r`` LoRA theory point (softmax, Figure 1's setting
α = 0.1, α' = 3, T = 3, Δ = 0.5, λ = 0.05, λ' = 1, shift of rank r* = 1) per ``r``, compile-then-time: the first
solve compiles the channel, the second (the same point, the compiled channel reused) is the cost after
compilation; map evaluations and seconds per evaluation are recorded (``results/rank.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/theory.json")
    ap.add_argument("--figure1", action="store_true", help="time Figure 1's theory curves only")
    ap.add_argument("--workers", type=int, default=1, help="--figure1: processes (one per Δ when 2)")
    ap.add_argument("--n-samples", type=int, default=2 ** 14, help="--figure1: Monte Carlo samples per channel")
    ap.add_argument("--chunks", type=int, default=3, help="--figure1: contiguous λ pieces per Δ (load balance)")
    ap.add_argument("--compilation-cache", default=None, metavar="DIR",
                    help="--figure1: persistent compilation cache of the processes (default: none, every "
                         "process compiles); run twice on one empty folder for the cold and the warm time")
    ap.add_argument("--compare", default=None, metavar="PATH",
                    help="--figure1: a previous --figure1 result to compare E' and the statuses with")
    ap.add_argument("--rank", action="store_true", help="time one rank-r LoRA theory point per r")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="--rank: the LoRA ranks")
    args = ap.parse_args(argv)
    if args.figure1:
        return figure1(args)
    if args.rank:
        return rank_points(args)
    from simulations import simulate
    from simulations.campaigns.records import versions, write_json_atomic
    from state_evolution import solve_pretraining, solve_state_evolution, sweep_pretraining

    res = {"versions": versions()}
    solve_pretraining(0.1, 0.5, 0.05, activation="identity")
    sol, res["identity_solve_s"] = timed(solve_pretraining, 0.1, 0.5, 0.05, activation="identity")
    sol, res["softmax_first_solve_s"] = timed(solve_pretraining, 0.1, 0.5, 0.05)
    sol, res["softmax_solve_s"] = timed(solve_pretraining, 0.1, 0.5, 0.05, seed=1)
    res["softmax_test_error_relative_mc_error"] = sol.test_error_se / sol.test_error
    lams = np.geomspace(0.005, 0.5, 10 if args.quick else 40)
    act = "identity" if args.quick else "softmax"
    _, res[f"sweep_{len(lams)}_lambda_{act}_s"] = timed(sweep_pretraining, lams, 0.1, 0.5, activation=act,
                                                         progress=False)
    full, res["full_two_stage_solve_s"] = timed(solve_state_evolution, 0.1, 3.0, 0.5, 0.05, lam_prime=1.0)
    res["full_converged"] = full.converged
    D = 60 if args.quick else 150
    _, res[f"simulation_D{D}_s"] = timed(simulate, D, 0.1, 3.0, 0.5, 0.05, lam_prime=1.0, n_test=20000)
    res["speed_ratio_simulation_over_theory"] = res[f"simulation_D{D}_s"] / res["full_two_stage_solve_s"]
    for k, v in res.items():
        if k != "versions":
            print(f"{k:45s} {v}")
    write_json_atomic(Path(args.out), res)


def _figure1_curve(delta, lams, lam_primes, n_samples, partial_path=None):
    """One Δ of Figure 1 (both stages, warm starts) in this process: (wall seconds, rows).

    ``partial_path``: the rows finished so far, with their elapsed time, rewritten after every ``λ``
    (so that a run stopped by a time limit still says how far it got)."""
    from simulations.campaigns.records import write_json_atomic
    from state_evolution import sweep_state_evolution

    t0 = time.perf_counter()
    rows = []

    def record(sols):
        for s in sols:
            f = s.finetune
            rows.append(dict(lam=s.pretrain.params.lam, lam_prime=str(f.params.lam_prime), converged=s.converged,
                             pre_iterations=s.pretrain.iterations, ft_iterations=f.iterations,
                             ft_seconds=f.seconds, residual=f.residual, test_error=s.pretrain.test_error,
                             test_error_ft=f.test_error, test_error_ft_se=f.test_error_se, alignment=f.alignment,
                             m_prime=abs(f.m), q_prime=f.q, ft_method=f.method, pre_method=s.pretrain.method,
                             elapsed_s=time.perf_counter() - t0))
        if partial_path is not None:
            write_json_atomic(Path(partial_path), dict(delta=delta, n_samples=n_samples, rows=rows))

    sweep_state_evolution(0.1, 3.0, delta, lams, lam_primes, progress=False, n_samples=n_samples, warn=False,
                          on_point=record)
    return time.perf_counter() - t0, rows


def figure1(args):
    import math
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from simulations import simulate_variants
    from simulations.campaigns.records import thread_settings, versions, write_json_atomic
    from solvable_attention.runtime import enable_compilation_cache, pin_worker_threads, threads_per_worker

    lam_primes = [0.05, 1.0, math.inf]
    n_lam = 8 if args.quick else 40
    deltas = (0.5, 2.0)
    # Figure 1's theory grids (simulations/figures/fig1.py): one λ range per Δ
    ranges = {0.5: (1e-3, 0.3), 2.0: (0.01, 1.0)}
    res = {"versions": versions(), "n_lambda": n_lam, "lam_primes": ["0.05", "1", "inf"],
           "n_samples": args.n_samples, "workers": args.workers,
           "threads_per_worker": threads_per_worker(args.workers), "threads": thread_settings(), "loadavg_before": list(__import__("os").getloadavg()),
           "compilation_cache": args.compilation_cache}
    if args.compilation_cache is not None:
        cache = Path(args.compilation_cache)
        res["compilation_cache_entries_before"] = len(list(cache.iterdir())) if cache.is_dir() else 0
        enable_compilation_cache(cache)
    out = Path(args.out if args.out != "benchmarks/results/theory.json" else "benchmarks/results/figure1.json")
    partial = str(out.with_suffix("")) + "_partial_delta{}_{}.json"
    pieces = [(d, list(chunk)) for d in sorted(deltas, reverse=True)
              for chunk in np.array_split(np.geomspace(*ranges[d], n_lam), max(1, args.chunks))]  # Δ = 2 first: its small λ cost most
    res["chunks"] = [[d, float(c[0]), float(c[-1]), len(c)] for d, c in pieces]
    t0 = time.perf_counter()
    if args.workers > 1:  # processes take the pieces in order as they free up (each compiles once)
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), initializer=pin_worker_threads,
                                 initargs=(threads_per_worker(args.workers), args.compilation_cache)) as pool:
            outs = list(pool.map(_figure1_curve, [d for d, _ in pieces], [c for _, c in pieces],
                                 [lam_primes] * len(pieces), [args.n_samples] * len(pieces),
                                 [partial.format(d, i) for i, (d, _) in enumerate(pieces)]))
    else:
        _, res["compile_run_s"] = timed(_figure1_curve, 0.5, pieces[0][1][:2], lam_primes, args.n_samples)
        outs = [_figure1_curve(d, c, lam_primes, args.n_samples, partial.format(d, i))
                for i, (d, c) in enumerate(pieces)]
    total = time.perf_counter() - t0
    for i, (d, _) in enumerate(pieces):  # the run finished: the partial records are superseded by the result file
        Path(partial.format(d, i)).unlink(missing_ok=True)
    rows = []
    for (delta, chunk), (t, r) in zip(pieces, outs):
        key = f"figure1_delta{delta}_s"
        res[key] = res.get(key, 0.0) + t  # process seconds spent on this Δ (all its pieces)
        rows += [dict(row, delta=delta) for row in r]
    rows.sort(key=lambda row: (row["delta"], row["lam"]))
    res["figure1_theory_s"] = total
    res["points"] = len(rows)
    res["not_converged"] = [(r["delta"], r["lam"], r["lam_prime"]) for r in rows if not r["converged"]]
    res["slowest_finetune_solves"] = sorted(((r["ft_seconds"], r["delta"], r["lam"], r["lam_prime"], r["ft_iterations"])
                                             for r in rows), reverse=True)[:8]
    res["finetune_iterations_mean"] = float(np.mean([r["ft_iterations"] for r in rows if r["ft_iterations"] > 0]))
    res["finetune_iterations_max"] = int(max(r["ft_iterations"] for r in rows))
    res["pretrain_iterations_mean"] = float(np.mean([r["pre_iterations"] for r in rows]))
    res["curves"] = rows
    if args.compare:
        res["comparison"] = compare_curves(rows, json.loads(Path(args.compare).read_text())["curves"], args.compare)
    D = 60 if args.quick else 150
    variants = [dict(lam_prime=lp) for lp in lam_primes]
    _, res[f"simulation_D{D}_one_point_3_lam_primes_s"] = timed(simulate_variants, D, 0.1, 3.0, 0.5, 0.05,
                                                                variants=variants, n_test=20000)
    res["simulating_figure1_4_runs_estimate_s"] = res[f"simulation_D{D}_one_point_3_lam_primes_s"] * 2 * n_lam * 4
    res["speed_ratio_simulation_over_theory"] = res["simulating_figure1_4_runs_estimate_s"] / total
    res["loadavg_after"] = list(__import__("os").getloadavg())
    for k, v in res.items():
        if k not in ("versions", "curves"):
            print(f"{k:45s} {v}")
    write_json_atomic(out, res)


def compare_curves(rows, previous, source):
    """``E'`` and the status of each ``(Δ, λ, λ')`` against a previous run's rows: the largest changes in units of
    this run's Monte Carlo s.e. and relative, the points beyond 1 s.e., and the points whose convergence changed
    (``points = 0`` and ``None`` for the changes when the two runs share no point with a finite ``E'``)."""
    key = lambda r: (float(r["delta"]), round(float(r["lam"]), 12), str(r["lam_prime"]))  # noqa: E731
    before = {key(r): r for r in previous}
    changes = []
    for r in rows:
        b = before.get(key(r))
        if b is None or not (np.isfinite(r["test_error_ft"]) and np.isfinite(b["test_error_ft"])):
            continue
        d = r["test_error_ft"] - b["test_error_ft"]
        se = r.get("test_error_ft_se") or np.nan
        changes.append(dict(delta=r["delta"], lam=r["lam"], lam_prime=r["lam_prime"], change=d,
                            relative=d / abs(b["test_error_ft"]) if b["test_error_ft"] else np.nan,
                            in_se=d / se if se > 0 else np.nan, converged=r["converged"],
                            converged_before=b["converged"]))
    if not changes:  # no point in common (another grid, or every E' non-finite): nothing to compare
        return dict(source=source, points=0, max_abs_change_in_se=None, median_abs_change_in_se=None,
                    max_abs_relative_change=None, beyond_one_se=[], convergence_changed=[])
    in_se = np.array([abs(c["in_se"]) for c in changes])
    rel = np.array([abs(c["relative"]) for c in changes])
    return dict(source=source, points=len(changes), max_abs_change_in_se=float(np.nanmax(in_se)),
                median_abs_change_in_se=float(np.nanmedian(in_se)), max_abs_relative_change=float(np.nanmax(rel)),
                beyond_one_se=[c for c in changes if abs(c["in_se"]) > 1],
                convergence_changed=[c for c in changes if c["converged"] != c["converged_before"]])


def rank_points(args):
    import os

    from simulations.campaigns.records import thread_settings, versions, write_json_atomic
    from state_evolution import solve_pretraining
    from state_evolution.finetuning_rank import solve_finetuning_rank

    res = {"versions": versions(), "threads": thread_settings(), "n_samples": args.n_samples,
           "setting": dict(alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.05, lam_prime=1.0, shift_rank=1,
                           activation="softmax", T=3),
           "loadavg_before": list(os.getloadavg()), "points": {}}
    pre, res["pretraining_first_solve_s"] = timed(solve_pretraining, 0.1, 0.5, 0.05, n_samples=args.n_samples)
    for r in args.ranks:
        kw = dict(rank=r, shift_rank=1, n_samples=args.n_samples, warn=False)
        first, t_first = timed(solve_finetuning_rank, pre, 3.0, 1.0, **kw)
        second, t_second = timed(solve_finetuning_rank, pre, 3.0, 1.0, **kw)
        n_eval = int(second.iterations)  # map evaluations, all starts
        row = {"first_solve_s": t_first, "solve_after_compilation_s": t_second, "evaluations": n_eval,
               "s_per_evaluation": t_second / max(n_eval, 1), "status": second.status.value,
               "test_error": second.test_error, "same_as_first": bool(second.test_error == first.test_error)}
        res["points"][str(r)] = row
        print(f"r = {r}: first {t_first:.1f} s, after compilation {t_second:.1f} s, {n_eval} evaluations, "
              f"{row['s_per_evaluation']:.3f} s each, {row['status']}, E' = {second.test_error:.4f}", flush=True)
    res["loadavg_after"] = list(os.getloadavg())
    out = Path(args.out if args.out != "benchmarks/results/theory.json" else "benchmarks/results/rank.json")
    write_json_atomic(out, res)


if __name__ == "__main__":
    main()
