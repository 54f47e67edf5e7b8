#!/usr/bin/env python
"""Benchmark of the finite-D simulator on this machine, in float64 (a script, not a test).

    python benchmarks/bench_simulator.py            # full sizes, writes benchmarks/results/simulator.json
    python benchmarks/bench_simulator.py --quick    # small sizes (smoke run), writes simulator_quick.json
    python benchmarks/bench_simulator.py --only a c # some parts

(a) one whole two-stage ``simulate`` (softmax, D = 150, α = 0.1, α' = 3, T = 3, Δ = 0.5, λ = 0.01, λ' = 1,
    n_test = 20 000), after compilation, next to its *floor* measured in the same run: the pre-training
    iterations × the unavoidable linear algebra of one proximal-gradient iteration (the gradient's product
    ``Xᵀ(G X)``, the logits' product ``X S`` at the new point, and the prox's ``eigh``), and × the stricter
    count of three products (gradient at the extrapolated point recomputed from scratch). Target: ≤ 2×.
(b) pre-training alone at D = 400 (α = 0.1, n = 16 000) and, in a subprocess, its peak memory; target ≤ 120 s.
(c) 4 seeds of (a): one after the other in this process, and spread over ``cores`` worker processes
    pinned to ``1`` thread each (the package's ``Executor``): which is faster.
(d) in a subprocess, a whole ``simulate`` at the largest pre-training set of the figures (identity,
    D = 150, α = 1, n = 22 500): wall time and peak memory.

Every timed function runs once first (JIT compilation), then is timed with ``block_until_ready``. The
result file records versions, machine, thread settings and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from simulations.campaigns.records import run_metadata, write_json_atomic  # noqa: E402
from simulations.simulator import simulate  # noqa: E402
from simulations.simulator.pretraining_fit import fit_proximal  # noqa: E402
from solvable_attention.data import sample_inputs, sample_labels, sample_teacher  # noqa: E402
from solvable_attention.runtime import available_cores, limit_blas_threads  # noqa: E402

CHILD_MARK = "BENCH_CHILD_RESULT "
GIB = 2.0 ** 30

FULL = {
    "a": dict(D=150, alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.01, lam_prime=1.0, n_test=20000),
    "b": dict(D=400, alpha=0.1, delta=0.5, lam=0.01, target_s=120.0),
    "c": dict(D=150, alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.01, lam_prime=1.0, n_test=20000, seeds=4),
    "d": dict(D=150, alpha=1.0, alpha_prime=3.0, delta=0.5, lam=0.01, lam_prime=1.0, n_test=20000,
              activation="identity"),
}
QUICK = {
    "a": dict(FULL["a"], D=40, n_test=2000),
    "b": dict(FULL["b"], D=60),
    "c": dict(FULL["c"], D=40, n_test=2000, seeds=2),
    "d": dict(FULL["d"], D=40, n_test=2000),
}


def best_time(fn, *args, repeat=20):
    """Compile, then the best of ``repeat`` timed calls (seconds)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def iteration_floor(D, n, T=3):
    """Seconds of the unavoidable linear algebra of one iteration at ``(n, T, D)``, measured now:
    ``X S`` (forward), ``Xᵀ A`` (backward), ``eigh`` of a ``D × D`` matrix (one LAPACK thread)."""
    key = jax.random.PRNGKey(0)
    X = jax.random.normal(key, (n * T, D))
    A = jax.random.normal(key, (n * T, D))
    S = jax.random.normal(key, (D, D))
    S = S + S.T
    with limit_blas_threads(1):
        fwd = best_time(jax.jit(lambda X, S: X @ S), X, S)
        bwd = best_time(jax.jit(lambda X, A: jax.lax.dot_general(X, A, (((0,), (0,)), ((), ())))), X, A)
        eig = best_time(jax.jit(jnp.linalg.eigh), S)
    return {"forward_product_s": fwd, "backward_product_s": bwd, "eigh_s": eig,
            "two_products_and_eigh_s": fwd + bwd + eig, "three_products_and_eigh_s": 2 * fwd + bwd + eig}


def bench_a(D, alpha, alpha_prime, delta, lam, lam_prime, n_test):
    kw = dict(lam_prime=lam_prime, n_test=n_test)
    simulate(D, alpha, alpha_prime, delta, lam, seed=1, **kw)  # compilation
    t0 = time.perf_counter()
    r = simulate(D, alpha, alpha_prime, delta, lam, seed=0, **kw)
    wall = time.perf_counter() - t0
    n = round(alpha * D * D)
    floor = iteration_floor(D, n)
    its = r.pretrain.iterations
    per_it = r.timings["pretrain"] / its
    out = {"config": dict(FULL["a"], D=D, n=n), "wall_s": wall, "timings": r.timings, "pretrain_iterations": its,
           "pretrain_status": r.pretrain.status.value, "finetune_iterations": r.finetune.iterations,
           "seconds_per_iteration": per_it, "floor_per_iteration": floor,
           "floor_run_s": its * floor["two_products_and_eigh_s"],
           "floor_run_three_products_s": its * floor["three_products_and_eigh_s"]}
    out["ratio_to_floor"] = wall / out["floor_run_s"]
    out["ratio_to_three_product_floor"] = wall / out["floor_run_three_products_s"]
    out["per_iteration_ratio"] = per_it / floor["two_products_and_eigh_s"]
    print(f"(a) simulate D={D}: {wall:.2f} s ({its} FISTA iterations, {1e3 * per_it:.1f} ms each; floor "
          f"{1e3 * floor['two_products_and_eigh_s']:.1f} ms = X·S {1e3 * floor['forward_product_s']:.1f} + "
          f"Xᵀ·A {1e3 * floor['backward_product_s']:.1f} + eigh {1e3 * floor['eigh_s']:.1f}); run floor "
          f"{out['floor_run_s']:.2f} s → ratio {out['ratio_to_floor']:.2f} (three-product floor "
          f"{out['floor_run_three_products_s']:.2f} s → {out['ratio_to_three_product_floor']:.2f})")
    return out


