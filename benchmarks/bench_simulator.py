#!/usr/bin/env python
"""Benchmark of the finite-D simulator on this machine, in float64 (a script, not a test).

    python benchmarks/bench_simulator.py            # full sizes, writes benchmarks/results/simulator.json
    python benchmarks/bench_simulator.py --quick    # small sizes (smoke run), writes simulator_quick.json

(a) proximal pre-training (FISTA) to convergence, softmax, D=150, α=0.1, T=3, Δ=0.5, λ=0.01:
    wall time (target ≤ 60 s), iterations, and where the time goes (gradient / loss / prox
    calls, backtracking steps), from a second, instrumented run.
(b) one full ``simulate`` (both stages and all metrics), identity, D=200, α=0.5, T=3, Δ=0.5,
    λ=0.01, α'=3, λ'=1, in a subprocess so that its peak RSS (``ru_maxrss``) is its own:
    wall time (target ≤ 180 s) and peak memory (target ≤ 4 GiB).
(c) achieved GFLOP/s of ``pretrain_loss_and_grad`` at D=200, α=0.5, T=3, counting
    ``4 n T D² + 4 n T² D`` flops (forward ``X S`` and ``(X S) Xᵀ``, backward the same again),
    against the float64 matmul peak ``2 N³ / t`` of ``jnp.dot`` on two N×N matrices (N=2000).

Every timed function is run once first (JIT compilation), then timed with ``block_until_ready``.

Threads: on this 2-core machine the LAPACK ``eigh`` of the prox (scipy's OpenBLAS, which jaxlib
calls) competes with XLA's thread pool; compare with ``OPENBLAS_NUM_THREADS=1 python ...``
(the thread variables in effect are recorded in the result file).
"""

from __future__ import annotations

import argparse
import contextlib
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

from simulations.simulator import pretraining_fit as pretrain_module  # noqa: E402
from simulations.campaigns.records import run_metadata, write_json_atomic  # noqa: E402
from simulations.simulator.objectives import chunk_samples, pretrain_loss, pretrain_loss_and_grad  # noqa: E402
from simulations.simulator.pretraining_fit import fit_proximal, nuclear_prox  # noqa: E402
from solvable_attention.data import sample_inputs, sample_labels, sample_teacher  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD_MARK = "BENCH_B_RESULT "
GIB = 2.0 ** 30
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")

FULL = {
    "a": dict(D=150, alpha=0.1, T=3, activation="softmax", delta=0.5, lam=0.01, target_s=60.0),
    "b": dict(D=200, alpha=0.5, alpha_prime=3.0, T=3, activation="identity", delta=0.5, lam=0.01,
              lam_prime=1.0, n_test=20000, target_s=180.0, target_gib=4.0),
    "c": dict(D=200, alpha=0.5, T=3, matmul_N=2000, repeat=5),
}
QUICK = {
    "a": dict(FULL["a"], D=40),
    "b": dict(FULL["b"], D=40, n_test=2000),
    "c": dict(FULL["c"], D=60, matmul_N=500, repeat=3),
}


# --------------------------------------------------------------------------- timing helpers

