"""The compacted batched Newton prox against its plain oracle (``compact=False``).

The compacted loop iterates the whole batch only while more than ``n_tail`` samples are unfinished and
then the worst ``n_tail`` alone; the samples it leaves are finished ones, so the result must be the
plain loop's to round-off. The cases are the ones where the tail is long: the softmax LoRA channel at
Δ = 2 (one sample in 16384 needs 60 steps) and the pre-training channel at the same point.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvable_attention.runtime import float64
from state_evolution.prox_newton import MIN_TAIL, TAIL_FRACTION, newton_prox, solve_prox_multistart, start_towards


def _quartic_problem(n, seed):
    """A non-convex per-sample loss ``ℓ(h) = Σ_k (h_k² − a_k)²/4 + b·h`` (two wells per coordinate)."""
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.uniform(0.2, 2.0, (n, 3)))
    b = jnp.asarray(rng.normal(0, 0.3, (n, 3)))
    omega = jnp.asarray(rng.normal(0, 1.5, (n, 3)))

    def loss(h, d):
        a_, b_ = d
        return jnp.sum((h * h - a_) ** 2 / 4 + b_ * h, -1)

    def derivs(h, d):
        a_, b_ = d
        grad = h * (h * h - a_) + b_
        return grad, jax.vmap(jnp.diag)(3 * h * h - a_)

    return omega, (a, b), loss, derivs


def test_compacted_newton_equals_the_plain_loop_on_a_non_convex_loss():
    """Every sample's prox from the compacted loop equals the plain loop's (1e-12: both converge to
    the same root to their 1e-11 residual tolerance; the Newton map is a contraction there)."""
    with float64():
        omega, data, loss, derivs = _quartic_problem(8192, 0)
        V = 5.0  # J = I + V∇²ℓ is indefinite near h = 0: shifted steps, line searches, a tail of slow samples
        g0 = jnp.zeros_like(omega)
        g_plain, k_plain = newton_prox(omega, V, g0, data, loss, derivs, 80, 1e-11, compact=False)
        g_fast, k_fast = newton_prox(omega, V, g0, data, loss, derivs, 80, 1e-11, compact=True)
        grad, _ = derivs(omega + V * g_fast, data)
        assert float(jnp.max(jnp.abs(g_fast + grad))) < 1e-10
        np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_plain), rtol=0, atol=1e-12)
        assert int(k_fast) == int(k_plain)  # the tail runs to the plain loop's step count
        assert 8192 // TAIL_FRACTION >= MIN_TAIL  # this batch was compacted


def _reference_newton_step(omega, V, g, a, b):
    """One safeguarded Newton step on the quartic problem, sample by sample in numpy (the oracle): pure
    Newton where ``J = I + V∇²ℓ`` is positive definite, else ``J`` shifted by its Gershgorin bound; step
    length the longest of ``1, ¼, …, 4⁻¹⁰`` that does not increase the merit (else 0)."""
    out = np.empty_like(g)
    merit = lambda h, gg, i: 0.5 * V * gg @ gg + np.sum((h * h - a[i]) ** 2 / 4 + b[i] * h)  # noqa: E731
    for i in range(g.shape[0]):
        h = omega[i] + V * g[i]
        F = g[i] + h * (h * h - a[i]) + b[i]
        J = np.eye(3) + V * np.diag(3 * h * h - a[i])
        if np.min(np.linalg.eigvalsh(J)) <= 0:
            d = np.diag(J)
            low = np.min(d - (np.sum(np.abs(J), 1) - np.abs(d)))
            J = J + max(0.0, 1e-2 - low) * np.eye(3)
        step = -np.linalg.solve(J, F)
        m0 = merit(h, g[i], i)
        t = 1.0
        for _ in range(11):
            gt = g[i] + t * step
            if merit(omega[i] + V * gt, gt, i) <= m0 + 1e-13 * (abs(m0) + 1.0):
                break
            t *= 0.25
        else:
            t = 0.0
        out[i] = g[i] + t * step
    return out


def test_one_newton_step_matches_the_numpy_reference_on_indefinite_samples():
    """One batched step (``max_newton = 1``) equals the per-sample numpy step, on a batch where ``J`` is
    indefinite for some samples (the shifted factorisation) and positive definite for others (the
    plain one). Tolerance 1e-10: both solve 3 × 3 systems with condition numbers below 1e3 in float64;
    the acceptance of a step length could differ only at a merit tie to 1e-13."""
    with float64():
        omega, (a, b), loss, derivs = _quartic_problem(512, 3)
        V = 5.0
        g0 = jnp.zeros_like(omega)
        g1, _ = newton_prox(omega, V, g0, (a, b), loss, derivs, 1, 1e-11, compact=False)
        ref = _reference_newton_step(*(np.asarray(x) for x in (omega, V, g0, a, b)))
        h = np.asarray(omega)
        indefinite = np.min(1 + V * (3 * h * h - np.asarray(a)), axis=1) <= 0
        assert 0 < indefinite.sum() < len(indefinite)  # both branches are exercised
        np.testing.assert_allclose(np.asarray(g1), ref, rtol=0, atol=1e-10)


def test_multistart_keeps_the_lower_objective_per_sample():
    """Two starts (one per well): the winner's objective is the lower of the two single-start runs'."""
    with float64():
        omega, data, loss, derivs = _quartic_problem(4096, 1)
        V = 0.9
        starts = (jnp.zeros_like(omega), start_towards(omega, V, -omega))
        g, _, res, _ = solve_prox_multistart(omega, V, starts, loss, derivs, 80, data=data)
        obj = lambda gg: 0.5 * V * jnp.sum(gg * gg, -1) + loss(omega + V * gg, data)  # noqa: E731
        singles = [solve_prox_multistart(omega, V, (s,), loss, derivs, 80, data=data)[0] for s in starts]
        best = jnp.minimum(obj(singles[0]), obj(singles[1]))
        np.testing.assert_allclose(np.asarray(obj(g)), np.asarray(best), rtol=1e-12, atol=1e-12)
        assert float(jnp.max(res)) < 1e-10
        assert bool(jnp.any(obj(singles[1]) < obj(singles[0]) - 1e-6))  # the second start matters


def test_chunked_multistart_equals_the_whole_batch():
    """The batch solved in chunks (``lax.map``) gives every sample the prox of the whole-batch solve: each
    sample's prox is its own (1e-12: both converge every sample to the 1e-11 residual from the same starts;
    the compaction's tail differs, so the last Newton step may differ at round-off). The Hessians and the
    residuals come back in the samples' order, and the step count is the most over the chunks."""
    with float64():
        omega, data, loss, derivs = _quartic_problem(4096, 2)
        V = 0.9
        starts = (jnp.zeros_like(omega), start_towards(omega, V, -omega))
        whole = solve_prox_multistart(omega, V, starts, loss, derivs, 80, data=data, chunk=None)
        chunked = solve_prox_multistart(omega, V, starts, loss, derivs, 80, data=data, chunk=512)
        for a, b in zip(whole[:3], chunked[:3]):
            assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(chunked[0]), np.asarray(whole[0]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(chunked[1]), np.asarray(whole[1]), rtol=0, atol=1e-10)
        assert float(jnp.max(chunked[2])) < 1e-10
        singles = [solve_prox_multistart(omega[i:i + 512], V, tuple(s[i:i + 512] for s in starts), loss, derivs,
                                         80, data=tuple(d[i:i + 512] for d in data), chunk=None)[3]
                   for i in range(0, 4096, 512)]
        assert int(chunked[3]) == max(int(k) for k in singles)


