"""Pre-training state evolution (state_evolution/pretraining.py): docs/theory.md §6 checks 1, 3, 6, honest
non-convergence, bad inputs, warm-started sweeps, and a small-D simulation sanity check."""

import math

import numpy as np
import pytest

from state_evolution import ConvergenceWarning, solve_pretraining
from state_evolution.spectral_prior import draw_prior_matrices


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_large_lambda_gives_the_zero_estimator(activation):
    """docs/theory.md §6.1: λ → ∞ gives Ŝ = 0 and E = E‖σ(0) − σ(H0)‖² (independent numpy oracle)."""
    sol = solve_pretraining(0.1, 0.5, 50.0, activation=activation, n_samples=2 ** 12, n_test_samples=2 ** 16)
    assert sol.converged and sol.m == 0.0 and sol.q == 0.0 and sol.rank_fraction == 0.0
    rng = np.random.default_rng(0)
    G = rng.standard_normal((200000, 3, 3))
    H0 = math.sqrt(sol.rho0) * (G + np.swapaxes(G, 1, 2)) / math.sqrt(2)
    if activation == "softmax":
        P = np.exp(H0 - H0.max(-1, keepdims=True))
        P /= P.sum(-1, keepdims=True)
        d = 1 / 3 - P
    else:
        d = -H0 / 3
    per = (d ** 2).sum((1, 2))
    oracle, se = per.mean(), per.std() / math.sqrt(per.size)
    assert abs(sol.test_error - oracle) < 4 * math.hypot(se, sol.test_error_se)
    if activation == "identity":  # closed form: E = (1/9)(T² + T) ρ0
        assert sol.test_error == pytest.approx(12 / 9 * sol.rho0, rel=1e-12)


def test_free_probability_and_explicit_matrix_priors_give_the_same_fixed_point():
    """docs/theory.md §6.3 at the level of the whole fixed point: explicit matrices (D_MC = 800, 2 draws)
    vs free probability agree to the O(1/D_MC) finite-size error (2 %)."""
    draws = draw_prior_matrices(800, 2, 1.0, seed=0)
    a = solve_pretraining(0.1, 0.5, 0.1, activation="identity")
    b = solve_pretraining(0.1, 0.5, 0.1, activation="identity", prior_draws=draws, tol=1e-8)
    assert b.converged
    for k in ("m", "q", "V", "mse_S"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=0.02), k


@pytest.mark.parametrize("T,noise", [(3, "logits"), (2, "output"), (4, "logits")])
def test_identity_model_at_any_T_is_the_T1_quadratic_network(T, noise):
    """docs/theory.md §6.6: identity at T ≡ T = 1 (β = 1, output noise) with α → αT(T+1)/2,
    λ → λ(T/β)², Δ → 2Δ (logits) or (T/β)²Δ (output); E = (β/T)²(T²+T) mse_S."""
    beta, alpha, lam, delta = 1.3, 0.07, 0.04, 0.6
    K = T * (T + 1) // 2
    a = solve_pretraining(alpha, delta, lam, T=T, beta=beta, activation="identity", noise=noise)
    delta1 = 2 * delta if noise == "logits" else (T / beta) ** 2 * delta
    b = solve_pretraining(alpha * K, delta1, lam * (T / beta) ** 2, T=1, beta=1.0, activation="identity",
                          noise="output")
    for k in ("m", "q", "mse_S"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-8), k
    assert a.test_error == pytest.approx((beta / T) ** 2 * (T * T + T) * a.mse_S, rel=1e-12)


def test_non_convergence_is_reported_not_silent():
    # three damped steps from 0 cannot reach the fixed point; without the root fallback it must say so
    with pytest.warns(ConvergenceWarning, match="converged=False"):
        sol = solve_pretraining(0.1, 0.5, 0.01, activation="identity", max_iter=3, fallback=False)
    assert not sol.converged and sol.residual > 1e-6 and sol.iterations == 3
    # the fallback (Powell hybrid from the best iterate) then finds the root, and says how
    sol = solve_pretraining(0.1, 0.5, 0.01, activation="identity", max_iter=3)
    assert sol.converged and sol.method == "root"


@pytest.mark.parametrize("kw,name", [(dict(alpha=-1), "alpha"), (dict(lam=float("nan")), "lam"),
                                     (dict(T=1), "T"), (dict(activation="relu"), "activation"),
                                     (dict(init=(1.0, 2.0)), "init")])
