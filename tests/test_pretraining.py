"""Pre-training state evolution: THEORY.md §6 checks 1, 3, 6, channel closed form vs Monte Carlo,
honest non-convergence, Bayes-optimal baseline, and a small-D simulation sanity check."""

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvable_attention.params import PretrainParams
from state_evolution import ConvergenceWarning, bayes_optimal, solve_pretraining
from state_evolution.channel_identity import IdentityChannel
from state_evolution.channel_monte_carlo import MonteCarloChannel, per_sample_loss
from state_evolution.goe_coordinates import from_coordinates, to_coordinates
from state_evolution.loss_derivatives import loss_derivatives
from state_evolution.spectral_prior import draw_prior_matrices


def test_goe_coordinates_round_trip_and_metric():
    H = jax.random.normal(jax.random.PRNGKey(0), (5, 4, 4))
    H = H + jnp.swapaxes(H, -1, -2)
    h = to_coordinates(H)
    np.testing.assert_allclose(from_coordinates(h, 4), H, atol=1e-14)
    np.testing.assert_allclose(jnp.sum(H * H, axis=(-1, -2)), 2 * jnp.sum(h * h, -1), rtol=1e-13)


@pytest.mark.parametrize("activation", ["softmax", "identity"])
def test_closed_form_loss_derivatives_match_autodiff(activation):
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    h = jax.random.normal(k1, (50, 6))
    Y = jax.nn.softmax(jax.random.normal(k2, (50, 3, 3)), -1) + 0.2
    f = lambda hh, yy: per_sample_loss(hh, yy, 3, activation, 1.7)  # noqa: E731
    g, H = loss_derivatives(h, Y, 3, activation, 1.7)
    np.testing.assert_allclose(g, jax.vmap(jax.grad(f))(h, Y), atol=1e-12)
    np.testing.assert_allclose(H, jax.vmap(jax.hessian(f))(h, Y), atol=1e-12)


@pytest.mark.parametrize("noise", ["logits", "output"])
def test_identity_closed_form_equals_monte_carlo_channel(noise):
    """The generic Monte Carlo channel (Newton prox) on the identity activation reproduces the
    closed form within 4 Monte Carlo standard errors (2^14 samples)."""
    p = PretrainParams(alpha=0.1, delta=0.5, lam=0.05, activation="identity", noise=noise)
    exact, mc = IdentityChannel(p), MonteCarloChannel.create(p, n_samples=2 ** 14, n_test_samples=2 ** 14)
    for m, q, V in [(1.0, 0.9, 0.5), (0.0, 0.0, 0.0), (1.5, 1.6, 3.0)]:
        a, b = exact.conjugates(m, q, V), mc.conjugates(m, q, V)
        assert abs(a.q_hat - b.q_hat) < 4 * b.q_hat_se
        assert abs(a.m_hat - b.m_hat) < 4 * b.m_hat_se
        assert b.V_hat == pytest.approx(a.V_hat, rel=1e-10)  # the Hessian is constant: exact
        (t1, _), (t2, se2) = exact.train_loss(m, q, V), mc.train_loss(m, q, V)
        assert abs(t1 - t2) < 4 * se2
        (e1, _), (e2, se) = exact.test_error(m, q), mc.test_error(m, q)
        assert abs(e1 - e2) < 4 * se


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_large_lambda_gives_the_zero_estimator(activation):
    """THEORY.md §6.1: λ → ∞ gives Ŝ = 0 and E = E‖σ(0) − σ(H0)‖² (independent numpy oracle)."""
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
    """THEORY.md §6.3 at the level of the whole fixed point: explicit matrices (D_MC = 800, 2 draws)
    vs free probability agree to the O(1/D_MC) finite-size error (2 %)."""
    draws = draw_prior_matrices(800, 2, 1.0, seed=0)
    a = solve_pretraining(0.1, 0.5, 0.1, activation="identity")
    b = solve_pretraining(0.1, 0.5, 0.1, activation="identity", prior_draws=draws, tol=1e-8)
    assert b.converged
    for k in ("m", "q", "V", "mse_S"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=0.02), k


