"""The fixed-point solver's sweep aids: seeded secant memory, the point behind a solution, a tolerance
that depends on the evaluated point, warm starts along sweeps, and stalls at a sampled map's noise floor
(state_evolution/fixed_point.py)."""

import numpy as np
import pytest

from state_evolution.fixed_point import MemoizedMap, predicted_start, solve_fixed_point

A = np.array([[0.5, 0.2, 0.0], [0.1, 0.4, 0.2], [0.0, 0.2, 0.5]])  # a contraction (radius < 0.75), not symmetric


def _affine(a):
    """``F_a(x) = A x + b(a)``: a family of maps whose Jacobian does not depend on ``a`` (as along a
    sweep, where it changes slowly)."""
    b = np.array([1.0, 2.0, 0.5]) * (1 + a)
    return lambda x: A @ np.asarray(x, float) + b


def test_seeded_secant_memory_turns_the_first_step_into_a_newton_step():
    """Solved at a = 1 (Anderson collects secant pairs of F − id), the map at a = 1.2 converges from
    the same start in 2 evaluations with that memory (the first step is x − ΔX ΔF⁻¹ f, exact for an
    affine map), against ≥ 4 without."""
    first = solve_fixed_point(_affine(1.0), np.zeros(3), tol=1e-10, damping=0.5, fallback=False)
    assert first.converged and first.memory is not None and first.memory[0].shape[0] == 3
    x0 = first.value
    cold = solve_fixed_point(_affine(1.2), x0, tol=1e-10, damping=0.5, fallback=False)
    warm = solve_fixed_point(_affine(1.2), x0, tol=1e-10, damping=0.5, fallback=False, memory=first.memory)
    exact = np.linalg.solve(np.eye(3) - A, np.array([1.0, 2.0, 0.5]) * 2.2)
    assert cold.converged and warm.converged
    np.testing.assert_allclose(warm.value, exact, rtol=1e-9)
    assert warm.iterations <= 2 < 4 <= cold.iterations, (warm.iterations, cold.iterations)


def test_memory_of_the_wrong_size_is_ignored():
    first = solve_fixed_point(_affine(1.0), np.zeros(3), tol=1e-10, damping=0.5, fallback=False)
    bad = (first.memory[0][:2], first.memory[1][:2])  # a 2-dimensional memory for a 3-dimensional map
    sol = solve_fixed_point(_affine(1.2), first.value, tol=1e-10, damping=0.5, fallback=False, memory=bad)
    plain = solve_fixed_point(_affine(1.2), first.value, tol=1e-10, damping=0.5, fallback=False)
    assert sol.converged and sol.iterations == plain.iterations


def test_the_solution_says_where_its_value_was_evaluated():
    """``value = F(evaluated_at)`` for the damped methods, and a memoised map gives back what it
    computed there (what the channels report instead of evaluating again)."""
    calls = []

    def evaluate(x):
        calls.append(1)
        y = _affine(0.5)(x)
        return y, {"norm": float(np.linalg.norm(y))}

    F = MemoizedMap(evaluate)
    sol = solve_fixed_point(F, np.zeros(3), tol=1e-10, damping=0.5, fallback=False)
    assert sol.converged and sol.method == "damped"
    np.testing.assert_allclose(_affine(0.5)(sol.evaluated_at), sol.value, rtol=0, atol=0)
    aux = F.aux_at(sol.evaluated_at)
    assert aux is not None and aux["norm"] == np.linalg.norm(sol.value)
    assert len(calls) == sol.iterations  # no evaluation beyond the solver's own
    assert F.aux_at(np.full(3, 123.0)) is None


def test_a_point_dependent_accept_tolerance():
    """A noisy map (contraction plus a ±3e-5 jitter): a callable accept_tol is evaluated at the best
    iterate; 1e-4 accepts the stall, 1e-6 does not."""

    def F(x):
        return 0.5 * x + 1.0 + 3e-5 * np.sign(np.sin(1e6 * x))

    loose = solve_fixed_point(F, np.array([0.0, 5.0]), tol=1e-9, max_iter=60, fallback=False,
                              accept_tol=lambda x: 1e-4)
    assert loose.converged and loose.method == "stalled<=accept_tol" and loose.residual <= 1e-4
    strict = solve_fixed_point(F, np.array([0.0, 5.0]), tol=1e-9, max_iter=60, fallback=False,
                               accept_tol=lambda x: 1e-6)
    assert not strict.converged