def compile_then_time(fn, *args, repeat=5):
    """Run ``fn(*args)`` once (compilation), then ``repeat`` times; returns (best, median) seconds."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), float(np.median(times))


@contextlib.contextmanager
def instrumented(module, names):
    """Count and time (synchronously) the calls to ``module.<name>`` made while inside the block."""
    stats = {name: {"calls": 0, "seconds": 0.0} for name in names}
    originals = {name: getattr(module, name) for name in names}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            stats[name]["seconds"] += time.perf_counter() - t0
            stats[name]["calls"] += 1
            return out
        return timed

    for name, fn in originals.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield stats
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def pretraining_data(D, alpha, T, activation, delta, seed=0):
    """Teacher, inputs and noisy labels as in ``simulate`` (logit noise, β = 1, κ0 = 1)."""
    key = jax.random.PRNGKey(seed)
    teacher = sample_teacher(jax.random.fold_in(key, 0), D)
    n = max(1, round(alpha * D * D))
    X = sample_inputs(jax.random.fold_in(key, 1), n, T, D)
    Y = sample_labels(jax.random.fold_in(key, 2), teacher.S0, X, delta, activation, 1.0, "logits")
    return jax.block_until_ready((X, Y))


# --------------------------------------------------------------------------- (a)

def bench_a(D, alpha, T, activation, delta, lam, target_s):
    X, Y = pretraining_data(D, alpha, T, activation, delta)
    fit = lambda **kw: fit_proximal(X, Y, lam=lam, activation=activation, beta=1.0, **kw)  # noqa: E731
    jax.block_until_ready(fit(max_iter=2)[0])  # compile every function at these shapes

    t0 = time.perf_counter()
    S, info = fit()
    S.block_until_ready()
    wall = time.perf_counter() - t0

    profile = profile_fit(fit, info.iterations)
    return {"config": dict(D=D, n=int(X.shape[0]), alpha=alpha, T=T, activation=activation,
                           delta=delta, lam=lam, method="proximal", tol=1e-7),
            "wall_s": wall, "iterations": info.iterations, "converged": info.converged,
            "residual": info.residual, "target_s": target_s, "meets_target": wall <= target_s,
            "profile": profile}


def profile_fit(fit, iterations):
    """Second run of ``fit`` with the gradient, loss and prox calls counted and timed."""
    names = ("pretrain_loss_and_grad", "pretrain_loss", "nuclear_prox")
    with instrumented(pretrain_module, names) as stats:
        t0 = time.perf_counter()
        S, info = fit()
        S.block_until_ready()
        wall = time.perf_counter() - t0
    accounted = sum(s["seconds"] for s in stats.values())
    prox_calls = stats["nuclear_prox"]["calls"]
    return {"wall_s": wall, "iterations": info.iterations, "calls": stats,
            "per_call_ms": {k: 1e3 * v["seconds"] / max(v["calls"], 1) for k, v in stats.items()},
            "backtracking_steps": prox_calls - info.iterations,
            "prox_per_iteration": prox_calls / max(info.iterations, 1),
            "other_s": wall - accounted}


# --------------------------------------------------------------------------- (b)

def bench_b_child(cfg):
    """Runs inside the subprocess: compile (1-iteration warm-up at the same shapes), then one timed run."""
    from simulations import simulate

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kw = dict(alpha=cfg["alpha"], alpha_prime=cfg["alpha_prime"], delta=cfg["delta"], lam=cfg["lam"],
              lam_prime=cfg["lam_prime"], T=cfg["T"], activation=cfg["activation"],
              n_test=cfg["n_test"], seed=0)
    t0 = time.perf_counter()
    simulate(cfg["D"], pretrain_tol=1e300, **kw)  # stops after one FISTA step: compiles everything
    cold = time.perf_counter() - t0
    names = ("pretrain_loss_and_grad", "pretrain_loss", "nuclear_prox")
    with instrumented(pretrain_module, names) as stats:
        t0 = time.perf_counter()
        result = simulate(cfg["D"], **kw)
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"wall_s": wall, "warmup_wall_s": cold, "stage_timings": result.timings,
            "pretrain_iterations": result.pretrain.iterations,
            "pretrain_converged": result.pretrain.converged,
            "finetune_iterations": result.finetune.iterations, "calls": stats,
            "peak_rss_bytes": peak, "rss_after_import_bytes": rss_start,
            "n": max(1, round(cfg["alpha"] * cfg["D"] ** 2))}


def bench_b(cfg):
    """(b) in a subprocess, so that ``ru_maxrss`` is the peak of this simulation alone."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child-b", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark (b) subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(lines[-1][len(CHILD_MARK):])
    out["config"] = {k: v for k, v in cfg.items() if not k.startswith("target")} | {"n": out.pop("n")}
    out.update(target_s=cfg["target_s"], target_gib=cfg["target_gib"],
               peak_rss_gib=out["peak_rss_bytes"] / GIB,
               meets_target=out["wall_s"] <= cfg["target_s"] and out["peak_rss_bytes"] / GIB <= cfg["target_gib"])
    return out


# --------------------------------------------------------------------------- (c)

def gradient_flops(n, T, D):
    """Forward ``X S`` (2nTD²) and ``(XS)Xᵀ`` (2nT²D); backward ≈ the same again."""
    return 4 * n * T * D * D + 4 * n * T * T * D


def bench_c(D, alpha, T, matmul_N, repeat):
    X, Y = pretraining_data(D, alpha, T, "identity", 0.5)
    n = int(X.shape[0])
    Xc, Yc, wc = chunk_samples(X, Y, 4096)
    S = 0.1 * jnp.eye(D)
    flops = gradient_flops(n, T, D)
    A, B = square_matrices(matmul_N)
    best_dot, _ = compile_then_time(jax.jit(jnp.dot), A, B, repeat=repeat)  # before any LAPACK call
    peak = {"N": matmul_N, "jax_best_s": best_dot, "jax_gflops": 2 * matmul_N ** 3 / best_dot / 1e9}
    grads = {}
    for activation in ("identity", "softmax"):
        best, median = compile_then_time(pretrain_loss_and_grad, S, Xc, Yc, wc, activation, 1.0,
                                         repeat=repeat)
        grads[activation] = {"best_s": best, "median_s": median, "gflops": flops / best / 1e9}
    loss_best, _ = compile_then_time(pretrain_loss, S, Xc, Yc, wc, "identity", 1.0, repeat=repeat)
    G = jax.random.normal(jax.random.PRNGKey(2), (D, D)) / np.sqrt(D)
    prox_best, prox_median = compile_then_time(nuclear_prox, G + G.T, 0.01, D, repeat=repeat)
    peak["numpy_gflops"] = numpy_matmul_gflops(np.asarray(A), np.asarray(B), repeat)  # last
    return {"config": dict(D=D, n=n, T=T, alpha=alpha, chunk=4096), "flops_per_gradient": flops,
            "gradient": grads, "loss_identity_best_s": loss_best,
            "prox_eigh_best_s": prox_best, "prox_eigh_median_s": prox_median, "matmul": peak,
            "fraction_of_peak": {a: g["gflops"] / peak["jax_gflops"] for a, g in grads.items()}}