@pytest.mark.parametrize("T,noise", [(3, "logits"), (2, "output"), (4, "logits")])
def test_identity_model_at_any_T_is_the_T1_quadratic_network(T, noise):
    """THEORY.md §6.6: identity at T ≡ T = 1 (β = 1, output noise) with α → αT(T+1)/2,
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


def test_bayes_optimal_is_a_lower_bound_and_monotone():
    errs = [bayes_optimal(a, activation="identity", delta=0.5).mmse for a in (0.02, 0.1, 0.5)]
    assert errs[0] > errs[1] > errs[2] > 0
    for a in (0.02, 0.1, 0.5):
        erm = min(solve_pretraining(a, 0.5, lam, activation="identity").mse_S for lam in (0.01, 0.05, 0.2))
        assert bayes_optimal(a, activation="identity", delta=0.5).mmse <= erm
    # noiseless softmax: more samples, smaller error; 2α(K−1) ≥ 1 measurement per unknown → exact recovery
    s = [bayes_optimal(a).mmse for a in (0.01, 0.03, 0.1)]
    assert s[0] > s[1] > s[2] and s[2] < 1e-6
    with pytest.raises(ValueError, match="delta"):
        bayes_optimal(0.1, delta=0.5)


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


def test_predicted_start_is_the_secant_in_log_lambda():
    """Warm starts along sweeps: exact for states linear in log λ, the last state with one predecessor,
    None with none, and never extrapolated beyond one step (t clipped to [0, 1])."""
    from state_evolution.fixed_point import predicted_start

    f = lambda lam: np.array([1.0, 2.0]) + np.log(lam) * np.array([0.5, -1.0])  # noqa: E731
    np.testing.assert_allclose(predicted_start([f(0.1), f(0.2)], [0.1, 0.2], 0.4), f(0.4), rtol=1e-12)
    np.testing.assert_allclose(predicted_start([f(0.1)], [0.1], 0.4), f(0.1))
    assert predicted_start([], [], 0.4) is None
    np.testing.assert_allclose(predicted_start([f(0.1), f(0.2)], [0.1, 0.2], 100.0), 2 * f(0.2) - f(0.1))


def test_predicted_start_never_more_than_halves_a_component():
    """Overlaps that vanish at a transition (the Δ = 2 pre-training sweep near λ = 0.25: V = 0.193,
    0.074 at the two previous λ) must not be extrapolated past zero: the secant would give V < 0."""
    from state_evolution.fixed_point import predicted_start

    x0, x1 = np.array([0.0513, 0.0102, 0.193]), np.array([0.0203, 0.0026, 0.074])
    start = predicted_start([x0, x1], [0.1944, 0.2188], 0.2462)
    assert np.all(start > 0) and np.all(start >= 0.5 * x1 - 1e-15)
    assert np.any(np.isclose(start, 0.5 * x1))  # the binding component is halved exactly
    assert np.all(start < x1)  # still a step along the secant


def test_stalled_iteration_is_accepted_only_below_accept_tol():
    """A map with a noise floor (a contraction plus a deterministic ±3e-5 jitter that never lets the
    residual fall below ~1e-5): with tol = 1e-9 alone it does not converge; with accept_tol = 1e-4 it
    stops once stalled, converged, with its residual reported; accept_tol = 1e-6 still fails."""
    from state_evolution.fixed_point import solve_fixed_point

    def F(x):
        jitter = 3e-5 * np.sign(np.sin(1e6 * x))  # O(1/n)-like jumps of a sampled map
        return 0.5 * x + 1.0 + jitter

    plain = solve_fixed_point(F, np.array([0.0, 5.0]), tol=1e-9, max_iter=60, fallback=False)
    assert not plain.converged
    acc = solve_fixed_point(F, np.array([0.0, 5.0]), tol=1e-9, max_iter=60, fallback=False, accept_tol=1e-4)
    assert acc.converged and acc.method == "stalled<=accept_tol" and 1e-9 < acc.residual <= 1e-4
    np.testing.assert_allclose(acc.value, [2.0, 2.0], atol=1e-3)
    strict = solve_fixed_point(F, np.array([0.0, 5.0]), tol=1e-9, max_iter=60, fallback=False, accept_tol=1e-6)
    assert not strict.converged


def test_a_creeping_best_residual_still_counts_as_a_stall():
    """Near a sampled map's noise floor the damped iteration can cycle with a best residual that creeps
    down by a fraction of a percent per cycle (measured: LoRA, Δ = 2, λ = 0.02, λ' = 0.05, 4.9e-5, 4.8e-5,
    … for 90 evaluations). Such a run is a stall: accepted once below accept_tol within a few STALL
    windows, not after max_iter."""
    from state_evolution.fixed_point import STALL, solve_fixed_point

    calls = []

    def F(x):  # the residual is a new best at every call, by 0.1 %: never a real gain
        calls.append(1)
        return x + 3e-5 * 0.999 ** len(calls) * np.ones_like(x)

    acc = solve_fixed_point(F, np.array([1.0, 1.0]), tol=1e-9, max_iter=400, fallback=False, accept_tol=1e-4)
    assert acc.converged and acc.method == "stalled<=accept_tol"
    assert acc.iterations <= 3 * STALL, acc.iterations  # ACCEPT_STALL (4) after the first evaluations
