"""The fixed-point solver's sweep aids: seeded secant memory, the point behind a solution, and a
tolerance that depends on the evaluated point (state_evolution/fixed_point.py)."""

import numpy as np

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