def test_lora_noise_floor_follows_the_monte_carlo_error():
    """The LoRA map's relative Monte Carlo error (first-order propagation of the conjugates' s.e.
    through the ridge prior) against a direct computation by perturbing the conjugates."""
    from types import SimpleNamespace

    from state_evolution.finetuning import _relative_noise

    ev = SimpleNamespace(m_hat=0.57, q_hat=0.49, V_hat=0.56, ridge_shift=0.07,
                         se={"m_hat": 0.013, "q_hat": 0.0046, "V_hat": 0.0046, "ridge_shift": 0.0064})
    lam_prime = 0.05

    def out(mh, qh, vh, sh):
        d = lam_prime + sh + vh
        return np.array([mh / d, (mh ** 2 + qh) / d ** 2, 1 / d])

    base = np.array([ev.m_hat, ev.q_hat, ev.V_hat, ev.ridge_shift])
    se = np.array([ev.se[k] for k in ("m_hat", "q_hat", "V_hat", "ridge_shift")])
    y = out(*base)
    jac = np.stack([(out(*(base + 1e-7 * np.eye(4)[i])) - y) / 1e-7 for i in range(4)], 1)
    direct = np.sqrt(np.sum((jac * se) ** 2, axis=1))  # per-component s.e., independent conjugates
    np.testing.assert_allclose(_relative_noise(ev, y, lam_prime), np.linalg.norm(direct) / np.linalg.norm(y),
                               rtol=1e-4)


def test_predicted_start_is_unchanged_far_from_zero():
    x0, x1 = np.array([1.0, 2.0]), np.array([1.1, 1.9])
    np.testing.assert_allclose(predicted_start([x0, x1], [0.1, 0.2], 0.4), 2 * x1 - x0)


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


def test_status_of_the_fixed_point_solver():
    """Converged, stalled at an accepted noise floor, and the iteration cap, on maps with known behaviour:
    a contraction (fixed point 2), a map whose residual never falls below 0.1 relative (a noisy floor), and
    a map with no fixed point (x ↦ x + 1)."""
    from solvable_attention.status import Status
    from state_evolution.fixed_point import solve_fixed_point

    ok = solve_fixed_point(lambda x: 0.5 * x + 1.0, np.array([0.0]), tol=1e-10)
    assert ok.status is Status.CONVERGED and ok.converged and abs(ok.value[0] - 2.0) < 1e-8

    rng = np.random.default_rng(0)
    noisy = solve_fixed_point(lambda x: np.array([1.0 + 0.2 * rng.uniform()]), np.array([1.0]), tol=1e-12,
                              accept_tol=0.5, anderson=0, fallback=False, max_iter=200)
    assert noisy.status is Status.CONVERGED_AT_NOISE_FLOOR and noisy.converged
    assert "acceptance bound 0.5" in noisy.status_message

    none = solve_fixed_point(lambda x: x + 1.0, np.array([1.0]), tol=1e-10, max_iter=30, fallback=False)
    assert none.status is Status.MAX_ITERATIONS and not none.converged


def _nonlinear(x, scale=0.3):
    """A smooth contraction with a known fixed point ``x* = (1, 2, 0.5)``; its Jacobian there is ``scale·A``
    (spectral radius < 0.25 at the default: the value ``F(x)`` is then several times closer to ``x*`` than the
    residual ``F(x) − x`` is large)."""
    x = np.asarray(x, float)
    x_star = np.array([1.0, 2.0, 0.5])
    d = x - x_star
    return x_star + scale * A @ d + 0.05 * np.array([d[1] ** 2, d[0] * d[2], d[0] ** 2])


