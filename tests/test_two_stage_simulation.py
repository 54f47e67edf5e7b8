"""The two-stage simulation of simulations/simulator/two_stage.py (``simulate``): determinism, consistency
of the reported overlaps, the infinite LoRA ridge, recalibration and reuse, and bad input."""

import math
import pytest

from simulations import simulate


def test_simulate_is_deterministic_and_consistent():
    kw = dict(D=20, alpha=0.2, alpha_prime=3.0, delta=0.5, lam=0.05, activation="identity", n_test=2000)
    a, b = simulate(**kw, seed=3), simulate(**kw, seed=3)
    da, db = a.to_dict(), b.to_dict()
    da.pop("timings"), db.pop("timings")
    assert da == db
    c = simulate(**kw, seed=4)
    assert c.pretrain.m != a.pretrain.m
    p = a.pretrain
    assert p.mse_S == pytest.approx(p.rho0 - 2 * p.m + p.q, rel=1e-10)
    assert a.finetune.converged and a.pretrain.converged
    # E' and E'_0 use the same test inputs; fine-tuning on S1's data should help here
    assert a.finetune.test_error < a.finetune.test_error_baseline


def test_infinite_lam_prime_gives_baseline_exactly():
    r = simulate(16, 0.2, 3.0, 0.5, 0.05, lam_prime=float("inf"), activation="softmax", n_test=1000)
    assert r.finetune.q == 0.0 and r.finetune.m == 0.0
    assert r.finetune.test_error == r.finetune.test_error_baseline
    assert math.isnan(r.finetune.train_loss)  # nothing is fitted


def test_recalibration_and_reuse_run():
    r = simulate(16, 0.2, 3.0, 0.5, 0.05, activation="softmax", n_test=1000, recalibrate=True, reuse=True)
    assert r.finetune.c != 1.0 and r.finetune.converged
    assert math.isfinite(r.finetune.train_loss) and r.finetune.train_loss >= 0


@pytest.mark.parametrize("kw,name", [(dict(method="adam"), "method"), (dict(n_test=0), "n_test"),
                                     (dict(D=1), "D"), (dict(activation="tanh"), "activation")])
def test_simulate_rejects_bad_input(kw, name):
    args = dict(D=10, alpha=0.1, alpha_prime=3, delta=0.5, lam=0.1) | kw
    with pytest.raises(ValueError, match=name):
        simulate(**args)


@pytest.mark.parametrize("kw,match", [(dict(seed=1.5), "seed"), (dict(seed=-1), "seed"), (dict(x64="no"), "x64"),
                                      (dict(T=None), "T")])
def test_bad_arguments_are_refused_before_any_work(kw, match):
    with pytest.raises(ValueError, match=match):
        simulate(10, 0.1, 3.0, 0.5, 0.05, **kw)
    with pytest.raises(ValueError, match="D must be"):
        simulate(None, 0.1, 3.0, 0.5, 0.05)


def test_a_simulation_too_large_for_memory_is_refused_with_its_sizes():
    """α = 1e6 at D = 40 is n = 1.6e9 sequences (~6 TB): refused at once with n, n' and the bytes; a normal
    size passes the same check with a generous limit, and a tiny limit refuses it."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"n = 1600000000 pre-training samples.*GiB"):
        simulate(40, 1e6, 3.0, 0.5, 0.05)
    with pytest.raises(ValueError, match=r"n' = 40000000 fine-tuning"):
        simulate(40, 0.1, 1e6, 0.5, 0.05)
    assert time.perf_counter() - t0 < 2.0  # nothing was allocated
    with pytest.raises(ValueError, match="GiB"):
        simulate(10, 0.1, 3.0, 0.5, 0.05, max_bytes=1000)


def test_results_carry_their_status():
    from solvable_attention.status import SolveError, Status

    r = simulate(10, 0.2, 2.0, 0.5, 0.05, n_test=500)
    assert r.status is Status.CONVERGED and r.converged and "iterations" in r.status_message
    assert r.to_dict()["pretrain"]["status"] == "converged"
    capped = simulate(10, 0.2, 2.0, 0.5, 0.05, n_test=500, pretrain_tol=1e-300)
    assert capped.pretrain.status is Status.MAX_ITERATIONS and not capped.converged
    with pytest.raises(SolveError, match="max_iterations"):
        simulate(10, 0.2, 2.0, 0.5, 0.05, n_test=500, pretrain_tol=1e-300, throw=True)


def test_float32_runs_stop_at_a_reachable_tolerance():
    """float32 (x64=False): the stopping tolerances follow the dtype (TOL_EPS_FACTOR eps = 1.2e-4), so the run
    converges in far fewer than the 5000-iteration cap, and its true final residual is below that tolerance.
    (The float32 run draws its own data, so its metrics are compared with float64 only loosely: the same
    problem size and noise give mse_S of the same size, within 50 %.)"""
    from simulations.simulator.two_stage import dtype_tolerance

    import jax.numpy as jnp

    a = simulate(24, 0.5, 2.0, 0.5, 0.05, activation="identity", x64=False, n_test=2000)
    assert a.converged and a.pretrain.iterations < 1000
    assert a.pretrain.residual <= dtype_tolerance(1e-7, jnp.float32)
    b = simulate(24, 0.5, 2.0, 0.5, 0.05, activation="identity", n_test=2000)
    assert b.converged and abs(a.pretrain.mse_S - b.pretrain.mse_S) < 0.5 * b.pretrain.mse_S


def test_pretraining_status_states_what_was_certified():
    """The softmax pre-training problem is not convex in S: at β = 20 (D = 30, α = 0.2, λ = 0.005) the factorised
    and the proximal methods reach different stationary points (objectives 0.331 and 0.162), both certified
    stationary in S (relative prox-gradient residual ≤ 1e-7). The status says so; and a solution that is not
    stationary in S is `not_global`."""
    from types import SimpleNamespace

    from simulations.simulator.two_stage import _pretrain_status
    from solvable_attention.status import Status

    prox = simulate(30, 0.2, 2.0, 0.5, 0.005, beta=20.0, n_test=500)
    fact = simulate(30, 0.2, 2.0, 0.5, 0.005, beta=20.0, method="factorized", n_test=500)
    assert fact.pretrain.objective > 1.5 * prox.pretrain.objective
    for r in (prox, fact):
        assert r.pretrain.converged and "not certified global" in r.pretrain.status_message
    ident = simulate(12, 0.3, 2.0, 0.5, 0.05, activation="identity", n_test=500)
    assert ident.pretrain.converged and "not certified" not in ident.pretrain.status_message
    info = SimpleNamespace(converged=True, residual=1e-9, iterations=10)
    assert _pretrain_status(info, 1e-3, 1e-7, "identity")[0] is Status.NOT_GLOBAL