def square_matrices(N):
    key = jax.random.PRNGKey(1)
    return jax.random.normal(key, (N, N)), jax.random.normal(jax.random.fold_in(key, 1), (N, N))


def numpy_matmul_gflops(a, b, repeat):
    """numpy's (OpenBLAS) matmul, for reference; run last, as it starts OpenBLAS's threads."""
    a @ b
    t = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * a.shape[0] ** 3 / t / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- report

def format_table(res) -> str:
    a, b, c = res["a"], res["b"], res["c"]
    ok = lambda flag: "OK" if flag else "MISSED"  # noqa: E731
    p = a["profile"]
    lines = [
        f"{'benchmark':<58} {'result':>22}  target",
        f"{'(a) pre-train D=%d n=%d softmax, wall' % (a['config']['D'], a['config']['n']):<58} "
        f"{a['wall_s']:>20.2f} s  <= {a['target_s']:.0f} s {ok(a['meets_target'])}",
        f"{'    FISTA iterations (converged=%s)' % a['converged']:<58} {a['iterations']:>22d}",
        f"{'    per call: grad / loss / prox (ms)':<58} "
        f"{'%.1f / %.1f / %.1f' % tuple(p['per_call_ms'][k] for k in ('pretrain_loss_and_grad', 'pretrain_loss', 'nuclear_prox')):>22}",
        f"{'    backtracking steps; prox calls per iteration':<58} "
        f"{'%d; %.2f' % (p['backtracking_steps'], p['prox_per_iteration']):>22}",
        f"{'(b) simulate D=%d n=%d identity, wall (warm)' % (b['config']['D'], b['config']['n']):<58} "
        f"{b['wall_s']:>20.2f} s  <= {b['target_s']:.0f} s {ok(b['wall_s'] <= b['target_s'])}",
        f"{'    warm-up incl. compilation (1 FISTA step)':<58} {b['warmup_wall_s']:>20.2f} s",
        f"{'    stages: ' + ', '.join('%s %.1f' % kv for kv in b['stage_timings'].items()):<58}",
        f"{'    FISTA iterations':<58} {b['pretrain_iterations']:>22d}",
        f"{'    peak RSS':<58} {b['peak_rss_gib']:>18.2f} GiB  <= {b['target_gib']:.0f} GiB "
        f"{ok(b['peak_rss_gib'] <= b['target_gib'])}",
        f"{'(c) grad D=%d n=%d, %.2f GFLOP/call: identity' % (c['config']['D'], c['config']['n'], c['flops_per_gradient'] / 1e9):<58} "
        f"{c['gradient']['identity']['gflops']:>14.1f} GFLOP/s ({c['gradient']['identity']['best_s']:.3f} s)",
        f"{'    softmax':<58} {c['gradient']['softmax']['gflops']:>14.1f} GFLOP/s ({c['gradient']['softmax']['best_s']:.3f} s)",
        f"{'    float64 matmul peak, jnp.dot N=%d (numpy: %.1f)' % (c['matmul']['N'], c['matmul']['numpy_gflops']):<58} "
        f"{c['matmul']['jax_gflops']:>14.1f} GFLOP/s",
        f"{'    prox (eigh) D=%d, random symmetric matrix, standalone' % c['config']['D']:<58} "
        f"{1e3 * c['prox_eigh_best_s']:>19.1f} ms",
        f"{'    fraction of peak (identity / softmax)':<58} "
        f"{'%.0f%% / %.0f%%' % (100 * c['fraction_of_peak']['identity'], 100 * c['fraction_of_peak']['softmax']):>22}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--out", help="result file (default benchmarks/results/simulator[_quick].json)")
    parser.add_argument("--only", choices=("a", "b", "c"), nargs="+", default=("a", "b", "c"))
    parser.add_argument("--child-b", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_b:
        print(CHILD_MARK + json.dumps(bench_b_child(json.loads(args.child_b))), flush=True)
        return 0
    cfg = QUICK if args.quick else FULL
    runners = {"a": lambda: bench_a(**cfg["a"]), "b": lambda: bench_b(cfg["b"]),
               "c": lambda: bench_c(**cfg["c"])}
    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        print(f"warning: 1-minute load {load_start[0]:.2f} before starting: timings will be noisy",
              file=sys.stderr)
    results = {}
    for name in args.only:
        print(f"running ({name}) ...", file=sys.stderr, flush=True)
        results[name] = runners[name]()
    if set(results) == {"a", "b", "c"}:
        print(format_table(results))
    else:
        print(json.dumps(results, indent=2))
    out = args.out or os.path.join(HERE, "results", "simulator_quick.json" if args.quick else "simulator.json")
    env = {k: os.environ.get(k) for k in THREAD_ENV}
    env["loadavg_start_end"] = [load_start, os.getloadavg()]
    write_json_atomic(out, {"benchmark": "simulator", "quick": args.quick, "dtype": "float64",
                            "environment": env, "results": results, **run_metadata()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