def test_bad_inputs(kw, name):
    args = dict(alpha=0.1, delta=0.5, lam=0.1) | kw
    with pytest.raises(ValueError, match=name):
        solve_pretraining(args.pop("alpha"), args.pop("delta"), args.pop("lam"), **args)


def test_small_D_simulation_agrees_with_theory():
    """Identity, λ = 0.1, D = 80, 3 seeds. Tolerance: 4 s.e. (seed spread) + 6 % (finite-size bias of
    mse_S at D = 80 is ~4 %, docs/validation_pretraining.md)."""
    from simulations import simulate

    th = solve_pretraining(0.1, 0.5, 0.1, activation="identity")
    sims = [simulate(80, 0.1, 3.0, 0.5, 0.1, activation="identity", lam_prime=math.inf, seed=s, n_test=2000).pretrain
            for s in range(3)]
    for k in ("m", "q", "mse_S", "test_error"):
        v = np.array([getattr(r, k) for r in sims])
        se = v.std(ddof=1) / math.sqrt(v.size)
        assert abs(v.mean() - getattr(th, k)) < 4 * se + 0.06 * abs(getattr(th, k)), (k, v.mean(), getattr(th, k))


def test_warm_started_sweep_matches_independent_solves():
    # identity channel: convex ERM, unique fixed point; warm starts may only change the path, not the
    # answer (both solved to relative residual 1e-10, so the overlaps agree to ~1e-8)
    from state_evolution import sweep_pretraining

    lams = [0.03, 0.1, 0.3]
    swept = sweep_pretraining(lams, 0.1, 0.5, activation="identity", progress=False)
    for lam, s in zip(lams, swept):
        cold = solve_pretraining(0.1, 0.5, lam, activation="identity")
        assert s.converged and s.params.lam == lam
        np.testing.assert_allclose([s.m, s.q, s.V], [cold.m, cold.q, cold.V], rtol=1e-7)


@pytest.mark.slow
def test_a_cold_solve_at_large_beta_converges_by_continuation():
    """softmax, α = 0.1, Δ = 0.5, λ = 0.05, β = 20, 2^12 samples: the cold iteration wanders to the boundary
    q = m²/ρ0 and does not converge; the solver then continues along β and converges. Reference: a loop of
    warm-started solves written here (β = 1.25, 2.5, 5, 10, 20, each from the previous fixed point); the two
    agree to the Monte Carlo noise floor of the map (relative 1e-3). 70 s."""
    pre = solve_pretraining(0.1, 0.5, 0.05, beta=20.0, n_samples=2 ** 12, warn=False)
    assert pre.converged and "continuation in beta" in pre.method
    init = None
    for beta in (1.25, 2.5, 5.0, 10.0, 20.0):
        ref = solve_pretraining(0.1, 0.5, 0.05, beta=beta, n_samples=2 ** 12, init=init, warn=False)
        init = ref.overlaps
    assert ref.converged
    assert pre.m == pytest.approx(ref.m, rel=1e-3) and pre.q == pytest.approx(ref.q, rel=1e-3)


@pytest.mark.parametrize("alpha, delta, lam", [(0.1, 2.0, 0.01), (0.3, 0.5, 0.1)])
def test_pretraining_fixed_point_does_not_depend_on_the_start(alpha, delta, lam):
    """The softmax pre-training equations have one fixed point here (docs/theory.md §2.6): from x = 0 and from
    starts near the teacher (m = 0.95ρ0) and beyond it (m = 2ρ0) the solver reaches the same (m, q, V). Oracle:
    the solves themselves from different starts (a second fixed point would separate them). Tolerance 1e-3
    relative: each solve stops at a relative residual ≤ 1e-4 (the sampled map's acceptance), measured spread 1e-4."""
    kw = dict(n_samples=2 ** 12, warn=False)
    base = solve_pretraining(alpha, delta, lam, **kw)
    rho0 = base.params.rho0
    assert base.converged
    for init in ((0.95 * rho0, 0.95 ** 2 * rho0 * 1.02, 0.05), (2.0 * rho0, 5.0 * rho0, 0.01)):
        other = solve_pretraining(alpha, delta, lam, init=init, **kw)
        assert other.converged
        np.testing.assert_allclose(other.overlaps, base.overlaps, rtol=1e-3)