def _child(part, cfg):
    """Run one part in a fresh process (its own peak RSS) and return its JSON dict."""
    code = (f"import json, sys; sys.argv = ['x']; import benchmarks.bench_simulator as b; "
            f"print(b.CHILD_MARK + json.dumps(b._in_child({part!r}, {json.dumps(cfg)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(CHILD_MARK))
    return json.loads(line[len(CHILD_MARK):])


def _in_child(part, cfg_json):
    cfg = json.loads(cfg_json)
    if part == "b":
        key = jax.random.PRNGKey(0)
        D = cfg["D"]
        teacher = sample_teacher(jax.random.fold_in(key, 0), D)
        n = round(cfg["alpha"] * D * D)
        X = sample_inputs(jax.random.fold_in(key, 1), n, 3, D)
        Y = sample_labels(jax.random.fold_in(key, 2), teacher.S0, X, cfg["delta"], "softmax", 1.0, "logits")
        jax.block_until_ready(fit_proximal(X, Y, lam=cfg["lam"], activation="softmax", beta=1.0, max_iter=2)[0])
        t0 = time.perf_counter()
        S, info = fit_proximal(X, Y, lam=cfg["lam"], activation="softmax", beta=1.0)
        S.block_until_ready()
        wall = time.perf_counter() - t0
        floor = iteration_floor(D, n)
        res = {"config": dict(cfg, n=n), "wall_s": wall, "iterations": info.iterations, "converged": info.converged,
               "seconds_per_iteration": wall / info.iterations, "floor_per_iteration": floor,
               "ratio_to_floor": wall / (info.iterations * floor["two_products_and_eigh_s"])}
    else:  # "d": one whole simulate, compilation included (the peak memory is what matters)
        t0 = time.perf_counter()
        r = simulate(cfg["D"], cfg["alpha"], cfg["alpha_prime"], cfg["delta"], cfg["lam"],
                     lam_prime=cfg["lam_prime"], n_test=cfg["n_test"], activation=cfg["activation"])
        res = {"config": dict(cfg, n=round(cfg["alpha"] * cfg["D"] ** 2)), "wall_s_with_compilation":
               time.perf_counter() - t0, "timings": r.timings, "pretrain_iterations": r.pretrain.iterations,
               "pretrain_status": r.pretrain.status.value}
    res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return res


def bench_c(D, alpha, alpha_prime, delta, lam, lam_prime, n_test, seeds, tmp):
    from simulations.campaigns.resumable import Executor, run_points

    kw = dict(D=D, alpha=alpha, alpha_prime=alpha_prime, delta=delta, lam=lam, lam_prime=lam_prime, n_test=n_test)
    simulate(**kw, seed=99)  # compilation of the in-process run
    t0 = time.perf_counter()
    for s in range(seeds):
        simulate(**kw, seed=s)
    serial = time.perf_counter() - t0
    workers = min(available_cores(), seeds)
    t0 = time.perf_counter()
    run_points(simulate, [dict(kw, seed=s) for s in range(seeds)], tmp, executor=Executor(workers=workers),
               progress=False)
    pooled = time.perf_counter() - t0  # includes each worker's start-up and compilation
    out = {"config": dict(kw, seeds=seeds), "serial_after_compilation_s": serial, "workers": workers,
           "threads_per_worker": Executor(workers=workers).threads, "processes_with_compilation_s": pooled,
           "faster": "processes" if pooled < serial else "serial"}
    print(f"(c) {seeds} seeds at D={D}: serial {serial:.1f} s (compiled), {workers} pinned processes "
          f"{pooled:.1f} s (start-up and compilation included)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=("a", "b", "c", "d"))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    parts = args.only or ["a", "b", "c", "d"]
    res = {"metadata": run_metadata(), "cores": available_cores(), "loadavg_before": list(os.getloadavg())}
    if "a" in parts:
        res["a"] = bench_a(**sizes["a"])
    if "b" in parts:
        cfg = {k: v for k, v in sizes["b"].items() if k != "target_s"}
        res["b"] = dict(_child("b", cfg), target_s=sizes["b"]["target_s"])
        print(f"(b) pre-training D={cfg['D']}: {res['b']['wall_s']:.1f} s, {res['b']['iterations']} iterations, "
              f"ratio to floor {res['b']['ratio_to_floor']:.2f}, peak RSS {res['b']['peak_rss_gib']:.2f} GiB")
    if "c" in parts:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            res["c"] = bench_c(**sizes["c"], tmp=tmp)
    if "d" in parts:
        res["d"] = _child("d", sizes["d"])
        print(f"(d) simulate identity D={sizes['d']['D']}, α={sizes['d']['alpha']}: "
              f"{res['d']['wall_s_with_compilation']:.1f} s with compilation, peak RSS {res['d']['peak_rss_gib']:.2f} GiB")
    res["loadavg_after"] = list(os.getloadavg())
    out = args.out or f"benchmarks/results/simulator{'_quick' if args.quick else ''}.json"
    write_json_atomic(out, res)
    print("written", out)


if __name__ == "__main__":
    main()
