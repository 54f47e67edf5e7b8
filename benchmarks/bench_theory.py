"""Benchmark of the state-evolution solvers (a script, not a test).

    python benchmarks/bench_theory.py [--quick] [--out benchmarks/results/theory.json]

Measures, compile-then-time: one identity pre-training solve; one softmax T = 3 solve (first call,
with compilation, and a second call); a warm-started sweep of 40 λ values (softmax, or identity with
--quick); the full two-stage solve at the reference point; the relative Monte Carlo error of the test
error; and a D = 150 simulation of the same point for the speed ratio.
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
    args = ap.parse_args(argv)
    from simulations import simulate
    from simulations.sweep import versions, write_json_atomic
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


if __name__ == "__main__":
    main()