@pytest.mark.parametrize("channel", ["lora", "pretraining"])
def test_compacted_channels_equal_the_plain_loop(channel, monkeypatch):
    """The softmax channels at Δ = 2, λ = 0.01 (pre-training fixed point, LoRA at λ' = 0.05), where a
    few samples need 45–60 Newton steps: the conjugates with and without compaction agree to 1e-10
    relative (both solve every prox to a 1e-11 residual)."""
    from state_evolution import prox_newton

    pre = (1.2433, 1.8193, 17.70)  # (m, q, V) of the pre-training fixed point there (2^14 samples)
    lora = (0.8276, 1.7308, 1.4597)  # (m', q', V') of the LoRA fixed point
    with float64():
        if channel == "lora":
            from state_evolution.channel_lora import LoraChannel

            ch = LoraChannel.create(m=pre[0], q=pre[1], rho0=2.0, T=3, alpha_prime=3.0, delta_prime=2.0, gamma=1.0,
                                    activation="softmax", beta=1.0, noise="logits", n_samples=4096,
                                    n_test_samples=16)
            run = lambda: ch.evaluate(*lora)  # noqa: E731
            values = lambda ev: np.array([ev.m_hat, ev.q_hat, ev.V_hat, ev.ridge_shift])  # noqa: E731
        else:
            from solvable_attention.params import PretrainParams
            from state_evolution.channel_monte_carlo import MonteCarloChannel

            ch = MonteCarloChannel.create(PretrainParams(alpha=0.1, delta=2.0, lam=0.01), n_samples=4096,
                                          n_test_samples=16)
            run = lambda: ch.evaluate(*pre)  # noqa: E731
            values = lambda ev: np.array([ev.conjugates.m_hat, ev.conjugates.q_hat, ev.conjugates.V_hat])  # noqa: E731
        fast = values(run())
        plain_calls = []

        def plain_newton(*args, **kwargs):  # the channels' prox with the plain loop (the oracle)
            plain_calls.append(1)
            return original(*args[:8], compact=False)

        original = prox_newton.newton_prox
        monkeypatch.setattr(prox_newton, "newton_prox", plain_newton)
        jax.clear_caches()  # the jitted channels must be traced again with the plain loop
        try:
            plain = values(run())
        finally:
            monkeypatch.undo()
            jax.clear_caches()
    assert plain_calls, "the plain loop was not used"
    np.testing.assert_allclose(fast, plain, rtol=1e-10)