def test_the_secant_estimate_stops_when_the_value_is_within_tol():
    """With ``estimate_below`` the solve may stop while the residual is still above ``tol``, but only once the
    value it returns, ``F(x)``, is within ``tol`` of the fixed point: judged here against the known fixed point
    (not the solver's estimate). Tolerance 2·tol on the true error: the secant model of a nonlinear map is exact
    only to second order in the step.
    It needs fewer evaluations than the residual rule, which is how it pays."""
    x_star = np.array([1.0, 2.0, 0.5])
    plain = solve_fixed_point(_nonlinear, np.zeros(3), tol=1e-5, fallback=False)
    fast = solve_fixed_point(_nonlinear, np.zeros(3), tol=1e-5, fallback=False, estimate_below=1e-4)
    assert plain.converged and fast.converged
    assert fast.method == "secant" and fast.residual > 1e-5, (fast.method, fast.residual)
    assert "secant estimate" in fast.status_message
    assert np.linalg.norm(fast.value - x_star) / np.linalg.norm(x_star) <= 2e-5
    assert fast.iterations < plain.iterations, (fast.iterations, plain.iterations)


def test_the_secant_estimate_is_not_used_above_its_residual_ceiling_or_without_spanning_pairs():
    """``estimate_below`` smaller than every residual the solve meets before ``tol``: the residual rule decides
    (method ``damped``). Without Anderson pairs (``anderson=0``) there is no secant model: the residual rule
    decides too."""
    ceiling = solve_fixed_point(_nonlinear, np.zeros(3), tol=1e-6, fallback=False, estimate_below=1e-12)
    assert ceiling.converged and ceiling.method == "damped" and ceiling.residual <= 1e-6
    no_pairs = solve_fixed_point(_nonlinear, np.zeros(3), tol=1e-6, fallback=False, estimate_below=1e-4,
                                 anderson=0, damping=1.0)
    assert no_pairs.converged and no_pairs.method == "damped" and no_pairs.residual <= 1e-6


def test_the_secant_estimate_on_a_noisy_map_never_returns_worse_than_its_ceiling():
    """A map with a ±3e-5 jitter (a Monte Carlo map's O(1/n) jumps): secant pairs built from it can be wrong,
    and the estimate with them. What the rule guarantees is the ceiling: a value returned on the estimate
    lies within ``estimate_below`` (here 1e-4, plus the jitter itself) of the noiseless fixed point; tried
    over 20 jitter sequences."""
    x_star = np.array([1.0, 2.0, 0.5])
    for seed in range(20):
        rng = np.random.default_rng(seed)
        F = lambda x: _nonlinear(x) + 3e-5 * rng.uniform(-1, 1, 3)  # noqa: E731
        sol = solve_fixed_point(F, np.zeros(3), tol=1e-6, fallback=False, max_iter=60, estimate_below=1e-4,
                                accept_tol=1e-4)
        assert sol.converged
        if sol.method == "secant":
            assert sol.residual <= 1e-4
            assert np.linalg.norm(sol.value - x_star) / np.linalg.norm(x_star) <= 1e-4 + 1e-4


def test_predicted_start_through_three_points_is_exact_for_a_parabola_in_log_lambda():
    """Three solutions of a curve quadratic in ``log λ``: the start at the next grid point is the curve itself
    (round-off), where the secant through the last two is off by the curvature term."""
    f = lambda lam: np.array([2.0 + np.log(lam) + 0.3 * np.log(lam) ** 2, 5.0 - 0.1 * np.log(lam) ** 2])  # noqa: E731
    lams = [0.1, 0.2, 0.4]
    quad = predicted_start([f(x) for x in lams], lams, 0.8)
    np.testing.assert_allclose(quad, f(0.8), rtol=1e-12)
    secant = predicted_start([f(x) for x in lams[1:]], lams[1:], 0.8)
    assert np.linalg.norm(secant - f(0.8)) > 0.1


def test_predicted_start_through_three_points_keeps_the_guard_towards_zero():
    """A component the parabola would move towards zero by more than half its value: the guarded secant instead."""
    xs = [np.array([1.0, 0.30]), np.array([1.0, 0.20]), np.array([1.0, 0.08])]
    lams = [0.1, 0.2, 0.4]
    start = predicted_start(xs, lams, 0.8)
    assert start[1] >= 0.04 - 1e-15  # never below half the last value
    np.testing.assert_allclose(start, predicted_start(xs[1:], lams[1:], 0.8))


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), "1e-4"])
def test_estimate_below_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="estimate_below"):
        solve_fixed_point(_nonlinear, np.zeros(3), tol=1e-5, estimate_below=bad)
